#!/usr/bin/env bash
# The test suite, from a fresh machine: installs the build dependencies, builds,
# fetches both catalog models (verified by sha256), then runs every test in release
# mode (the tests use the real models).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/bootstrap.sh
for model in qwen2.5-coder-0.5b smollm2-135m; do
    target/release/jielong models pull "$model"
done
cargo test --release --locked --workspace
