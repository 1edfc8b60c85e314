"""`python -m scripts.prove_llamacpp`: prove the llama.cpp build runs on this CPU before anything relies on it.

Bootstrap runs it after installing. Two proofs with the embedded model, each in a process of its own so that
a crash (a kernel built for instructions this CPU lacks dies with SIGILL or SIGSEGV) is reported here, in
one clear message, instead of as a 502 on the first request to `make up`:

1. llama-cpp-python: load the model and generate one token;
2. llama-server: start it as the stack does, wait for /health, one chat completion of one token, stop it.

Exit code 0 when both work, 1 (and what failed, with its last lines of output) when either does not.
"""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

from backends.llamacpp.llama_server import BinaryMissing, find_binary, server_argv
from backends.llamacpp.model import ModelFileError, default_model_path

STARTUP_TIMEOUT = 120.0
ONE_TOKEN = """
import sys
from llama_cpp import Llama
llm = Llama(model_path=sys.argv[1], n_threads=1, n_ctx=256, verbose=False)
reply = llm.create_chat_completion(messages=[{"role": "user", "content": "Hi"}], max_tokens=1)
assert reply["usage"]["completion_tokens"] == 1, reply
"""


class ProofFailed(Exception):
    pass


def _death(returncode: int) -> str:
    if returncode < 0:
        name = signal.Signals(-returncode).name
        return f"crashed with {name} (exit {returncode}): a build this CPU cannot run"
    return f"exited with code {returncode}"


def _tail(text: str, lines: int = 15) -> str:
    return "\n".join("    " + line for line in text.strip().splitlines()[-lines:])


def prove_binding(model: Path) -> None:
    try:
        result = subprocess.run([sys.executable, "-c", ONE_TOKEN, str(model)], capture_output=True, text=True,
                                timeout=STARTUP_TIMEOUT, check=False)
    except subprocess.TimeoutExpired:
        raise ProofFailed(f"llama-cpp-python generated no token within {STARTUP_TIMEOUT:g}s") from None
    if result.returncode != 0:
        raise ProofFailed(f"llama-cpp-python {_death(result.returncode)}:\n{_tail(result.stderr)}")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _get(url: str) -> int | None:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return response.status
    except urllib.error.HTTPError as e:
        return e.code  # 503 while the model loads
    except OSError:
        return None


def prove_server(model: Path) -> None:
    port = _free_port()
    argv = server_argv(find_binary(), model, host="127.0.0.1", port=port, alias="proof", parallel=1,
                       ctx_per_slot=256)
    with tempfile.TemporaryFile("w+") as log:
        process = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)

        def output() -> str:
            log.seek(0)
            return _tail(log.read())

        try:
            deadline = time.monotonic() + STARTUP_TIMEOUT
            while _get(f"http://127.0.0.1:{port}/health") != 200:
                if process.poll() is not None:
                    raise ProofFailed(f"llama-server {_death(process.returncode)} while starting\n{output()}")
                if time.monotonic() > deadline:
                    raise ProofFailed(f"llama-server was not ready within {STARTUP_TIMEOUT:g}s:\n{output()}")
                time.sleep(0.1)
            body = json.dumps({"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 1}).encode()
            request = urllib.request.Request(f"http://127.0.0.1:{port}/v1/chat/completions", data=body,
                                             headers={"Content-Type": "application/json"})
            try:
                with urllib.request.urlopen(request, timeout=STARTUP_TIMEOUT) as response:
                    reply = json.load(response)
            except OSError as e:
                time.sleep(0.2)  # let a crashing server finish dying, so that its exit code is known
                died = _death(process.returncode) if process.poll() is not None else f"failed ({e})"
                raise ProofFailed(f"llama-server {died} on its first completion:\n{output()}") from None
            if reply.get("usage", {}).get("completion_tokens") != 1:
                raise ProofFailed(f"llama-server answered without a token: {reply}")
        finally:
            if process.poll() is None:
                process.terminate()
                try:
                    process.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()


def main() -> int:
    try:
        model = default_model_path()
        started = time.monotonic()
        prove_binding(model)
        prove_server(model)
    except (ModelFileError, BinaryMissing, ProofFailed) as e:
        print(f"bootstrap: the llama.cpp build does not work on this machine.\n  {e}", file=sys.stderr)
        print("  Try the baseline build (no AVX2): LLAMA_CPP_LEVEL=x86-64 scripts/bootstrap.sh, and report "
              "this CPU (lscpu) with the message above.", file=sys.stderr)
        return 1
    print(f"    llama-cpp-python and llama-server each generated a token ({time.monotonic() - started:.1f}s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
