#!/usr/bin/env bash
# The test suite, from a fresh machine: installs the build dependencies, builds,
# fetches both catalog models (verified by sha256), then runs every test in release
# mode (the tests use the real models).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/bootstrap.sh
# llama.cpp's own llama-server, for tests/remote.rs (the remote backend against a real
# server); idempotent, about 10 minutes the first time. A failed build only makes
# those tests skip (they say so).
scripts/llama-server.sh >/dev/null || echo "jielong setup: llama-server was not built; tests/remote.rs will skip" >&2
for model in qwen2.5-coder-0.5b smollm2-135m; do
    target/release/jielong models pull "$model"
done
# The OpenAI Python client, for tests/serve_client.py (run by tests/serve.rs).
if ! python3 -c "import openai" 2>/dev/null; then
    python3 -m pip install --quiet --disable-pip-version-check openai 2>/dev/null \
        || python3 -m pip install --quiet --disable-pip-version-check --break-system-packages openai
fi
cargo test --release --locked --workspace
