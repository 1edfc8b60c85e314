#!/usr/bin/env bash
# Compiles llama.cpp once, portably, and gives both llama.cpp backends what they run on:
#   - llama-server (llama.cpp's own HTTP server) in  $VENV/llama.cpp/<key>/bin/
#   - the shared libraries llama-cpp-python loads, copied into its package (built with LLAMA_BUILD=OFF)
#
# One build from one pinned source: the llama.cpp tree inside the pinned llama-cpp-python sdist (PyPI),
# so the server and the Python binding are the same llama.cpp, and nothing comes from outside PyPI.
#
# Portable, never native: -march=native code made on one CPU crashes on another (an AMX/AVX-512 build
# segfaulted on Intel Xeons; a build on such a Xeon would die with SIGILL on an AMD EPYC). The build
# targets x86-64-v3 (AVX2, FMA, F16C, BMI2: every x86-64 server CPU since 2013) when the CPU has it,
# else plain x86-64. The key of the build directory is a hash of the version and every flag, so a
# build made with other flags is never reused, and pip's wheel cache is never asked (--no-cache-dir).
#
# Not CPU-dispatched kernels (GGML_BACKEND_DL + GGML_CPU_ALL_VARIANTS: every x86 variant built, the best for
# this CPU loaded at run time), measured against this build (bench/results/llamacpp-throughput.md): on the CI's
# AMD EPYC (AVX2, no AVX-512) it loads its "haswell" variant, compiled with exactly this build's flags, and runs
# at the same speed (same-run A/B, within ±5% either way), for 1.65× the compile CPU time (459 steps instead of
# 212) and twice the binaries (37 MB). It would also need more to be safe: llama-cpp-python would not find the
# variants (ggml looks beside the executable, i.e. Python's bin/, and in the working directory), and on the
# Xeons where an AVX-512/AMX build crashed it would choose exactly that code. Faster kernels on AVX-512 CPUs are
# what it could buy; none was at hand to measure that.
#
# The build lives in the user's cache (LLAMA_CPP_CACHE, default ~/.cache/llm-gateway/llama.cpp), keyed as
# above, so a fresh clone on the same machine (CI) reuses it instead of compiling again.
#
#   scripts/build_llamacpp.sh .venv        # idempotent; prints the build directory on its last line
#
# LLAMA_CPP_LEVEL=x86-64 or x86-64-v3 sets the level instead of asking this CPU (an image is built for the
# CPUs it will run on, not the builder's); LLAMA_CPP_SERVER_ONLY=1 builds llama-server alone, without
# installing llama-cpp-python (the container image).
#
#   scripts/build_llamacpp.sh --flags      # prints the CMake flags of that level's build, one a line
#                                          # (tests/e2e/test_build_instructions.py configures with them)
set -euo pipefail
cd "$(dirname "$0")/.."

VENV=${1:-.venv}
LLAMA_CPP_PYTHON_VERSION=$(cat backends/llamacpp/LLAMA_CPP_PYTHON_VERSION)
step() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }

cpu_has() { grep -qw "$1" /proc/cpuinfo; }
flags=(-DCMAKE_BUILD_TYPE=Release -DBUILD_SHARED_LIBS=ON -DGGML_NATIVE=OFF
       -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_TOOLS=ON -DLLAMA_BUILD_SERVER=ON
       -DLLAMA_BUILD_APP=OFF -DLLAMA_OPENSSL=OFF -DLLAMA_CURL=OFF -DGGML_AVX512=OFF
       -DCMAKE_BUILD_WITH_INSTALL_RPATH=ON '-DCMAKE_INSTALL_RPATH=$ORIGIN')
level=${LLAMA_CPP_LEVEL:-}
case "$level" in
  x86-64|x86-64-v3) ;;
  "") if cpu_has avx2 && cpu_has fma && cpu_has f16c && cpu_has bmi2; then level=x86-64-v3; else level=x86-64; fi ;;
  *) echo "build_llamacpp: LLAMA_CPP_LEVEL must be x86-64 or x86-64-v3, got $level" >&2; exit 2 ;;
esac
if [ "$level" = x86-64 ]; then
  flags+=(-DGGML_SSE42=OFF -DGGML_AVX=OFF -DGGML_AVX2=OFF -DGGML_BMI2=OFF -DGGML_FMA=OFF -DGGML_F16C=OFF)
fi
if [ "${1:-}" = --flags ]; then  # what a build at this level is configured with, and nothing else
  printf '%s\n' "${flags[@]}"
  exit 0
fi
key=$(printf '%s\n' "$LLAMA_CPP_PYTHON_VERSION" "${flags[@]}" | sha256sum | cut -c1-12)
root=${LLAMA_CPP_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/llm-gateway/llama.cpp}
out=$root/$LLAMA_CPP_PYTHON_VERSION-$level-$key

if [ ! -f "$out/.complete" ]; then
  src=$root/src/llama_cpp_python-$LLAMA_CPP_PYTHON_VERSION
  if [ ! -f "$src/CMakeLists.txt" ]; then
    step "fetching the llama-cpp-python $LLAMA_CPP_PYTHON_VERSION source (PyPI sdist, ~75 MB)"
    mkdir -p "$root/src"
    "$VENV/bin/pip" download -q --disable-pip-version-check --no-deps --no-binary :all: --no-build-isolation \
      --dest "$root/src" "llama-cpp-python==$LLAMA_CPP_PYTHON_VERSION" 2>/dev/null \
      || "$VENV/bin/pip" download -q --disable-pip-version-check --no-deps --no-binary :all: \
           --dest "$root/src" "llama-cpp-python==$LLAMA_CPP_PYTHON_VERSION"
    tar -xzf "$root/src/llama_cpp_python-$LLAMA_CPP_PYTHON_VERSION.tar.gz" -C "$root/src"
  fi
  step "compiling llama.cpp ($level, portable; once: 5-11 min on 2 free cores, depending on the CPU)"
  build=$root/build-$key
  generator=()
  command -v ninja >/dev/null && generator=(-G Ninja)
  cmake -S "$src/vendor/llama.cpp" -B "$build" "${generator[@]}" "${flags[@]}" >"$root/configure.log" 2>&1 \
    || { tail -30 "$root/configure.log" >&2; exit 1; }
  log=$root/build.log
  set +e
  cmake --build "$build" -j "$(nproc)" --target llama-server llama ggml mtmd 2>&1 | tee "$log" \
    | grep --line-buffered -oE '^\[[0-9]+/[0-9]+\]|^\[ *[0-9]+%\]|error:.*' \
    | while read -r line; do printf '\r    %s   ' "$line" >&2; done
  status=${PIPESTATUS[0]}
  set -e
  echo >&2
  if [ "$status" -ne 0 ]; then
    echo "llama.cpp failed to compile; the last lines of its log ($log):" >&2
    tail -30 "$log" >&2
    exit "$status"
  fi
  rm -rf "$out"; mkdir -p "$out/bin"
  cp -a "$build"/bin/llama-server "$build"/bin/lib*.so* "$out/bin/"
  printf '%s\n' "$LLAMA_CPP_PYTHON_VERSION" "$level" "${flags[@]}" > "$out/.complete"
fi

if [ -n "${LLAMA_CPP_SERVER_ONLY:-}" ]; then
  echo "$out"
  exit 0
fi

# The Python binding of the same version, its own compile switched off (LLAMA_BUILD=OFF: a minute, not
# eight) and never from pip's cache, then given the libraries built above.
site=$("$VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
if [ "$(cat "$site/llama_cpp/lib/.build" 2>/dev/null)" != "$out" ]; then
  step "installing llama-cpp-python[server]==$LLAMA_CPP_PYTHON_VERSION on that build"
  CMAKE_ARGS="-DLLAMA_BUILD=OFF -DLLAVA_BUILD=OFF" "$VENV/bin/pip" install -q --disable-pip-version-check \
    --no-cache-dir --no-binary llama-cpp-python --force-reinstall --no-deps \
    "$root/src/llama_cpp_python-$LLAMA_CPP_PYTHON_VERSION.tar.gz"
  "$VENV/bin/pip" install -q --disable-pip-version-check "llama-cpp-python[server]==$LLAMA_CPP_PYTHON_VERSION"
  rm -rf "$site/llama_cpp/lib"; mkdir -p "$site/llama_cpp/lib"  # nothing left from another build
  # What llama_cpp loads (llama, ggml, mtmd) and what those link to; not llama-server's own libraries.
  cp -a "$out"/bin/lib{llama,ggml,ggml-base,ggml-cpu,mtmd}.so* "$site/llama_cpp/lib/"
  echo "$out" > "$site/llama_cpp/lib/.build"
fi
echo "$out"
