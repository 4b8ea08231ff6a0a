#!/usr/bin/env bash
# Installs what building Jielong needs (cmake and libclang for llama.cpp) when it is
# missing, then builds the release binary. Idempotent; all output goes to stderr.
set -euo pipefail
cd "$(dirname "$0")/.."
exec 3>&1 1>&2

have_libclang() {
    ls /usr/lib/llvm-*/lib/libclang*.so* /usr/lib/x86_64-linux-gnu/libclang*.so* >/dev/null 2>&1
}

missing=()
command -v cmake >/dev/null 2>&1 || missing+=(cmake)
command -v clang >/dev/null 2>&1 || missing+=(clang)
have_libclang || missing+=(libclang-dev)
command -v python3 >/dev/null 2>&1 || missing+=(python3 python3-pip)
if ((${#missing[@]})); then
    echo "jielong setup: installing ${missing[*]} (apt-get)"
    sudo=""
    if [ "$(id -u)" -ne 0 ]; then
        command -v sudo >/dev/null 2>&1 || { echo "jielong setup: need root or sudo to install ${missing[*]}"; exit 1; }
        sudo="sudo"
    fi
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}" >/dev/null
fi
command -v cargo >/dev/null 2>&1 || { echo "jielong setup: Rust (cargo) is required: install it with rustup"; exit 1; }

if [ "${JIELONG_SKIP_BUILD:-0}" != 1 ]; then
    if [ ! -x target/release/jielong ]; then
        echo "jielong setup: building (the first build compiles llama.cpp for this CPU: about 10 minutes)"
    fi
    cargo build --release --locked --bin jielong
fi

