"""The knobs of one benchmark run, from the command line; --quick shrinks them all for the smoke test."""

from __future__ import annotations

import argparse
import secrets
from dataclasses import dataclass, field
from pathlib import Path

from bench.targets import ALL as ALL_TARGETS
from bench.targets import DEFAULT as DEFAULT_TARGETS

SCENARIOS = ("latency", "throughput", "streaming", "memory", "throttled")
RESULTS_DIR = Path(__file__).resolve().parent / "results"


@dataclass(frozen=True)
class RunConfig:
    rounds: int = 3
    duration: int = 3  # seconds of load per target per round (wrk counts whole seconds)
    workers: int = 2  # processes of the gateway-mw target
    targets: tuple[str, ...] = DEFAULT_TARGETS
    scenarios: tuple[str, ...] = SCENARIOS
    quick: bool = False
    results_dir: Path = RESULTS_DIR

    pause: float = 0.3  # seconds of quiet between two runs, so one run's tail does not overlap the next one
    latency_concurrency: int = 1
    throughput_concurrency: tuple[int, ...] = (32, 256)
    wrk_timeout: float = 10.0  # seconds before wrk counts a request as timed out
    warmup_requests: int = 200
    # Streaming: the fakes send `stream_tokens` chunks, `token_delay` seconds apart.
    stream_tokens: int = 20
    token_delay: float = 0.01
    stream_seconds: float | None = None  # per target per round; None: `duration`
    # Memory: streams held open at once; the fakes of that stage send a chunk every `slow_token_delay` s.
    open_streams: int = 1000
    slow_token_delay: float = 1.0
    slow_tokens: int = 120
    open_timeout: float = 60.0
    plateau_timeout: float = 10.0
    sample_interval: float = 0.5  # seconds between two RSS samples
    # Throttled: one fake answers every request 429 with `retry-after-ms: retry_after_ms`.
    retry_after_ms: int = 1000
    throttled_concurrency: int = 1
    # Sent to every target alike; LiteLLM refuses to start without a master key.
    master_key: str = field(default_factory=lambda: "sk-bench-" + secrets.token_hex(16))

    @property
    def command(self) -> str:
        parts = ["python -m bench"]
        if self.quick:
            parts.append("--quick")
        parts += [f"--rounds {self.rounds}", f"--duration {self.duration}", f"--workers {self.workers}"]
        if self.targets != DEFAULT_TARGETS:
            parts.append(f"--only {','.join(self.targets)}")
        if self.scenarios != SCENARIOS:
            parts.append(f"--scenarios {','.join(self.scenarios)}")
        if self.throttled_concurrency != 1:
            parts.append(f"--throttled-concurrency {self.throttled_concurrency}")
        return " ".join(parts)


QUICK = {
    "rounds": 1, "duration": 1, "warmup_requests": 20, "open_streams": 100, "open_timeout": 15.0,
    "plateau_timeout": 2.0, "retry_after_ms": 500, "stream_tokens": 10, "stream_seconds": 0.5, "pause": 0.1,
    "throughput_concurrency": (32,), "sample_interval": 0.2,
}


def _names(allowed: tuple[str, ...], flag: str):
    def parse(text: str) -> tuple[str, ...]:
        names = tuple(dict.fromkeys(n.strip() for n in text.split(",") if n.strip()))
        unknown = [n for n in names if n not in allowed]
        if unknown or not names:
            raise argparse.ArgumentTypeError(
                f"{flag} takes a comma-separated list of {', '.join(allowed)}; got {text!r}"
            )
        return names

    return parse


def _at_least_one(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {text}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description="The gateway against the limit (a fake upstream called directly) and its peers "
        "(sglang-router, LiteLLM), side by side on loopback. Writes bench/results/gateway.md and .png.",
    )
    parser.add_argument("--quick", action="store_true", help="one short round of everything (the smoke test)")
    parser.add_argument("--rounds", type=_at_least_one,
                        help="rounds over the targets per scenario (default 3)")
    parser.add_argument("--duration", type=_at_least_one,
                        help="seconds of load per target per round (default 3)")
    parser.add_argument("--workers", type=_at_least_one, default=2,
                        help="worker processes of the gateway-mw target (default 2); the gateway target "
                        "always runs one")
    parser.add_argument("--only", type=_names(ALL_TARGETS, "--only"), default=DEFAULT_TARGETS,
                        help=f"targets, comma-separated, of {','.join(ALL_TARGETS)} "
                        f"(default: {','.join(DEFAULT_TARGETS)})")
    parser.add_argument("--scenarios", type=_names(SCENARIOS, "--scenarios"), default=SCENARIOS,
                        help=f"scenarios, comma-separated (default: {','.join(SCENARIOS)})")
    parser.add_argument("--open-streams", type=_at_least_one, help="streams held open in the memory scenario "
                        "(default 1000)")
    parser.add_argument("--throttled-concurrency", type=_at_least_one,
                        help="connections of the throttled scenario (default 1; several spread over workers)")
    parser.add_argument("--results-dir", type=Path, default=RESULTS_DIR, help="where gateway.md/.png go")
    return parser


def parse_args(argv: list[str] | None = None) -> RunConfig:
    args = build_parser().parse_args(argv)
    values = dict(QUICK) if args.quick else {}
    for name in ("rounds", "duration", "open_streams", "throttled_concurrency"):
        if getattr(args, name) is not None:
            values[name] = getattr(args, name)
    return RunConfig(
        workers=args.workers, targets=args.only, scenarios=args.scenarios, quick=args.quick,
        results_dir=args.results_dir, **values,
    )
