"""python -m backends.fake --port 9001 [...]: one fake upstream in its own process (for benchmarks)."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from collections.abc import Callable, Sequence

from .script import Reply
from .server import run_forever
from .tokens import DEFAULT_REPLY_TEXT, reply_text_of_length
from .upstream import FakeUpstream


def _non_negative(kind: Callable[[str], float]) -> Callable[[str], float]:
    def parse(text: str) -> float:
        value = kind(text)  # ValueError becomes argparse's "invalid value" message
        if value < 0:
            raise argparse.ArgumentTypeError(f"must be >= 0, got {text}")
        return value

    parse.__name__ = kind.__name__
    return parse


def _positive(text: str) -> int:
    value = int(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
    return value


def _status(text: str) -> int:
    value = int(text)
    if not 100 <= value <= 599:
        raise argparse.ArgumentTypeError(f"not an HTTP status: {text}")
    return value


def _port(text: str) -> int:
    value = int(text)
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"not a TCP port: {text}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m backends.fake", description=__doc__)
    parser.add_argument("--port", type=_port, required=True, help="0 picks a free port (printed on start)")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--name", default="fake", help="sent back in the x-fake-upstream header")
    parser.add_argument("--model", default="fake-model")
    parser.add_argument("--api-key", help="require this key (Authorization: Bearer or api-key)")
    parser.add_argument("--deployment", help="the only Azure deployment name accepted")
    parser.add_argument("--status", type=_status, default=200, help="status of every chat reply")
    retry = parser.add_mutually_exclusive_group()
    retry.add_argument("--retry-after-ms", type=_non_negative(int), help="send retry-after-ms: N")
    retry.add_argument("--retry-after", type=_non_negative(float), help="send Retry-After: S (seconds)")
    parser.add_argument("--latency", type=_non_negative(float), default=0.0, help="seconds before first byte")
    parser.add_argument("--token-delay", type=_non_negative(float), default=0.0,
                        help="seconds between stream chunks")
    parser.add_argument("--tokens", type=_non_negative(int), help="length of the reply in tokens")
    parser.add_argument("--tpm", type=_positive, help="tokens-per-minute budget (Azure-like 429s)")
    parser.add_argument("--health", type=_status, default=200, help="status of GET /health (503: loading)")
    parser.add_argument("--llama-server", action="store_true",
                        help="pose as llama.cpp's llama-server: /props, /slots, /metrics, timings")
    parser.add_argument("--total-slots", type=_positive, default=1, help="llama-server's --parallel")
    parser.add_argument("--keep-requests", type=_non_negative(int), default=1000,
                        help="recorded requests kept in memory (counters are kept regardless)")
    parser.add_argument("--access-log", action="store_true", help="log every request (slower)")
    return parser


def upstream_from_args(args: argparse.Namespace) -> FakeUpstream:
    headers = {}
    if args.retry_after_ms is not None:
        headers["retry-after-ms"] = str(args.retry_after_ms)
    if args.retry_after is not None:
        headers["Retry-After"] = format(args.retry_after, "g")
    return FakeUpstream(
        name=args.name,
        model=args.model,
        api_key=args.api_key,
        deployment=args.deployment,
        default=Reply(status=args.status, headers=headers),
        reply_text=DEFAULT_REPLY_TEXT if args.tokens is None else reply_text_of_length(args.tokens),
        token_delay=args.token_delay,
        latency=args.latency,
        tpm_budget=args.tpm,
        health_status=args.health,
        keep_requests=args.keep_requests,
        llama_server=args.llama_server,
        total_slots=args.total_slots,
    )


def _loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    try:
        import uvloop
    except ImportError:
        return None
    return uvloop.new_event_loop


def main(argv: Sequence[str] | None = None) -> None:
    parser = build_parser()
    args = parser.parse_args(argv)
    if (args.retry_after_ms is not None or args.retry_after is not None) and args.status == 200:
        parser.error("--retry-after/--retry-after-ms need a non-200 --status")
    upstream = upstream_from_args(args)
    if args.access_log:
        logging.basicConfig(level=logging.INFO, format="%(message)s")

    def announce(url: str) -> None:
        # One parseable line, so a parent process that asked for port 0 learns the URL.
        print(f"fake upstream {upstream.name} listening on {url}", flush=True)

    try:
        with asyncio.Runner(loop_factory=_loop_factory()) as runner:
            runner.run(
                run_forever(upstream, args.host, args.port, access_log=args.access_log, announce=announce)
            )
    except OSError as exc:  # e.g. the port is taken: a message, not a traceback
        sys.exit(f"python -m backends.fake: cannot listen on {args.host}:{args.port}: {exc.strerror or exc}")


if __name__ == "__main__":
    main()
