"""One benchmark run: the stages in order, each scenario in the stage whose fakes it needs.

Stage "fast" (fakes that stream 20 chunks 10 ms apart; plain requests are answered at once): latency,
throughput, streaming, then the throttled case (one of its fakes scripted to answer 429). Stage "slow" (fakes
that send a chunk a second, so streams stay open): memory. Every process is stopped when its stage ends.
"""

from __future__ import annotations

import asyncio
import datetime
import os
import platform
import signal
import tempfile
import time
from collections.abc import Callable
from contextlib import suppress
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path

from bench import scenarios
from bench.config import RunConfig
from bench.scenarios import Results
from bench.stage import stage
from bench.targets import Target, make_targets
from bench.wrk import wrk_path, wrk_version

FAST_STAGE = ("latency", "throughput", "streaming", "throttled")


@dataclass(frozen=True)
class Meta:
    started: datetime.datetime
    wall_seconds: float
    cores: int
    cpu: str
    python: str
    aiohttp: str
    wrk: str
    load_before: tuple[float, float, float]
    load_after: tuple[float, float, float]
    targets: list[Target]
    command: str


def cpu_model() -> str:
    with suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown CPU"


async def run(config: RunConfig, say: Callable[[str], None] = print) -> tuple[Results, Meta]:
    # A SIGTERM (a CI timeout, `kill`) stops the servers as a Ctrl-C does: cancel, and `finally` cleans up.
    task = asyncio.current_task()
    assert task is not None
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, task.cancel)

    wrk_path()  # fail before starting anything when wrk is missing
    started, clock = datetime.datetime.now(datetime.UTC), time.monotonic()
    print_line = say

    def say(text: str) -> None:
        print_line(f"[{time.monotonic() - clock:6.1f}s] {text}")

    load_before = os.getloadavg()
    targets = make_targets(config.targets, workers=config.workers, master_key=config.master_key)
    results = Results(skipped={t.name: t.unavailable for t in targets if t.unavailable is not None})
    for name, why in results.skipped.items():
        say(f"==> {name} skipped: {why}")

    def live() -> list[Target]:
        return [t for t in targets if t.name not in results.skipped]

    with tempfile.TemporaryDirectory(prefix="bench-") as scratch:
        workdir = Path(scratch)
        script = scenarios.write_lua(config, workdir)
        if set(config.scenarios) & set(FAST_STAGE):
            fake_args = ["--token-delay", str(config.token_delay), "--tokens", str(config.stream_tokens)]
            async with stage("fast", live(), fake_args, workdir, say=say) as fast:
                results.skipped.update(fast.skipped)
                await _warm_up(fast, config, results, say)
                if "latency" in config.scenarios:
                    results.latency = await scenarios.load(fast, config, config.latency_concurrency, script,
                                                           say=say)
                if "throughput" in config.scenarios:
                    for concurrency in config.throughput_concurrency:
                        result = await scenarios.load(fast, config, concurrency, script, say=say)
                        results.throughput.append(result)
                if "streaming" in config.scenarios:
                    results.streaming = await scenarios.streaming(fast, config, say=say)
                if "throttled" in config.scenarios:
                    results.throttled = await scenarios.throttled(fast, config, script, say=say)
        if "memory" in config.scenarios:
            fake_args = ["--token-delay", str(config.slow_token_delay), "--tokens", str(config.slow_tokens)]
            async with stage("slow", live(), fake_args, workdir, say=say) as slow:
                results.skipped.update(slow.skipped)
                results.memory = await scenarios.memory(slow, config, say=say)

    meta = Meta(
        started=started,
        wall_seconds=time.monotonic() - clock,
        cores=os.cpu_count() or 0,
        cpu=cpu_model(),
        python=platform.python_version(),
        aiohttp=version("aiohttp"),
        wrk=await wrk_version(),
        load_before=load_before,
        load_after=os.getloadavg(),
        targets=targets,
        command=config.command,
    )
    return results, meta


async def _warm_up(fast, config: RunConfig, results: Results, say: Callable[[str], None]) -> None:
    say(f"==> warm-up: {config.warmup_requests} requests and {config.warmup_requests} streams per target, "
        "not counted")
    for stream in (False, True):
        failures = await scenarios.warm_up(fast, config, stream=stream)
        for name, failed in failures.items():
            if failed:
                kind = "streams" if stream else "requests"
                results.notes.append(f"{name}: {failed} of {config.warmup_requests} warm-up {kind} failed.")
