"""`python -m backends.llamacpp.llama_server`: llama.cpp's own server (llama-server) with the embedded model.

    python -m backends.llamacpp.llama_server --port 8081                  # 4 slots, 1 thread, embedded SmolLM2
    python -m backends.llamacpp.llama_server --port 8081 --parallel 8 --threads 2 --model x.gguf

The binary is the one scripts/build_llamacpp.sh compiled from the pinned llama.cpp (bootstrap links it as
.venv/bin/llama-server; LLAMA_SERVER_BIN names another). The command line is checked here, then this process
*becomes* llama-server (exec): its pid, signals and exit code are the server's own, so a supervisor that kills
it kills the server. Exit code 2, with one line on stderr, when the model or the binary is missing.

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
import os
import shutil
import sys
from pathlib import Path

from backends.llamacpp.model import ModelFileError, check_gguf, default_model_path, served_name

EXIT_USAGE = 2
BINARY_ENV = "LLAMA_SERVER_BIN"
DEFAULT_PARALLEL = 4
DEFAULT_CTX_PER_SLOT = 2048
DEFAULT_CACHE_RAM_MB = 256


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
    os.execv(command[0], command)


if __name__ == "__main__":
    main()
