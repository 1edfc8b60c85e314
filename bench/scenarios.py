"""The scenarios, each run over every live target of a stage in turn, and what each of them measured.

Targets take turns: round 1 runs every target once, then round 2 does the same in a rotated order, and so on,
so that a burst of noise from elsewhere on the machine hits each target alike rather than all of one target.
"""

from __future__ import annotations

import asyncio
import math
import statistics
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import aiohttp
import orjson

from bench.config import RunConfig
from bench.sse import OpenStreams, StreamTiming, sequential_streams
from bench.stage import Stage
from bench.targets import MODEL
from bench.wrk import WrkResult, lua_script, run_wrk

T = TypeVar("T")


def chat_body(*, stream: bool, max_tokens: int) -> bytes:
    return orjson.dumps({
        "model": MODEL,
        "messages": [{"role": "user", "content": "Say hello to the benchmark."}],
        "max_tokens": max_tokens,
        "stream": stream,
    })


def headers(config: RunConfig) -> dict[str, str]:
    return {"Content-Type": "application/json", "Authorization": f"Bearer {config.master_key}"}


def percentile(values: Sequence[float], p: float) -> float:
    """Nearest rank: the smallest value with at least p% of the values at or below it."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(p / 100 * len(ordered)) - 1)]


async def take_turns(
    stage: Stage, config: RunConfig, run: Callable[[str], Awaitable[T]], *, say: Callable[[str], None]
) -> dict[str, list[T]]:
    """`run` once per live target per round; each round starts one target further along the list."""
    names = [t.name for t in stage.targets]
    rounds = config.rounds
    results: dict[str, list[T]] = {name: [] for name in names}
    for round_index in range(rounds):
        shift = round_index % len(names)
        for name in [*names[shift:], *names[:shift]]:
            results[name].append(await run(name))
            await asyncio.sleep(config.pause)
        say(f"    round {round_index + 1}/{rounds} done")
    return results


async def warm_up(stage: Stage, config: RunConfig, *, stream: bool) -> dict[str, int]:
    """Requests counted nowhere: the first ones fill connection pools and run lazy imports.

    Returns the failures by target.
    """
    body = chat_body(stream=stream, max_tokens=2 if stream else 16)
    gate = asyncio.Semaphore(8)

    async def one(session: aiohttp.ClientSession, url: str) -> bool:
        async with gate:
            try:
                async with session.post(url, data=body, headers=headers(config)) as response:
                    await response.read()
                    return response.status == 200
            except (aiohttp.ClientError, TimeoutError):
                return False

    failures: dict[str, int] = {}
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60)) as session:
        for target in stage.targets:
            url = stage.chat_url(target.name)
            outcomes = await asyncio.gather(*(one(session, url) for _ in range(config.warmup_requests)))
            failures[target.name] = outcomes.count(False)
    return failures


# -- HTTP load (wrk) ----------------------------------------------------------------------------------------


@dataclass
class LoadResult:
    concurrency: int
    runs: dict[str, list[WrkResult]]

    def median(self, target: str, value: Callable[[WrkResult], float]) -> float:
        return statistics.median(value(run) for run in self.runs[target])

    def p50(self, target: str) -> float:
        return self.median(target, lambda r: r.latency[50])

    def p99(self, target: str) -> float:
        return self.median(target, lambda r: r.latency[99])

    def rps(self, target: str) -> float:
        return self.median(target, lambda r: r.requests_per_second)

    def errors(self, target: str) -> int:
        return sum(run.errors for run in self.runs[target])

    def requests(self, target: str) -> int:
        return sum(run.requests for run in self.runs[target])


def write_lua(config: RunConfig, directory: Path) -> Path:
    script = directory / "chat.lua"
    script.write_text(lua_script(chat_body(stream=False, max_tokens=16), headers(config)))
    return script


async def load(stage: Stage, config: RunConfig, concurrency: int, script: Path, *,
               say: Callable[[str], None]) -> LoadResult:
    say(f"==> load at concurrency {concurrency}: {config.rounds} × {config.duration}s per target")

    async def run(name: str) -> WrkResult:
        return await run_wrk(stage.chat_url(name), script=script, connections=concurrency,
                             duration=config.duration, timeout=config.wrk_timeout)

    runs = await take_turns(stage, config, run, say=say)
    return LoadResult(concurrency, runs)


# -- streaming -----------------------------------------------------------------------------------------------


@dataclass
class StreamingResult:
    tokens: int
    token_delay: float
    runs: dict[str, list[list[StreamTiming]]]
    failures: dict[str, int]

    def timings(self, target: str) -> list[StreamTiming]:
        return [timing for run in self.runs[target] for timing in run]

    def ttft(self, target: str, p: float) -> float:
        return percentile([t.ttft for t in self.timings(target)], p)

    def gaps(self, target: str) -> list[float]:
        return [gap for t in self.timings(target) for gap in t.gaps]

    def mean_gap(self, target: str) -> float:
        return statistics.fmean(self.gaps(target))

    def gap_p99(self, target: str) -> float:
        return percentile(self.gaps(target), 99)


async def streaming(stage: Stage, config: RunConfig, *, say: Callable[[str], None]) -> StreamingResult:
    seconds = config.stream_seconds or config.duration
    say(f"==> streaming: {config.stream_tokens} chunks {config.token_delay * 1000:g} ms apart, one stream "
        f"at a time, {config.rounds} × {seconds:g}s per target")
    body = chat_body(stream=True, max_tokens=config.stream_tokens)
    failures: dict[str, int] = {}

    async def run(name: str) -> list[StreamTiming]:
        timings, failed = await sequential_streams(stage.chat_url(name), body, headers(config),
                                                   duration=seconds)
        failures[name] = failures.get(name, 0) + failed
        return timings

    runs = await take_turns(stage, config, run, say=say)
    return StreamingResult(config.stream_tokens, config.token_delay, runs, failures)


# -- memory with many open streams ----------------------------------------------------------------------


@dataclass
class MemorySample:
    baseline: int  # bytes, after warm-up, before any stream is opened
    loaded: int  # bytes, at the plateau with the streams open
    peak: int
    opened: int  # streams that got their first event
    open_at_measure: int  # of those, still open when the plateau was measured
    failed: int  # answered with an error or cut before their first event
    pending: int  # neither open nor failed when the time to open them was up
    upstream_in_flight: int  # chat requests the fakes were serving at the plateau
    processes: int
    errors: list[str] = field(default_factory=list)


@dataclass
class MemoryResult:
    streams: int
    open_timeout: float  # seconds allowed to open them all
    samples: dict[str, MemorySample]


async def _plateau(read: Callable[[], int], *, interval: float, timeout: float) -> tuple[int, int]:
    """Sample every `interval` s until four samples in a row are within 1% (or `timeout`); (last, peak)."""
    samples = [read()]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        await asyncio.sleep(interval)
        samples.append(read())
        recent = samples[-4:]
        if len(recent) == 4 and max(recent) - min(recent) <= 0.01 * max(recent):
            break
    return samples[-1], max(samples)


async def memory(stage: Stage, config: RunConfig, *, say: Callable[[str], None]) -> MemoryResult:
    say(f"==> memory: {config.open_streams} streams held open through each proxy")
    body = chat_body(stream=True, max_tokens=config.slow_tokens)
    samples: dict[str, MemorySample] = {}
    warm_failures = await warm_up(stage, config, stream=False)
    for target in stage.targets:
        server = stage.servers.get(target.name)
        if server is None:
            continue  # direct: no proxy process to measure
        await asyncio.sleep(config.sample_interval)
        baseline = server.rss_bytes()
        streams = OpenStreams(stage.chat_url(target.name), body, headers(config), count=config.open_streams)
        try:
            await streams.open(config.open_timeout)
            loaded, peak = await _plateau(server.rss_bytes, interval=config.sample_interval,
                                         timeout=config.plateau_timeout)
            open_now = streams.open_now
            in_flight = await stage.upstream_in_flight()
        finally:
            await streams.close()
        samples[target.name] = MemorySample(
            baseline=baseline, loaded=loaded, peak=peak, opened=streams.opened, open_at_measure=open_now,
            failed=streams.failed, pending=config.open_streams - streams.opened - streams.failed,
            upstream_in_flight=in_flight, processes=len(server.pids()),
            errors=streams.errors + ([f"{warm_failures[target.name]} warm-up requests failed"]
                                     if warm_failures.get(target.name) else []),
        )
        say(f"    {target.name}: {open_now} open, RSS {baseline / 1e6:.1f} → {loaded / 1e6:.1f} MB")
        await _drained(stage, timeout=15)
    return MemoryResult(config.open_streams, config.open_timeout, samples)


async def _drained(stage: Stage, timeout: float) -> None:
    """Wait until the fakes saw the streams go, so the next target starts from idle upstreams."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and await stage.upstream_in_flight() > 0:
        await asyncio.sleep(0.25)


# -- a throttled upstream ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ThrottledRun:
    wrk: WrkResult
    throttled_hits: int  # chat requests the throttled fake received during this run
    windows: int  # Retry-After windows the run spanned

    @property
    def success_rate(self) -> float:
        return self.wrk.successes / self.wrk.attempts if self.wrk.attempts else 0.0


@dataclass
class ThrottledResult:
    window: float  # seconds
    concurrency: int
    runs: dict[str, list[ThrottledRun]]

    def load(self) -> LoadResult:
        return LoadResult(self.concurrency, {name: [r.wrk for r in runs] for name, runs in self.runs.items()})

    def hits(self, target: str) -> int:
        return sum(r.throttled_hits for r in self.runs[target])

    def windows(self, target: str) -> int:
        return sum(r.windows for r in self.runs[target])

    def success_rate(self, target: str) -> float:
        attempts = sum(r.wrk.attempts for r in self.runs[target])
        return sum(r.wrk.successes for r in self.runs[target]) / attempts if attempts else 0.0


async def throttled(stage: Stage, config: RunConfig, script: Path, *,
                    say: Callable[[str], None]) -> ThrottledResult:
    window = config.retry_after_ms / 1000
    say(f"==> throttled: one upstream answers 429 with retry-after-ms {config.retry_after_ms}, "
        f"concurrency {config.throttled_concurrency}, {config.rounds} × {config.duration}s per target")
    throttle = {"status": 429, "headers": {"retry-after-ms": str(config.retry_after_ms)}}
    await stage.script_fake(stage.throttled, throttle)

    async def run(name: str) -> ThrottledRun:
        before = (await stage.fake_stats(stage.throttled))["chat_requests"]
        result = await run_wrk(stage.chat_url(name), script=script, connections=config.throttled_concurrency,
                               duration=config.duration, timeout=config.wrk_timeout)
        after = (await stage.fake_stats(stage.throttled))["chat_requests"]
        return ThrottledRun(result, after - before, math.ceil(result.duration / window - 1e-9))

    try:
        runs = await take_turns(stage, config, run, say=say)
    finally:
        await stage.script_fake(stage.throttled, 200)
    return ThrottledResult(window, config.throttled_concurrency, runs)


# -- everything ----------------------------------------------------------------------------------------


@dataclass
class Results:
    latency: LoadResult | None = None
    throughput: list[LoadResult] = field(default_factory=list)
    streaming: StreamingResult | None = None
    memory: MemoryResult | None = None
    throttled: ThrottledResult | None = None
    skipped: dict[str, str] = field(default_factory=dict)  # target -> why
    notes: list[str] = field(default_factory=list)
