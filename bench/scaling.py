"""`python -m bench.scaling` (`make bench-scaling`): what the gateway costs and what a second backend buys.

Four setups, the same fixed requests in each (temperature 0, so every setup generates the same tokens):

  1. one backend, called directly;
  2. the same backend behind the gateway          -> the gateway's overhead;
  3. two backends behind the gateway              -> the scaling of a second backend;
  4. two backends, the client splitting the load  -> the best two backends can do on this machine.

A CPU control comes first: how much faster two busy processes get through work than one, here and now (a
virtual machine's two cores may be shared with its neighbours, or with other work).

Every backend is llama-cpp-python's server (one request at a time) with the same number of threads (1 by
default: on a 2-core machine that is the fair comparison, one core per backend). The gateways run as their own
processes, as deployed; every server's output goes to a file, so no reader in this process competes with them
for the cores. Everything starts first, then the setups take turns, round after round, so that whatever else
the machine is doing weighs on all of them alike; each setup's figures pool its rounds. Printed as a markdown
table and written to bench/results/scaling.md.

    python -m bench.scaling [--rounds 3] [--requests 12] [--concurrency 4] [--max-tokens 64] [--threads 1]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime
import importlib.metadata
import math
import os
import platform
import sys
import tempfile
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import aiohttp
from openai import AsyncOpenAI

from bench.llamacpp import as_server, cpu_model, cpu_parallelism
from bench.processes import HOST, ServerFailed, Servers, free_port
from scripts import services
from scripts.services import MODEL

RESULTS = Path(__file__).parent / "results" / "scaling.md"
# Fixed, varied prompts that make the model write until max_tokens rather than stop early.
PROMPTS = (
    "Write a short story about a lighthouse keeper and a storm.",
    "Explain how a bicycle works to a ten-year-old.",
    "Describe a walk through a busy market in the morning.",
    "Write a letter to a friend about learning to cook.",
    "Explain why the sky is blue in simple words.",
    "Describe the life of a honeybee from spring to autumn.",
    "Write a short story about a robot who learns to paint.",
    "Explain how trains run on time across a whole country.",
)


@dataclass
class Result:
    setup: str
    backends: int
    urls: tuple[str, ...]  # several: the client itself splits the requests evenly over them
    requests: int = 0
    completion_tokens: int = 0
    wall_seconds: float = 0.0
    latencies: list[float] = field(default_factory=list)

    @property
    def tokens_per_second(self) -> float:
        return self.completion_tokens / self.wall_seconds

    def latency_percentile(self, p: float) -> float:
        """Nearest rank: the smallest latency with at least p% of the requests at or below it."""
        ordered = sorted(self.latencies)
        return ordered[max(0, math.ceil(p / 100 * len(ordered)) - 1)]


async def run_load(result: Result, *, requests: int, concurrency: int, max_tokens: int, timeout: float,
                   record: bool = True) -> None:
    """Send `requests` chat completions to the setup, at most `concurrency` at a time, and add them up."""
    share = math.ceil(concurrency / len(result.urls))
    gates = [asyncio.Semaphore(share) for _ in result.urls]
    latencies: list[float] = []
    tokens = 0

    async def one(client: AsyncOpenAI, gate: asyncio.Semaphore, prompt: str) -> None:
        nonlocal tokens
        async with gate:
            started = time.perf_counter()
            completion = await client.chat.completions.create(
                model=MODEL,
                messages=[{"role": "user", "content": prompt}],
                max_tokens=max_tokens,
                temperature=0,
            )
            latencies.append(time.perf_counter() - started)
            tokens += completion.usage.completion_tokens if completion.usage else 0

    async with contextlib.AsyncExitStack() as stack:
        clients = [
            await stack.enter_async_context(
                AsyncOpenAI(base_url=url, api_key="bench", max_retries=0, timeout=timeout)
            )
            for url in result.urls
        ]
        n = len(clients)
        started = time.perf_counter()
        async with asyncio.timeout(timeout):
            await asyncio.gather(*(one(clients[i % n], gates[i % n], PROMPTS[i % len(PROMPTS)])
                                   for i in range(requests)))
        wall = time.perf_counter() - started
    if record:
        result.requests += requests
        result.completion_tokens += tokens
        result.wall_seconds += wall
        result.latencies += latencies


async def run(args: argparse.Namespace, log_dir: Path) -> list[Result]:
    """Start everything, then run the setups in turns; the servers are stopped however this ends."""
    llama = [services.llama_backend(f"llama-{i}", host=HOST, port=free_port(), threads=args.threads)
             for i in (1, 2)]
    # Two gateways, one in front of llama-1 alone, one in front of both; an idle backend costs no CPU.
    gateways = [
        replace(services.gateway(host=HOST, port=free_port(), backends=llama[:1]), name="gateway-1"),
        replace(services.gateway(host=HOST, port=free_port(), backends=llama), name="gateway-2"),
    ]
    results = [
        Result("1 backend, direct", 1, (f"{llama[0].base_url}/v1",)),
        Result("1 backend, via gateway", 1, (f"{gateways[0].base_url}/v1",)),
        Result("2 backends, via gateway", 2, (f"{gateways[1].base_url}/v1",)),
        # The control: what two backends give at best on this machine, the client splitting the load itself.
        Result("2 backends, direct (client splits)", 2, tuple(f"{b.base_url}/v1" for b in llama)),
    ]
    async with Servers() as servers, aiohttp.ClientSession() as session:
        for stage in (llama, gateways):  # the gateways' first health checks find the backends up
            print("==> starting " + ", ".join(s.name for s in stage), flush=True)
            failures = await servers.start([as_server(s, log_dir) for s in stage], session)
            if failures:
                raise ServerFailed("\n".join(str(f) for f in failures.values()))
        print("==> warming up", flush=True)
        for result in results:
            # Not counted: first requests page the model in and fill each backend's caches.
            await run_load(result, requests=2 * result.backends, concurrency=2 * result.backends,
                           max_tokens=8, timeout=args.timeout, record=False)
        for round_number in range(1, args.rounds + 1):
            for result in results:
                await run_load(result, requests=args.requests, concurrency=args.concurrency,
                               max_tokens=args.max_tokens, timeout=args.timeout)
            print(f"==> round {round_number}/{args.rounds}: " + ", ".join(
                f"{r.setup} {r.tokens_per_second:.1f} tokens/s" for r in results), flush=True)
    return results


def verdict(ok: bool) -> str:
    return "meets the target" if ok else "MISSES the target"


def report(results: list[Result], args: argparse.Namespace, cpu_scaling: list[float]) -> str:
    direct, via_gateway, two, two_direct = results
    overhead = 1 - via_gateway.tokens_per_second / direct.tokens_per_second
    scaling = two.tokens_per_second / via_gateway.tokens_per_second
    ceiling = two_direct.tokens_per_second / direct.tokens_per_second
    rows = [
        ("| setup | backends × threads | tokens/s | p50 latency | p95 latency | completion tokens "
        "| wall time |"),
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        rows.append(
            f"| {r.setup} | {r.backends} × {args.threads} | {r.tokens_per_second:.1f} "
            f"| {r.latency_percentile(50):.2f} s | {r.latency_percentile(95):.2f} s "
            f"| {r.completion_tokens} | {r.wall_seconds:.1f} s |"
        )
    return "\n".join([
        "# llama.cpp backends: gateway overhead and scaling",
        "",
        (f"Measured {datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M} UTC with "
        f"`python -m bench.scaling --rounds {args.rounds} --requests {args.requests} "
        f"--concurrency {args.concurrency} --max-tokens {args.max_tokens} --threads {args.threads}`."),
        "",
        (f"Machine: {os.cpu_count()} cores ({cpu_model()}); model {MODEL} (Q4_1 GGUF); "
        f"llama-cpp-python {importlib.metadata.version('llama-cpp-python')}; "
        f"Python {platform.python_version()}. Every backend has {args.threads} thread(s) and serves one "
        f"request at a time; the benchmark client and the gateway share the same cores. Non-streaming chat "
        f"completions, temperature 0, {len(PROMPTS)} fixed prompts in turn; the setups take turns for "
        f"{args.rounds} round(s) of {args.requests} requests, {args.concurrency} at a time, after an "
        f"uncounted warm-up."),
        "",
        *rows,
        "",
        (f"- Gateway overhead (tokens/s lost, 1 backend via gateway vs direct): {overhead:+.1%} "
        f"— {verdict(overhead < 0.02)} (< 2%); p50 latency "
        f"{1000 * (via_gateway.latency_percentile(50) - direct.latency_percentile(50)):+.0f} ms."),
        (f"- Scaling (2 backends vs 1, both via gateway): {scaling:.2f}× "
        f"— {verdict(scaling >= 1.8)} (≥ 1.8×)."),
        (f"- What this machine allowed: two backends called directly gave {ceiling:.2f}× one; two busy "
        f"processes got through {' and '.join(f'{c:.2f}×' for c in cpu_scaling)} the work of one, before "
        f"and after the run (2.00× on two free cores). The gateway "
        f"reached {two.tokens_per_second / two_direct.tokens_per_second:.0%} of the direct two-backend "
        "figure."),
        "",
    ])


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.scaling", description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3, help="turns of every setup (default: %(default)s)")
    parser.add_argument("--requests", type=int, default=12, help="per setup and round (default: %(default)s)")
    parser.add_argument("--concurrency", type=int, default=4, help="in flight at once (default: %(default)s)")
    parser.add_argument("--max-tokens", type=int, default=64, help="per request (default: %(default)s)")
    parser.add_argument("--threads", type=int, default=1, help="per backend (default: %(default)s)")
    parser.add_argument("--timeout", type=float, default=300, help="seconds per batch (default: %(default)s)")
    args = parser.parse_args(argv)
    for name in ("rounds", "requests", "concurrency", "max_tokens", "threads"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1")
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    # Before and after: the machine's load can change during the run.
    cpu_scaling = [cpu_parallelism()]
    print(f"==> CPU control: two busy processes do {cpu_scaling[0]:.2f}× the work of one", flush=True)
    with tempfile.TemporaryDirectory(prefix="bench-llamacpp-") as log_dir:
        try:
            results = asyncio.run(run(args, Path(log_dir)))
        except ServerFailed as e:
            print(f"bench: {e}", file=sys.stderr)
            sys.exit(1)
    cpu_scaling.append(cpu_parallelism())
    text = report(results, args, cpu_scaling)
    print("\n" + text)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(text)
    print(f"written to {RESULTS}")


if __name__ == "__main__":
    main()
