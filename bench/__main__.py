"""`python -m bench [--quick] [--rounds 3] [--duration 3] [--workers 2] [--only direct,gateway,...]`

The gateway against a fake upstream called directly (the limit) and its peers, on loopback. Prints one
markdown table per scenario, and writes them to bench/results/gateway.md with a plot in gateway.png.
"""

from __future__ import annotations

import asyncio
import resource
import sys

from bench.config import parse_args
from bench.plot import plot
from bench.processes import ServerFailed
from bench.report import render
from bench.runner import run
from bench.wrk import WrkFailed


def _raise_open_files_limit(wanted: int = 65536) -> None:
    # A thousand open streams take two sockets each in the proxy; the servers inherit this limit.
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if soft != resource.RLIM_INFINITY and soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))


def main(argv: list[str] | None = None) -> None:
    config = parse_args(argv)
    _raise_open_files_limit()
    try:
        results, meta = asyncio.run(run(config))
    except KeyboardInterrupt:
        sys.exit("bench: interrupted; every server it started is stopped")
    except asyncio.CancelledError:
        sys.exit("bench: terminated; every server it started is stopped")
    except (ServerFailed, WrkFailed) as exc:
        sys.exit(f"bench: {exc}")
    text = render(results, meta)
    print("\n" + text)
    config.results_dir.mkdir(parents=True, exist_ok=True)
    (config.results_dir / "gateway.md").write_text(text)
    why_not = plot(results, config.results_dir / "gateway.png")
    print(f"written to {config.results_dir / 'gateway.md'}"
          + (f" ({why_not})" if why_not else f" and {config.results_dir / 'gateway.png'}"))


if __name__ == "__main__":
    main()
