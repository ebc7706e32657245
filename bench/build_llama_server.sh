#!/usr/bin/env bash
# Build llama.cpp's own `llama-server` from the llama.cpp sources vendored in the SAME
# llama-cpp-python release as the one installed in .venv, CPU only, Release, with the
# default ggml options that llama-cpp-python's own build uses on Linux (GGML_NATIVE and
# GGML_OPENMP on, shared libraries), so both sides run the same kernels.
#
# The sdist comes from PyPI through pip; sources, build tree and binary live in a cache
# directory outside git (never committed):
#
#   ${LLMGATE_BENCH_CACHE:-~/.cache/llmgate-bench}/llama-server-<version>/
#       build/bin/llama-server   the binary (with its shared libraries next to it)
#       BUILD_INFO.txt           version, llama.cpp commit, cmake flags, build time
#
# Usage, from the repository root:
#
#   bench/build_llama_server.sh            # prints the binary's path (builds it if missing)
#   JOBS=2 bench/build_llama_server.sh     # parallel compile jobs (default 2)
#   PYTHON=.venv/bin/python bench/build_llama_server.sh
#
# The build takes several minutes on 2 cores; the last line of stdout is the binary's path.
# Exit status: 0 built or already there; 1 anything failed (the build log is in the cache).
set -euo pipefail

PYTHON=${PYTHON:-.venv/bin/python}
JOBS=${JOBS:-2}
CACHE=${LLMGATE_BENCH_CACHE:-$HOME/.cache/llmgate-bench}

VERSION=$("$PYTHON" -c 'import importlib.metadata as m; print(m.version("llama_cpp_python"))')
ROOT="$CACHE/llama-server-$VERSION"
BIN="$ROOT/build/bin/llama-server"
if [[ -x "$BIN" && -f "$ROOT/BUILD_INFO.txt" ]]; then
    echo "$BIN"
    exit 0
fi

mkdir -p "$CACHE/src" "$ROOT"
SDIST="$CACHE/src/llama_cpp_python-$VERSION.tar.gz"
if [[ ! -f "$SDIST" ]]; then
    echo "downloading the llama-cpp-python $VERSION sdist from PyPI" >&2
    "$PYTHON" -m pip download "llama-cpp-python==$VERSION" --no-binary :all: --no-deps \
        -d "$CACHE/src" >&2
fi
SRC="$ROOT/src"
if [[ ! -d "$SRC/vendor/llama.cpp" ]]; then
    rm -rf "$SRC" "$ROOT/unpack"
    mkdir -p "$ROOT/unpack"
    tar -xzf "$SDIST" -C "$ROOT/unpack"
    mv "$ROOT/unpack/llama_cpp_python-$VERSION" "$SRC"
    rmdir "$ROOT/unpack"
fi
LLAMA="$SRC/vendor/llama.cpp"
if [[ ! -f "$LLAMA/tools/server/CMakeLists.txt" && ! -f "$LLAMA/examples/server/CMakeLists.txt" ]]; then
    echo "the llama.cpp tree vendored in llama-cpp-python $VERSION has no server sources" >&2
    exit 1
fi
COMMIT=$(git -C "$LLAMA" rev-parse HEAD 2>/dev/null || echo "unknown (no .git in the sdist)")

# CPU only; no web UI (LLAMA_BUILD_UI off, and no download of prebuilt UI assets: this
# machine may have no internet); no OpenSSL (loopback only); no tests/examples.
FLAGS=(
    -DCMAKE_BUILD_TYPE=Release
    -DLLAMA_BUILD_SERVER=ON
    -DLLAMA_BUILD_TOOLS=ON
    -DLLAMA_BUILD_COMMON=ON
    -DLLAMA_BUILD_TESTS=OFF
    -DLLAMA_BUILD_EXAMPLES=OFF
    -DLLAMA_BUILD_UI=OFF
    -DLLAMA_USE_PREBUILT_UI=OFF
    -DLLAMA_OPENSSL=OFF
    -DGGML_CUDA=OFF
    -DGGML_METAL=OFF
    -DGGML_VULKAN=OFF
)
GENERATOR=()
if command -v ninja >/dev/null; then
    GENERATOR=(-G Ninja)
fi

LOG="$ROOT/build.log"
echo "building llama-server (llama-cpp-python $VERSION, llama.cpp $COMMIT), log: $LOG" >&2
start=$(date +%s)
{
    cmake -S "$LLAMA" -B "$ROOT/build" "${GENERATOR[@]}" "${FLAGS[@]}"
    cmake --build "$ROOT/build" --config Release --target llama-server -j "$JOBS"
} >"$LOG" 2>&1 || {
    tail -n 40 "$LOG" >&2
    echo "build failed; full log: $LOG" >&2
    exit 1
}
seconds=$(($(date +%s) - start))

cat >"$ROOT/BUILD_INFO.txt" <<EOF
llama-cpp-python $VERSION (sdist from PyPI: $(basename "$SDIST"))
llama.cpp commit $COMMIT
cmake $(cmake --version | head -n1 | awk '{print $3}'), $(c++ --version | head -n1)
flags ${GENERATOR[*]} ${FLAGS[*]}
build command: cmake --build build --config Release --target llama-server -j $JOBS
build time ${seconds} s on $(nproc) cores ($(date -u +%Y-%m-%dT%H:%M:%SZ))
EOF
cat "$ROOT/BUILD_INFO.txt" >&2
echo "$BIN"
