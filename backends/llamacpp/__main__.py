"""`python -m backends.llamacpp`: one OpenAI-compatible llama.cpp server on one port.

    python -m backends.llamacpp --port 8081                      # the embedded SmolLM2, 1 thread
    python -m backends.llamacpp --port 8082 --model x.gguf --threads 2

Exit code 2, with one line on stderr, when the model file or llama-cpp-python is missing or unusable.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from backends.llamacpp.model import ModelFileError, check_gguf, default_model_path, served_name

EXIT_USAGE = 2


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m backends.llamacpp",
        description="Serve a GGUF model over the OpenAI API with llama.cpp (CPU).",
    )
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--host", default="127.0.0.1", help="listen address (default: %(default)s)")
    parser.add_argument("--model", type=Path, help="GGUF file (default: the embedded SmolLM2-135M-Instruct)")
    parser.add_argument(
        "--alias", help="model id served to clients (default: derived from the file name)"
    )
    # One thread by default: the stack runs two backends on a two-core machine, one core each.
    parser.add_argument("--threads", type=int, default=1, help="CPU threads (default: %(default)s)")
    parser.add_argument("--ctx", type=int, default=2048, help="context size in tokens (default: %(default)s)")
    # llama.cpp itself keeps only the KV cache of the last request; a RAM cache keeps several conversations'
    # state, so a chat's next turn (sent here again by the gateway's affinity) skips re-reading its history.
    parser.add_argument("--cache-mb", type=int, default=128,
                        help="RAM prompt cache in MB, 0 to disable (default: %(default)s)")
    args = parser.parse_args(argv)
    if args.threads < 1:
        parser.error("--threads must be at least 1")
    if args.ctx < 1:
        parser.error("--ctx must be at least 1")
    if args.cache_mb < 0:
        parser.error("--cache-mb must be 0 or more")
    return args


def fail(message: str) -> None:
    print(f"backends.llamacpp: error: {message}", file=sys.stderr)
    sys.exit(EXIT_USAGE)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    try:
        model = args.model or default_model_path()
        check_gguf(model)
    except ModelFileError as e:
        fail(str(e))
    alias = args.alias or served_name(model)

    try:
        from backends.llamacpp import server
    except ImportError as e:
        fail(f"llama-cpp-python[server] is not usable ({e}); run scripts/bootstrap.sh")

    try:
        app = server.build_app(model, alias, threads=args.threads, ctx=args.ctx, cache_mb=args.cache_mb)
    except ValueError as e:  # llama.cpp rejected a file that looked like GGUF
        fail(f"cannot load {model}: {e}")
    print(f"backends.llamacpp: serving {model.name} as {alias!r} with {args.threads} thread(s)", flush=True)
    server.serve(app, host=args.host, port=args.port)


if __name__ == "__main__":
    main()
