#!/usr/bin/env bash
# The remote backend's tests: builds llama.cpp's llama-server if it is missing
# (scripts/llama-server.sh; about 10 minutes the first time), then runs the scripted
# fault tests of jielong-remote and the end-to-end tests against a real llama-server
# serving the default model (tests/remote.rs).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/llama-server.sh >/dev/null
cargo build --release --locked --bin jielong
target/release/jielong models pull qwen2.5-coder-0.5b >&2
cargo test --release --locked -p jielong-remote
cargo test --release --locked -p jielong --test remote
