"""What OpenTelemetry costs the gateway per request, at concurrency 1: latency percentiles side by side.

    python -m bench.telemetry_overhead [--requests 2000] [--rounds 3] [--baseline /path/to/older/checkout]

Variants, each in its own process, rounds interleaved so that a busy machine hurts them alike:
  off       telemetry=None, as deployed without APPLICATIONINSIGHTS_CONNECTION_STRING
  on        spans and metrics built and kept by the OpenTelemetry SDK (in-memory exporter): the work the
            Application Insights path does before its batch exporter ships anything
  baseline  --baseline: the same `off` run against another checkout's gateway (e.g. the commit before
            gateway/telemetry.py), to see the cost of the hooks themselves

One client, one fake upstream and the gateway share one event loop on loopback: the numbers are for comparing
variants, not absolute latencies (bench/__main__.py measures those with wrk).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BODY = {"model": "fake-model", "messages": [{"role": "user", "content": "Hello"}], "max_tokens": 8}


async def measure(variant: str, requests: int) -> list[float]:
    import aiohttp
    from aiohttp import web

    from backends.fake import FakeUpstream
    from gateway.app import create_app
    from gateway.server import GatewayRunner
    from gateway.settings import GatewaySettings

    telemetry = None
    if variant == "on":
        from opentelemetry.sdk.metrics import MeterProvider
        from opentelemetry.sdk.metrics.export import InMemoryMetricReader
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import SimpleSpanProcessor
        from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

        from gateway.telemetry import Telemetry

        tracer_provider = TracerProvider()
        tracer_provider.add_span_processor(SimpleSpanProcessor(InMemorySpanExporter()))
        meter = MeterProvider(metric_readers=[InMemoryMetricReader()]).get_meter("bench")
        telemetry = Telemetry(tracer_provider.get_tracer("bench"), meter)

    upstream = FakeUpstream(name="a")
    async with upstream.serve():
        settings = GatewaySettings(backends=[{"name": "a", "url": upstream.openai_url}], log_level="warning")
        extra = {"telemetry": telemetry} if telemetry is not None else {}
        app = create_app(settings, **extra)
        runner = GatewayRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        host, port = runner.addresses[0][:2]
        url = f"http://{host}:{port}/v1/chat/completions"
        timings = []
        async with aiohttp.ClientSession() as session:
            for i in range(requests + 200):  # the first 200 warm up
                started = time.perf_counter()
                async with session.post(url, json=BODY, headers={"traceparent": f"00-{i + 1:032x}-{i + 1:016x}-01"}) as r:
                    await r.read()
                    assert r.status == 200, r.status
                if i >= 200:
                    timings.append(time.perf_counter() - started)
        await runner.cleanup()
    return timings


def run_variant(variant: str, requests: int, pythonpath: Path) -> list[float]:
    env = {**os.environ, "PYTHONPATH": f"{pythonpath}{os.pathsep}{REPO / 'chat-client'}"}
    env.pop("APPLICATIONINSIGHTS_CONNECTION_STRING", None)
    code = (
        "import asyncio, json, sys; from bench.telemetry_overhead import measure; "
        f"print(json.dumps(asyncio.run(measure({variant!r}, {requests}))))"
    )
    # The benchmark module itself comes from this checkout, the gateway from `pythonpath`.
    env["PYTHONPATH"] += os.pathsep + str(REPO)
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--baseline", type=Path, help="another checkout whose gateway runs the `off` variant")
    args = parser.parse_args()
    variants = {"off": REPO, "on": REPO}
    if args.baseline:
        variants = {"baseline": args.baseline, **variants}
    timings: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(args.rounds):
        for name, path in variants.items():
            timings[name] += run_variant("on" if name == "on" else "off", args.requests, path)
    print(f"\nconcurrency 1, {args.rounds} × {args.requests} requests per variant (µs)\n")
    print("| variant | p50 | p90 | p99 | mean |")
    print("|---|---:|---:|---:|---:|")
    for name, values in timings.items():
        q = statistics.quantiles(values, n=100)
        print(f"| {name} | {q[49] * 1e6:.0f} | {q[89] * 1e6:.0f} | {q[98] * 1e6:.0f} | {statistics.fmean(values) * 1e6:.0f} |")


if __name__ == "__main__":
    main()
