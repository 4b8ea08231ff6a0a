#!/usr/bin/env bash
# Builds llama.cpp's own `llama-server` (the OpenAI-compatible HTTP server) for this
# CPU, from the llama.cpp sources vendored in the `llama-cpp-python` source package
# (fetched with pip, like every other dependency), and installs the binary to a cache:
#
#   ${JIELONG_LLAMA_SERVER_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/jielong/llama-server}/bin/llama-server
#
# Used by the benchmarks (benchmarks/smolagents/run.py) to run other agent frameworks
# on the same GGUF as Jielong. Idempotent: when the binary is there and answers
# `--version`, nothing is built. The binary's path is the last line on stdout; all
# other output goes to stderr. The first build takes about 10 minutes on 2 cores.
#
# Environment:
#   JIELONG_LLAMA_SERVER_DIR      install prefix (the binary goes to its bin/)
#   JIELONG_LLAMA_CPP_PY_VERSION  llama-cpp-python version to take llama.cpp from
#                                 (default 0.3.36; if it cannot be fetched, the newest)
#   JIELONG_BUILD_JOBS            parallel compile jobs (default 2)
#   JIELONG_BUILD_NICE            niceness of the compile (default 19: idle CPU only)
#   JIELONG_KEEP_BUILD=1          keep the unpacked sources and the build tree
set -euo pipefail
exec 3>&1 1>&2

prefix="${JIELONG_LLAMA_SERVER_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/jielong/llama-server}"
version="${JIELONG_LLAMA_CPP_PY_VERSION:-0.3.36}"
jobs="${JIELONG_BUILD_JOBS:-2}"
niceness="${JIELONG_BUILD_NICE:-19}"
bin="$prefix/bin/llama-server"

log() { echo "llama-server.sh: $*"; }

# What the binary is built from and how: a binary built by another recipe is rebuilt.
recipe="llama-cpp-python $version; native CPU without AMX (recipe 2)"
stamp="$prefix/bin/llama-server.recipe"

works() {
    [ -x "$bin" ] && [ "$(cat "$stamp" 2>/dev/null)" = "$recipe" ] \
        && "$bin" --version >/dev/null 2>&1
}

if works; then
    echo "$bin" >&3
    exit 0
fi

mkdir -p "$prefix"
# One build at a time: a second caller waits for the first and then reuses its binary.
if command -v flock >/dev/null 2>&1; then
    exec 9>"$prefix/.lock"
    flock 9
    if works; then
        echo "$bin" >&3
        exit 0
    fi
fi

# Build tools, installed with apt-get when missing (as scripts/bootstrap.sh does).
missing=()
command -v cmake >/dev/null 2>&1 || missing+=(cmake)
command -v c++ >/dev/null 2>&1 || command -v g++ >/dev/null 2>&1 || missing+=(g++)
command -v make >/dev/null 2>&1 || command -v ninja >/dev/null 2>&1 || missing+=(make)
command -v python3 >/dev/null 2>&1 || missing+=(python3 python3-pip)
if ((${#missing[@]})); then
    log "installing ${missing[*]} (apt-get)"
    sudo=""
    if [ "$(id -u)" -ne 0 ]; then
        command -v sudo >/dev/null 2>&1 || { log "need root or sudo to install ${missing[*]}"; exit 1; }
        sudo="sudo"
    fi
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}" >/dev/null
fi
python3 -m pip --version >/dev/null 2>&1 || { log "python3 -m pip is required (apt-get install python3-pip)"; exit 1; }

work="$prefix/work"
rm -rf "$work"
mkdir -p "$work/sdist"
cleanup() {
    if [ "${JIELONG_KEEP_BUILD:-0}" != 1 ]; then rm -rf "$work"; fi
}
trap cleanup EXIT

# The source package only: --no-binary keeps pip from taking a wheel, --no-deps from
# fetching anything else.
fetch() {
    python3 -m pip download --quiet --no-deps --no-binary :all: --dest "$work/sdist" "$1"
}
log "fetching the llama-cpp-python $version source package (pip)"
if ! fetch "llama-cpp-python==$version"; then
    log "llama-cpp-python $version could not be fetched; trying the newest version"
    fetch "llama-cpp-python"
fi
sdist="$(ls "$work"/sdist/llama_cpp_python-*.tar.gz | head -n 1)"
log "unpacking $(basename "$sdist")"
tar -xzf "$sdist" -C "$work"
src="$(ls -d "$work"/llama_cpp_python-*/vendor/llama.cpp | head -n 1)"
[ -f "$src/CMakeLists.txt" ] || { log "no llama.cpp tree in $sdist"; exit 1; }
rm -rf "$work/sdist"

build="$work/build"
# Native code, but no AMX tiles: a CPU can list AMX while its kernel (or hypervisor)
# does not grant the tile state to processes, and then ggml's AMX matrix multiply dies
# with SIGSEGV on the first decode (seen on Sapphire Rapids VMs). Explicit -mno-amx-*
# win over -march=native whatever their order. Flags the compiler does not know are
# left out.
cxx="$(command -v c++ || command -v g++)"
no_amx=""
for flag in -mno-amx-tile -mno-amx-int8 -mno-amx-bf16; do
    if echo 'int main(void){return 0;}' | "$cxx" "$flag" -x c++ -o /dev/null - >/dev/null 2>&1; then
        no_amx="$no_amx $flag"
    fi
done
no_amx="${no_amx# }"
started=$(date +%s)
log "configuring llama.cpp ($src) for this CPU"
# Native CPU code; no GPU backends; a static binary; no downloads at build time
# (no curl, no prebuilt web UI: the server runs without its browser UI); no tests,
# examples or extra programs.
nice -n "$niceness" cmake -S "$src" -B "$build" \
    -DCMAKE_BUILD_TYPE=Release \
    -DCMAKE_C_FLAGS="$no_amx" \
    -DCMAKE_CXX_FLAGS="$no_amx" \
    -DGGML_AMX_TILE=OFF \
    -DGGML_AMX_INT8=OFF \
    -DGGML_AMX_BF16=OFF \
    -DBUILD_SHARED_LIBS=OFF \
    -DGGML_NATIVE=ON \
    -DGGML_CUDA=OFF \
    -DGGML_METAL=OFF \
    -DGGML_VULKAN=OFF \
    -DGGML_CCACHE=OFF \
    -DLLAMA_CURL=OFF \
    -DLLAMA_OPENSSL=OFF \
    -DLLAMA_BUILD_SERVER=ON \
    -DLLAMA_BUILD_TOOLS=ON \
    -DLLAMA_BUILD_COMMON=ON \
    -DLLAMA_BUILD_TESTS=OFF \
    -DLLAMA_BUILD_EXAMPLES=OFF \
    -DLLAMA_BUILD_APP=OFF \
    -DLLAMA_BUILD_UI=OFF \
    -DLLAMA_USE_PREBUILT_UI=OFF \
    -DLLAMA_TOOLS_INSTALL=OFF

log "building llama-server (-j $jobs, nice $niceness; about 10 minutes on 2 cores)"
nice -n "$niceness" cmake --build "$build" --config Release --target llama-server -j "$jobs"

built="$build/bin/llama-server"
[ -x "$built" ] || { log "the build finished without $built"; exit 1; }
"$built" --version >/dev/null 2>&1 || { log "$built does not run"; exit 1; }
mkdir -p "$prefix/bin"
cp "$built" "$bin.tmp"
mv -f "$bin.tmp" "$bin"
echo "$recipe" >"$stamp"
log "built in $(( $(date +%s) - started )) s: $("$bin" --version 2>&1 | head -n 1)"
echo "$bin" >&3
