"""``python -m bench.shared_state_cpu [--rounds 3] [--seconds 5] [--baseline /path/to/older/checkout]``

What shared routing state costs a gateway in front of ``max_concurrency`` backends, in CPU per request as well as
in wall time. On two cores shared with other work, latency and req/s move with the neighbours' load; the CPU
seconds a process spent per request it served (from /proc) move much less, so they tell a real change from noise.

Variants, each the gateway of ``make bench``'s -capped targets (max_concurrency 64 on both of two fake upstreams,
log level info), taking turns round after round:
  capped          routing state per process (no Redis)
  redis-capped    GATEWAY_STATE_URL set to a redis-server of its own (bench/redis_gateway.py)
  baseline        --baseline: redis-capped run from another checkout (the code before a change)

Per variant and concurrency (1 and 32, wrk): p50, req/s, and CPU µs per request of the gateway and of
redis-server. Medians over rounds.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import os
import statistics
import tempfile
from pathlib import Path

import aiohttp

from bench.processes import HOST, Server, Servers, free_port, session_pids
from bench.scenarios import chat_body
from bench.stage import fake_server
from bench.targets import CAPPED, CHAT_PATH, Gateway
from bench.wrk import lua_script, run_wrk

CONCURRENCY = (1, 32)
TICK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pids: list[int]) -> dict[str, float]:
    """CPU seconds (user + system) spent so far, summed by command name (``redis-server``, ``python``...)."""
    spent: dict[str, float] = {}
    for pid in pids:
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            continue
        name = stat[stat.index("(") + 1: stat.rindex(")")]
        fields = stat[stat.rindex(")") + 2:].split()
        spent[name] = spent.get(name, 0.0) + (int(fields[11]) + int(fields[12])) / TICK
    return spent


def gateway_server(variant: str, upstreams: list[str], workdir: Path, baseline: Path | None) -> Server:
    target = Gateway(variant, "", shared_state=variant != "capped", max_concurrency=CAPPED)
    server = target.server(upstreams, free_port(), workdir)
    return dataclasses.replace(server, cwd=baseline) if variant == "baseline" else server


async def measure(variant: str, upstreams: list[str], workdir: Path, script: Path, seconds: int,
                  baseline: Path | None) -> dict[int, tuple[float, float, float, float]]:
    """concurrency → (p50 s, req/s, gateway CPU µs per request, redis-server CPU µs per request)."""
    out = {}
    async with Servers() as servers, aiohttp.ClientSession() as session:
        server = gateway_server(variant, upstreams, workdir, baseline)
        failed = await servers.start([server], session)
        if failed:
            raise SystemExit(str(failed[server.name]))
        url = server.base_url + CHAT_PATH
        await run_wrk(url, script=script, connections=32, duration=1, timeout=10)  # warm up
        for concurrency in CONCURRENCY:
            before = cpu_seconds(session_pids(server.pid))
            result = await run_wrk(url, script=script, connections=concurrency, duration=seconds, timeout=10)
            after = cpu_seconds(session_pids(server.pid))
            spent = {name: after[name] - before.get(name, 0.0) for name in after}
            redis = spent.pop("redis-server", 0.0)
            per = 1e6 / max(result.successes, 1)
            out[concurrency] = (result.latency[50], result.requests_per_second, sum(spent.values()) * per,
                                redis * per)
    return out


async def main(rounds: int, seconds: int, baseline: Path | None) -> None:
    variants = ["capped", "redis-capped", *(["baseline"] if baseline else [])]
    samples: dict[str, list[dict[int, tuple[float, float, float, float]]]] = {v: [] for v in variants}
    with tempfile.TemporaryDirectory(prefix="bench-shared-cpu-") as tmp:
        workdir = Path(tmp)
        script = workdir / "chat.lua"
        script.write_text(lua_script(chat_body(stream=False, max_tokens=16), {"Content-Type": "application/json"}))
        fakes = [fake_server(f"up{i}", [], workdir) for i in range(2)]
        async with Servers() as servers, aiohttp.ClientSession() as session:
            failed = await servers.start(fakes, session)
            if failed:
                raise SystemExit(str(failed))
            upstreams = [f"http://{HOST}:{fake.port}" for fake in fakes]
            for index in range(rounds):
                order = variants[index % len(variants):] + variants[:index % len(variants)]
                for variant in order:
                    samples[variant].append(await measure(variant, upstreams, workdir, script, seconds, baseline))
                    print(f"round {index + 1}: {variant} {samples[variant][-1]}", flush=True)
    print("\n| variant | p50 c=1 | req/s c=32 | gateway CPU/request c=1 | c=32 | redis-server CPU/request c=1 | c=32 |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for variant in variants:
        def median(concurrency: int, field: int, runs: list[dict[int, tuple[float, float, float, float]]] =
                   samples[variant]) -> float:
            return statistics.median(run[concurrency][field] for run in runs)
        print(f"| {variant} | {median(1, 0) * 1000:.3f} ms | {median(32, 1):,.0f} | {median(1, 2):.0f} µs | "
              f"{median(32, 2):.0f} µs | {median(1, 3):.0f} µs | {median(32, 3):.0f} µs |")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="python -m bench.shared_state_cpu", description=__doc__.split("\n\n")[1])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=int, default=5, help="seconds of wrk per variant and concurrency")
    parser.add_argument("--baseline", type=Path, help="another checkout whose redis-capped gateway to compare")
    args = parser.parse_args()
    asyncio.run(main(args.rounds, args.seconds, args.baseline))
