"""Instructions per proxied request, counted by callgrind: a cost the machine's load cannot skew.

    python -m bench.instructions                          # this tree's gateway, at c=1 and c=32
    python -m bench.instructions --tree old=/path/to/old  # and another checkout's gateway, in turns

Wall-clock benchmarks on a shared 2-core machine move by ±5% from run to run; the instructions the gateway
executes per request move by well under 1%, whatever else runs. Each measurement starts the gateway under
``valgrind --tool=callgrind`` in front of two fake upstreams, sends warm-up requests, zeroes the counters
(``callgrind_control -z``), sends the counted requests, and dumps the counters (``callgrind_control -d``).
Trees take turns round by round, so a comparison is made within one run. A tree is any checkout whose
``gateway/`` package runs with this virtual environment (the fakes and the load are always this tree's).
"""

from __future__ import annotations

import argparse
import asyncio
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import orjson

from bench.processes import HOST, Server, free_port

REPO = Path(__file__).resolve().parents[1]
_BODY = orjson.dumps({"model": "fake-model", "messages": [{"role": "user", "content": "hi"}]})
_REQUEST = (
    b"POST /v1/chat/completions HTTP/1.1\r\nHost: gateway\r\nContent-Type: application/json\r\n"
    b"Content-Length: %d\r\n\r\n%s" % (len(_BODY), _BODY)
)
_TOTALS = re.compile(rb"^totals:\s+(\d+)", re.MULTILINE)


@dataclass(frozen=True)
class Measurement:
    tree: str
    concurrency: int
    requests: int
    instructions: int

    @property
    def per_request(self) -> float:
        return self.instructions / self.requests


async def _load(port: int, requests: int, concurrency: int) -> None:
    """``requests`` non-streamed chat completions over ``concurrency`` keep-alive connections, each answer
    read whole and checked to be a 200."""

    async def connection(count: int) -> None:
        reader, writer = await asyncio.open_connection(HOST, port)
        try:
            for _ in range(count):
                writer.write(_REQUEST)
                head = await reader.readuntil(b"\r\n\r\n")
                if not head.startswith(b"HTTP/1.1 200"):
                    raise RuntimeError(f"the gateway answered {head.splitlines()[0]!r}")
                length = re.search(rb"(?im)^content-length:\s*(\d+)", head)
                if length is None:
                    raise RuntimeError("an answer without Content-Length")
                await reader.readexactly(int(length.group(1)))
        finally:
            writer.close()

    share, rest = divmod(requests, concurrency)
    await asyncio.gather(*(connection(share + (i < rest)) for i in range(concurrency)))


def _control(command: str, pid: int) -> None:
    subprocess.run(["callgrind_control", command, str(pid)], check=True, capture_output=True, timeout=60)


async def _measure(tree: str, path: Path, upstreams: list[str], concurrency: int, requests: int, warmup: int,
                   workdir: Path) -> Measurement:
    port = free_port()
    out = workdir / f"callgrind.{tree}.{concurrency}.{time.monotonic_ns()}"
    backends = [{"name": f"up{i}", "url": f"{url}/v1"} for i, url in enumerate(upstreams)]
    gateway = Server(
        name=f"gateway ({tree})",
        argv=["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}.%p", sys.executable, "-m", "gateway"],
        port=port,
        ready_path="/readyz",
        log_path=workdir / f"gateway.{tree}.log",
        env={"GATEWAY_HOST": HOST, "GATEWAY_PORT": str(port), "GATEWAY_BACKENDS": orjson.dumps(backends).decode(),
             "GATEWAY_LOG_LEVEL": "info", "PYTHONPATH": str(path)},
        private_prefix="GATEWAY_",
        cwd=path,
        start_timeout=180,  # Python under valgrind starts some 50 times slower
    )
    gateway.start()
    try:
        async with aiohttp.ClientSession() as session:
            await gateway.wait_ready(session)
        await _load(port, warmup, concurrency)
        _control("-z", gateway.pid)
        await _load(port, requests, concurrency)
        _control("-d", gateway.pid)
    finally:
        gateway.signal(signal.SIGTERM)
        if gateway.process is not None:
            gateway.process.wait(timeout=60)
    # The dump asked for is the one numbered .1; the one written at exit (shutdown) is not counted.
    dumps = sorted(workdir.glob(f"{out.name}.*.1"))
    if not dumps:
        raise RuntimeError(f"callgrind wrote no dump for {tree}; see {gateway.log_path}")
    totals = _TOTALS.search(dumps[-1].read_bytes())
    if totals is None:
        raise RuntimeError(f"no totals in {dumps[-1]}")
    return Measurement(tree, concurrency, requests, int(totals.group(1)))


async def run(trees: dict[str, Path], concurrencies: list[int], requests: int, warmup: int, rounds: int,
              say: Callable[[str], None] = print) -> list[Measurement]:
    missing = [tool for tool in ("valgrind", "callgrind_control") if shutil.which(tool) is None]
    if missing:
        raise SystemExit(f"bench.instructions needs {' and '.join(missing)} (Debian: valgrind)")
    results: list[Measurement] = []
    with tempfile.TemporaryDirectory(prefix="bench-instructions-") as tmp:
        workdir = Path(tmp)
        fakes = [
            Server(name=f"fake{i}", argv=[sys.executable, "-m", "backends.fake", "--port", str(port)], port=port,
                   ready_path="/health", log_path=workdir / f"fake{i}.log", cwd=REPO)
            for i, port in enumerate((free_port(), free_port()))
        ]
        for fake in fakes:
            fake.start()
        try:
            async with aiohttp.ClientSession() as session:
                for fake in fakes:
                    await fake.wait_ready(session)
            upstreams = [fake.base_url for fake in fakes]
            for round_ in range(1, rounds + 1):
                for concurrency in concurrencies:
                    count = requests * (2 if concurrency > 1 else 1)
                    for tree, path in trees.items():
                        found = await _measure(tree, path, upstreams, concurrency, count, warmup, workdir)
                        say(f"round {round_}: {tree}, c={concurrency}: {found.per_request / 1000:.1f}k per request")
                        results.append(found)
        finally:
            for fake in fakes:
                fake.signal(signal.SIGTERM)
    return results


def report(results: list[Measurement], trees: dict[str, Path], concurrencies: list[int]) -> str:
    lines = ["| requests at | " + " | ".join(trees) + " |", "|---|" + "---:|" * len(trees)]
    for concurrency in concurrencies:
        cells = []
        for tree in trees:
            runs = [m for m in results if m.tree == tree and m.concurrency == concurrency]
            cells.append(" / ".join(f"{m.per_request / 1000:.1f}k" for m in runs))
        count = next(m.requests for m in results if m.concurrency == concurrency)
        lines.append(f"| c={concurrency} ({count:,} requests per run) | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.instructions", description=__doc__.split("\n\n")[0])
    parser.add_argument("--tree", action="append", default=[], metavar="NAME=PATH",
                        help="another checkout whose gateway/ to measure beside this one's (repeatable)")
    parser.add_argument("--concurrency", default="1,32", help="comma-separated (default 1,32)")
    parser.add_argument("--requests", type=int, default=800, help="counted per run at c=1; twice that above")
    parser.add_argument("--warmup", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args(argv)
    trees = {"this tree": REPO}
    for spec in args.tree:
        name, _, path = spec.partition("=")
        if not path or not (Path(path) / "gateway" / "__main__.py").is_file():
            parser.error(f"--tree {spec!r}: expected NAME=PATH to a checkout with gateway/__main__.py")
        trees[name] = Path(path).resolve()
    concurrencies = [int(c) for c in args.concurrency.split(",")]
    results = asyncio.run(run(trees, concurrencies, args.requests, args.warmup, args.rounds))
    print()
    print(report(results, trees, concurrencies))


if __name__ == "__main__":
    main()
