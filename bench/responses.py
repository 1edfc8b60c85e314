"""`python -m bench.responses`: what translating a Responses request costs, against the same request served
natively.

One fake upstream process answers both APIs with the same reply (``--tokens`` words). One gateway process has
two backends on that same upstream: ``native`` (serves the Responses API: the request and the answer pass
through) and ``translated`` (chat completions only: the gateway rewrites the request as a chat completion and
the answer, or every stream event, back into the Responses API). Requests name the backend by model. The
upstream called directly gives the floor for each API.

One request at a time (c=1: latency, not throughput), the targets taking turns request by request so machine
noise weighs on all alike. Non-streamed: the whole answer; streamed: the whole stream (and the first text
delta). Printed as a markdown table and written to bench/results/responses.md.

    python -m bench.responses [--requests 400] [--tokens 64] [--warmup 50]
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import json
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import aiohttp

from bench.processes import HOST, Server, ServerFailed, Servers, free_port

RESULTS = Path(__file__).parent / "results" / "responses.md"
ROOT = Path(__file__).resolve().parents[1]
INPUT = [{"role": "system", "content": "You are a helpful assistant."},
         {"role": "user", "content": "Tell me about the weather in Paris in spring, briefly."}]
DELTA = b"response.output_text.delta"


async def one(session: aiohttp.ClientSession, url: str, body: bytes, stream: bool) -> tuple[float, float | None]:
    """(seconds to the whole answer, seconds to the first text delta or None)."""
    started = time.perf_counter()
    first: float | None = None
    async with session.post(url, data=body, headers={"Content-Type": "application/json"}) as response:
        if response.status != 200:
            raise RuntimeError(f"{url} answered {response.status}: {await response.text()}")
        if not stream:
            await response.read()
        else:
            async for chunk in response.content.iter_any():
                if first is None and (DELTA in chunk or b'"delta":{"content"' in chunk or b'"content":"' in chunk):
                    first = time.perf_counter() - started
    return time.perf_counter() - started, first


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


async def run(requests: int, tokens: int, warmup: int) -> str:
    upstream_port, gateway_port = free_port(), free_port()
    logs = Path(tempfile.mkdtemp(prefix="bench-responses-"))
    upstream = Server("fake", [sys.executable, "-m", "backends.fake", "--port", str(upstream_port),
                               "--tokens", str(tokens)],
                      upstream_port, "/health", logs / "fake.log", cwd=ROOT)
    base = f"http://{HOST}:{upstream_port}/v1"
    backends = [
        {"name": "native", "url": base, "models": ["native"]},
        {"name": "translated", "url": base, "models": ["translated"], "apis": ["chat"]},
    ]
    gateway = Server("gateway", [sys.executable, "-m", "gateway"], gateway_port, "/readyz", logs / "gateway.log",
                     env={"GATEWAY_BACKENDS": json.dumps(backends), "GATEWAY_PORT": str(gateway_port),
                          "GATEWAY_LOG_LEVEL": "warning"},
                     private_prefix="GATEWAY_", cwd=ROOT)
    gw = f"http://{HOST}:{gateway_port}/v1"

    def responses(model: str, stream: bool) -> bytes:
        return json.dumps({"model": model, "input": INPUT, "stream": stream, "store": False}).encode()

    def chat(stream: bool) -> bytes:
        return json.dumps({"model": "x", "messages": INPUT, "stream": stream}).encode()

    targets: dict[str, tuple[str, bytes, bool]] = {}
    for stream in (False, True):
        kind = "stream" if stream else "whole"
        targets[f"{kind}: upstream Responses, direct"] = (f"{base}/responses", responses("x", stream), stream)
        targets[f"{kind}: upstream chat, direct"] = (f"{base}/chat/completions", chat(stream), stream)
        targets[f"{kind}: gateway, native"] = (f"{gw}/responses", responses("native", stream), stream)
        targets[f"{kind}: gateway, translated"] = (f"{gw}/responses", responses("translated", stream), stream)

    timings: dict[str, list[tuple[float, float | None]]] = {name: [] for name in targets}
    connector = aiohttp.TCPConnector(limit=4)
    async with aiohttp.ClientSession(connector=connector) as session, Servers() as servers:
        failures = await servers.start([upstream], session)
        failures |= await servers.start([gateway], session)
        if failures:
            raise SystemExit("\n".join(str(f) for f in failures.values()))
        calls: list[tuple[str, Callable[[], Awaitable[tuple[float, float | None]]]]] = [
            (name, lambda u=url, b=body, s=stream: one(session, u, b, s))
            for name, (url, body, stream) in targets.items()
        ]
        for _ in range(warmup):
            for _, call in calls:
                await call()
        for _ in range(requests):
            for name, call in calls:
                timings[name].append(await call())
    return report(timings, requests, tokens)


def report(timings: dict[str, list[tuple[float, float | None]]], requests: int, tokens: int) -> str:
    def ms(seconds: float) -> str:
        return f"{seconds * 1000:.2f}"

    lines = [
        f"# Responses API: translated vs native ({datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M} UTC)",
        "",
        (f"{requests} requests per row, one at a time, rows taking turns; reply of {tokens} tokens; "
         f"Python {platform.python_version()}, {platform.machine()}."),
        "",
        "| target | p50 ms | p90 ms | mean ms | first delta p50 ms |",
        "|---|---|---|---|---|",
    ]
    p50: dict[str, float] = {}
    for name, samples in timings.items():
        totals = [total for total, _ in samples]
        firsts = [first for _, first in samples if first is not None]
        p50[name] = statistics.median(totals)
        lines.append(f"| {name} | {ms(p50[name])} | {ms(percentile(totals, 0.9))} | "
                     f"{ms(statistics.fmean(totals))} | {ms(statistics.median(firsts)) if firsts else '—'} |")
    note = ("The gateway's own share is its p50 minus the p50 of the upstream API it calls (the fake renders "
            "its two APIs at different speeds, so the raw difference mixes in the upstream's).")
    lines += ["", note, ""]
    for kind in ("whole", "stream"):
        native, translated = p50[f"{kind}: gateway, native"], p50[f"{kind}: gateway, translated"]
        native_share = native - p50[f"{kind}: upstream Responses, direct"]
        translated_share = translated - p50[f"{kind}: upstream chat, direct"]
        lines.append(f"- {kind}: gateway's share {ms(native_share)} ms native, {ms(translated_share)} ms translated"
                     f" → translation adds **{ms(translated_share - native_share)} ms** at p50 "
                     f"(raw p50 {ms(native)} → {ms(translated)} ms).")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.responses", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=400)
    parser.add_argument("--tokens", type=int, default=64)
    parser.add_argument("--warmup", type=int, default=50)
    args = parser.parse_args()
    try:
        text = asyncio.run(run(args.requests, args.tokens, args.warmup))
    except ServerFailed as failure:
        raise SystemExit(str(failure)) from None
    print(text)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(text)


if __name__ == "__main__":
    main()
