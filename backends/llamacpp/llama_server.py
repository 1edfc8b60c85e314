"""`python -m backends.llamacpp.llama_server`: llama.cpp's own server (llama-server) with the embedded model.

    python -m backends.llamacpp.llama_server --port 8081                  # 4 slots, 1 thread, embedded SmolLM2
    python -m backends.llamacpp.llama_server --port 8081 --parallel 8 --threads 2 --model x.gguf

The binary is the one scripts/build_llamacpp.sh compiled from the pinned llama.cpp (bootstrap links it as
.venv/bin/llama-server; LLAMA_SERVER_BIN names another). The command line is checked here (exit code 2, with
one line on stderr, when the model or the binary is missing), then llama-server runs as this process's child,
and this process stops it (`serve`):

- **SIGTERM or SIGINT is passed on, and repeated after a second if llama-server is still there.** On the first
  one llama-server stops generating at once, but then waits for every client with a request in flight to hang
  up, and such a client has no reason to: measured with the pinned build, a stream's client keeps it there
  until the stream's next SSE ping (30 s by default), a non-streaming one was still waiting after 30 s
  (nothing in its code ends that wait but the client). An idle llama-server exits within 0.1 s. A second
  signal is llama.cpp's own "terminate immediately" (exit code 1), which closes those connections, so each
  client learns at once that its answer was cut (the gateway sends its client an error event) instead of
  waiting for a supervisor's SIGKILL. SIGKILL only if even that leaves it running, 5 s later.
- **Signals reach llama-server only through here**: it runs in a process group of its own, so a supervisor's
  SIGTERM to this group, or a Ctrl-C in the terminal, is not also a first signal sent to it directly (two at
  once would be its "terminate immediately", even when idle). A SIGKILL to this process (a supervisor's last
  resort, a test playing a crash) takes llama-server with it (PR_SET_PDEATHSIG).
- **Its exit is this process's**: the same exit code, or the same signal when it was killed by one (a crash
  shows as SIGSEGV or SIGILL to whoever started it).

What it is started with, and why:
- ``--parallel N`` slots with continuous batching (on by default): N conversations advance together in one
  batch, which on a CPU gets more tokens per second out of the same cores than one request at a time;
- ``--ctx-size`` = slots x context per slot (llama-server divides it among the slots);
- ``--metrics`` (load: requests_processing, requests_deferred) and ``/slots`` and ``/props`` (total_slots),
  which the gateway reads (gateway/llama_server.py);
- ``--embeddings --pooling mean``: the same server answers /v1/embeddings as well as chat (checked against this
  llama.cpp: both work in one server; without it /v1/embeddings answers 501);
- ``--cache-ram``: idle conversations' KV state kept in RAM, so a chat's next turn finds its history even when
  its slot was reused meanwhile (the gateway's affinity sends it back here);
- ``--no-webui``: a backend, not a chat page.
"""

from __future__ import annotations

import argparse
import ctypes
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

from backends.llamacpp.model import ModelFileError, check_gguf, default_model_path, served_name

EXIT_USAGE = 2
BINARY_ENV = "LLAMA_SERVER_BIN"
DEFAULT_PARALLEL = 4
DEFAULT_CTX_PER_SLOT = 2048
DEFAULT_CACHE_RAM_MB = 256
# After a stop signal: an idle llama-server has exited within 0.1 s; one still there is waiting for clients
# whose requests it has stopped serving (see the module docstring).
FORCE_AFTER = 1.0
KILL_AFTER = 5.0
STOP_SIGNALS = frozenset({signal.SIGTERM, signal.SIGINT})
_PR_SET_PDEATHSIG = 1


class BinaryMissing(Exception):
    """No llama-server binary; the message says how to get one."""


def find_binary() -> Path:
    """$LLAMA_SERVER_BIN, else the one bootstrap linked next to this Python, else llama-server on PATH."""
    named = os.environ.get(BINARY_ENV)
    if named:
        path = Path(named)
        if not (path.is_file() and os.access(path, os.X_OK)):
            raise BinaryMissing(f"{BINARY_ENV}={named} is not an executable file")
        return path
    beside = Path(sys.prefix) / "bin" / "llama-server"
    if beside.is_file() and os.access(beside, os.X_OK):
        return beside
    found = shutil.which("llama-server")
    if found:
        return Path(found)
    raise BinaryMissing("llama-server is not built: run scripts/bootstrap.sh (or set LLAMA_SERVER_BIN)")


def server_argv(
    binary: Path,
    model: Path,
    *,
    host: str,
    port: int,
    alias: str,
    threads: int = 1,
    parallel: int = DEFAULT_PARALLEL,
    ctx_per_slot: int = DEFAULT_CTX_PER_SLOT,
    cache_ram_mb: int = DEFAULT_CACHE_RAM_MB,
    embeddings: bool = True,
) -> list[str]:
    argv = [
        str(binary), "--model", str(model), "--alias", alias, "--host", host, "--port", str(port),
        "--threads", str(threads), "--threads-batch", str(threads),
        "--parallel", str(parallel), "--ctx-size", str(ctx_per_slot * parallel), "--cont-batching",
        "--metrics", "--slots", "--cache-ram", str(cache_ram_mb), "--no-webui",
    ]
    if embeddings:
        argv += ["--embeddings", "--pooling", "mean"]
    return argv


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m backends.llamacpp.llama_server",
        description="Serve a GGUF model with llama.cpp's llama-server (OpenAI API, parallel slots).",
    )
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--host", default="127.0.0.1", help="listen address (default: %(default)s)")
    parser.add_argument("--model", type=Path, help="GGUF file (default: the embedded SmolLM2-135M-Instruct)")
    parser.add_argument("--alias", help="model id served to clients (default: derived from the file name)")
    parser.add_argument("--threads", type=int, default=1, help="CPU threads (default: %(default)s)")
    parser.add_argument("--parallel", type=int, default=DEFAULT_PARALLEL,
                        help="slots: requests served at once (default: %(default)s)")
    parser.add_argument("--ctx-per-slot", type=int, default=DEFAULT_CTX_PER_SLOT,
                        help="context size of each slot in tokens (default: %(default)s)")
    parser.add_argument("--cache-ram-mb", type=int, default=DEFAULT_CACHE_RAM_MB,
                        help="RAM for idle conversations' KV state, 0 to disable (default: %(default)s)")
    parser.add_argument("--no-embeddings", action="store_true", help="chat only: /v1/embeddings answers 501")
    args = parser.parse_args(argv)
    for name in ("threads", "parallel", "ctx_per_slot"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1")
    if args.cache_ram_mb < 0:
        parser.error("--cache-ram-mb must be 0 or more")
    return args


def _say(message: str) -> None:
    print(f"backends.llamacpp.llama_server: {message}", file=sys.stderr, flush=True)


def serve(command: list[str]) -> int:
    """Run llama-server until it exits, stopping it as the module docstring says; its exit status
    (negative: the signal that killed it)."""
    watched = {*STOP_SIGNALS, signal.SIGCHLD}
    # Blocked from here on and taken with sigwaitinfo: no handler can run halfway through anything, and a
    # SIGCHLD sent before the first wait is not lost. The child unblocks them before it runs llama-server.
    signal.pthread_sigmask(signal.SIG_BLOCK, watched)
    parent, libc = os.getpid(), ctypes.CDLL(None, use_errno=True)

    def in_child() -> None:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, watched)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        if os.getppid() != parent:  # this process died before the line above: nobody would stop it
            os._exit(1)

    # preexec_fn is unsafe only with other threads running, and this process has none.
    process = subprocess.Popen(command, process_group=0, preexec_fn=in_child)  # noqa: PLW1509
    deadline: float | None = None  # while stopping: when to do the next step
    stop, forced = signal.SIGTERM, False
    while process.poll() is None:
        info: signal.struct_siginfo | None
        if deadline is None:
            info = signal.sigwaitinfo(watched)
        else:
            info = signal.sigtimedwait(watched, max(0.0, deadline - time.monotonic()))
        if process.poll() is not None:
            break
        if info is not None and info.si_signo == signal.SIGCHLD:
            continue
        if deadline is None:  # the first stop signal
            stop = signal.Signals(info.si_signo) if info is not None else signal.SIGTERM
            process.send_signal(stop)
            deadline = time.monotonic() + FORCE_AFTER
        elif not forced:  # a second signal from outside (Ctrl-C twice), or still running after FORCE_AFTER
            if info is None:
                _say(f"llama-server is still waiting {FORCE_AFTER:g}s after {stop.name} for clients whose "
                     f"requests it stopped serving: {stop.name} again, which it takes as 'exit now'")
            process.send_signal(stop)
            forced, deadline = True, time.monotonic() + KILL_AFTER
        elif info is None:
            _say(f"llama-server still running {KILL_AFTER:g}s after its second {stop.name}: SIGKILL")
            process.kill()
            deadline = None
    return process.returncode


def _exit_like(status: int) -> None:
    """Exit with llama-server's exit code, or die of the signal that killed it."""
    if status < 0:
        sig = signal.Signals(-status)
        signal.signal(sig, signal.SIG_DFL)
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {sig})
        os.kill(os.getpid(), sig)
    sys.exit(status if status >= 0 else 128 - status)


def fail(message: str) -> None:
    print(f"backends.llamacpp.llama_server: error: {message}", file=sys.stderr)
    sys.exit(EXIT_USAGE)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    try:
        model = args.model or default_model_path()
        check_gguf(model)
        binary = find_binary()
    except (ModelFileError, BinaryMissing) as e:
        fail(str(e))
    command = server_argv(
        binary, model, host=args.host, port=args.port, alias=args.alias or served_name(model),
        threads=args.threads, parallel=args.parallel, ctx_per_slot=args.ctx_per_slot,
        cache_ram_mb=args.cache_ram_mb, embeddings=not args.no_embeddings,
    )
    print(f"backends.llamacpp.llama_server: {model.name}, {args.parallel} slot(s), {args.threads} thread(s)",
          flush=True)
    _exit_like(serve(command))


if __name__ == "__main__":
    main()
