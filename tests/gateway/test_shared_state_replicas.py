"""Three ``python -m gateway`` processes, one Redis, fake upstreams: the replicas behave as one gateway.

The figures of issue 15, measured the way an operator would: a throttled backend hit once per Retry-After window
in total, 1-slot backends never doing two things at once, conversations staying where their cache is whichever
replica takes the turn, a SIGKILLed replica's slot coming back within the lease TTL, and Redis dying mid-run
without a single failed request.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator, Sequence
from pathlib import Path
from typing import Any

import aiohttp
import openai
import pytest

from backends.fake import FakeUpstream
from backends.fake.script import Reply, throttled_ms
from tests.gateway.redis_server import RedisServer, redis_server

REPO = Path(__file__).resolve().parents[2]
LEASE_TTL = 1.5  # seconds: small, so a dead replica's slot comes back quickly
# A pause between one client's requests, as a person's or a program's own work makes. A lease is given back,
# and a 429 published, just after the answer leaves; a next request sent by return, on two cores shared with
# other jobs, can reach Redis first and find the backend still busy (then its turn moves, by the load guard)
# or not yet known to be throttled.
THINK = 0.05


@pytest.fixture
def redis() -> Iterator[RedisServer]:
    with redis_server() as server:
        yield server


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Replica:
    def __init__(self, process: subprocess.Popen[bytes], port: int, log: Path) -> None:
        self.process = process
        self.port = port
        self.log = log
        self.client = openai.AsyncOpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="x", max_retries=0,
                                         timeout=30)

    async def chat(self, messages: list[dict[str, str]]) -> tuple[str, float]:
        """(the backend that answered, seconds it took), through the official SDK."""
        started = time.perf_counter()
        raw = await self.client.chat.completions.with_raw_response.create(model="fake-model", messages=messages)
        raw.parse()
        return raw.headers["x-gateway-backend"], time.perf_counter() - started


@contextlib.asynccontextmanager
async def replicas(
    backends: Sequence[dict[str, Any]], redis: RedisServer, tmp_path: Path, count: int = 3, **settings: str
) -> AsyncIterator[list[Replica]]:
    """``count`` gateway processes sharing ``redis``, each serving once /readyz answers."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("GATEWAY_")}
    env |= {
        "GATEWAY_BACKENDS": json.dumps(backends),
        "GATEWAY_STATE_URL": redis.url,
        "GATEWAY_STATE_LEASE_TTL": str(LEASE_TTL),
        "GATEWAY_LOG_LEVEL": "warning",
        "GATEWAY_QUEUE_TIMEOUT": "20",
        # Generous: two cores shared with other jobs must not make these tests fail open (the last one does
        # fail open, at 50 ms, on purpose).
        "GATEWAY_STATE_DEADLINE": "1",
        "PYTHONPATH": str(REPO),
    }
    env |= {f"GATEWAY_{name.upper()}": value for name, value in settings.items()}
    started: list[Replica] = []
    try:
        for index in range(count):
            port = _free_port()
            log = tmp_path / f"gateway-{index}.log"
            with log.open("wb") as out:
                process = subprocess.Popen(  # noqa: ASYNC220 - Popen only starts it; nothing here blocks on it
                    [sys.executable, "-m", "gateway"], env=env | {"GATEWAY_PORT": str(port)},
                    stdout=out, stderr=subprocess.STDOUT, cwd=REPO,
                )
            started.append(Replica(process, port, log))
        async with aiohttp.ClientSession() as session:
            for replica in started:
                deadline = time.monotonic() + 30
                while True:
                    with contextlib.suppress(aiohttp.ClientError):
                        async with session.get(f"http://127.0.0.1:{replica.port}/readyz") as response:
                            if response.status == 200:
                                break
                    assert replica.process.poll() is None, replica.log.read_text()
                    assert time.monotonic() < deadline, "a gateway did not become ready"
                    await asyncio.sleep(0.1)
        yield started
    finally:
        for replica in started:
            await replica.client.close()
            if replica.process.poll() is None:
                replica.process.terminate()
        for replica in started:
            replica.process.wait(timeout=15)


async def until(condition: Any, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "not reached in time"
        await asyncio.sleep(0.02)


def backend(name: str, upstream: FakeUpstream, **config: Any) -> dict[str, Any]:
    return {"name": name, "url": upstream.openai_url, **config}


def hi(text: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": text}]


async def test_a_throttled_backend_is_hit_once_per_window_in_total(redis, tmp_path):
    throttled = FakeUpstream(name="throttled", default=throttled_ms(5000))
    healthy = FakeUpstream(name="healthy")
    async with throttled.serve(), healthy.serve():
        upstreams = [backend("throttled", throttled), backend("healthy", healthy)]
        async with replicas(upstreams, redis, tmp_path, routing="round_robin") as gateways:
            # One request at a time, turn by turn over the replicas; then bursts on all three at once.
            for replica in itertools.islice(itertools.cycle(gateways), 12):
                assert (await replica.chat(hi("x")))[0] == "healthy"
            for _ in range(5):
                answered = await asyncio.gather(*(g.chat(hi("x")) for g in gateways for _ in range(4)))
                assert {name for name, _ in answered} == {"healthy"}
    # 1, not 3 (once per replica, as without shared state); well inside the 5 s window.
    assert throttled.chat_count == 1
    assert healthy.chat_count == 72


async def test_one_slot_backends_never_serve_two_requests_at_once_and_everyone_is_answered(redis, tmp_path):
    fakes = [FakeUpstream(name=name, latency=0.1) for name in ("a", "b")]
    async with fakes[0].serve(), fakes[1].serve():
        upstreams = [backend(f.name, f, max_concurrency=1) for f in fakes]
        async with replicas(upstreams, redis, tmp_path) as gateways:
            answered = await asyncio.gather(*(g.chat(hi(f"q{i}")) for i in range(8) for g in gateways))
    assert len(answered) == 24
    assert [f.max_in_flight for f in fakes] == [1, 1]  # 3 each without shared state
    assert fakes[0].chat_count + fakes[1].chat_count == 24 and min(f.chat_count for f in fakes) >= 6


async def test_spare_slots_keep_replicas_within_the_cap_through_quiet_spells_and_bursts(redis, tmp_path):
    # 4 slots: a replica keeps a finished request's slot for its next one while at least 2 are free.
    fakes = [FakeUpstream(name=name, latency=0.05) for name in ("a", "b")]
    async with fakes[0].serve(), fakes[1].serve():
        upstreams = [backend(f.name, f, max_concurrency=4) for f in fakes]
        async with replicas(upstreams, redis, tmp_path) as gateways:
            answered = 0
            for _ in range(3):
                for replica in gateways:  # one at a time: each replica ends up keeping spares
                    await replica.chat(hi("alone"))
                    await asyncio.sleep(THINK)
                    answered += 1
                burst = await asyncio.gather(*(g.chat(hi(f"burst {i}")) for i in range(6) for g in gateways))
                answered += len(burst)
    assert answered == 3 * (3 + 18)
    assert max(f.max_in_flight for f in fakes) <= 4  # 18 at once for 8 slots, never over (each replica: up to 4)
    assert fakes[0].chat_count + fakes[1].chat_count == answered


async def test_a_slot_kept_spare_by_an_idle_replica_goes_at_once_to_one_that_waits(redis, tmp_path):
    only = FakeUpstream(name="only", latency=1.0)
    async with only.serve():  # (the gateways need its URL, known once it serves)
        two_slots = [backend("only", only, max_concurrency=2)]
        # Renewals every 2 s: a spare given back only when unused for that long would keep the waiter 2 s.
        async with replicas(two_slots, redis, tmp_path, count=2, state_lease_ttl="6") as (keeper, other):
            await keeper.chat(hi("leaves its slot spare"))
            await asyncio.sleep(THINK)
            both = await asyncio.gather(other.chat(hi("takes the free slot")), other.chat(hi("wants the spare")))
    # Refused, the second announced the backend wanted, the keeper gave its spare back and the waiter got it
    # while the first was still being answered: two at once. Without that it would have waited for the first
    # one's slot (a second), or for the keeper's renewal to give the unused spare back (two).
    assert [name for name, _ in both] == ["only", "only"]
    assert only.max_in_flight == 2


async def test_every_turn_of_a_conversation_lands_on_the_same_backend_whichever_replica_takes_it(redis, tmp_path):
    fakes = [FakeUpstream(name=name) for name in ("a", "b")]
    async with fakes[0].serve(), fakes[1].serve():
        upstreams = [backend(f.name, f, max_concurrency=1) for f in fakes]
        async with replicas(upstreams, redis, tmp_path, affinity="on") as gateways:
            rotation = itertools.cycle(gateways)
            conversations = [hi(f"conversation {i}") for i in range(10)]
            served: dict[int, list[str]] = {i: [] for i in range(10)}
            for turn in range(3):
                for i, messages in enumerate(conversations):
                    name, _ = await next(rotation).chat(messages)
                    served[i].append(name)
                    messages += [{"role": "assistant", "content": "ok"}, {"role": "user", "content": f"turn {turn}"}]
                    await asyncio.sleep(THINK)
                    await next(rotation).chat(hi(f"noise {turn} {i}"))  # another conversation in between
                    await asyncio.sleep(THINK)
    assert all(len(set(names)) == 1 for names in served.values()), served
    assert {names[0] for names in served.values()} == {"a", "b"}  # spread over both backends


async def test_a_killed_replicas_slot_is_free_again_within_the_lease_ttl(redis, tmp_path):
    slow_once = FakeUpstream(name="only", script=[Reply(delay=60)])
    async with slow_once.serve():  # (the gateways need its URL, known once it serves)
        only = [backend("only", slow_once, max_concurrency=1)]
        async with replicas(only, redis, tmp_path, count=2) as (victim, survivor):
            holding = asyncio.create_task(victim.chat(hi("holds the slot")))
            while slow_once.in_flight == 0:
                await asyncio.sleep(0.02)
            victim.process.send_signal(signal.SIGKILL)
            killed = time.perf_counter()
            name, _ = await survivor.chat(hi("waits for it"))
            waited = time.perf_counter() - killed
            with pytest.raises(openai.APIConnectionError):
                await holding
    assert name == "only"
    # The lease lasts LEASE_TTL after its last renewal (every TTL/3); the waiter looks again every TTL/3.
    assert LEASE_TTL / 3 < waited < LEASE_TTL + LEASE_TTL / 3 + 0.5


async def test_redis_killed_mid_run_fails_no_request_and_slows_none_past_the_deadline(redis, tmp_path):
    fakes = [FakeUpstream(name=name) for name in ("a", "b")]
    deadline = 0.05
    async with fakes[0].serve(), fakes[1].serve():
        upstreams = [backend(f.name, f, max_concurrency=4) for f in fakes]
        async with replicas(upstreams, redis, tmp_path, state_deadline=str(deadline), affinity="on") as gateways:
            durations: list[float] = []
            failures: list[BaseException] = []
            stop = asyncio.Event()

            async def client(replica: Replica, index: int) -> None:
                for n in itertools.count():
                    if stop.is_set() or n >= 400:
                        return
                    try:
                        durations.append((await replica.chat(hi(f"client {index} request {n}")))[1])
                    except openai.OpenAIError as exc:
                        failures.append(exc)

            clients = [asyncio.create_task(client(g, i)) for i, g in enumerate(gateways)]
            await until(lambda: len(durations) >= 30)
            before = sorted(durations)
            redis.kill()
            await until(lambda: len(durations) >= len(before) + 30)
            stop.set()
            await asyncio.gather(*clients)
            after = durations[len(before):]
            logs = [g.log for g in gateways]
    assert not failures
    # Each replica gives Redis up once, at the deadline; after that it does not ask until it answers again. So
    # the slowest request after the kill is the slowest before it (a busy machine's own noise) plus at most
    # the deadline, with 0.1 s of slack for the scheduler.
    assert max(after) < before[-1] + deadline + 0.1, (before[len(before) // 2], before[-3:], sorted(after)[-3:])
    for log in logs:
        events = [json.loads(line)["event"] for line in log.read_text().splitlines() if line.startswith("{")]
        assert events.count("shared_state_unavailable") == 1, events


async def test_workers_of_one_gateway_share_the_state_too(redis, tmp_path):
    throttled = FakeUpstream(name="throttled", default=throttled_ms(5000))
    healthy = FakeUpstream(name="healthy")
    async with throttled.serve(), healthy.serve():
        upstreams = [backend("throttled", throttled), backend("healthy", healthy)]
        async with replicas(upstreams, redis, tmp_path, count=1, workers="3", routing="round_robin") as (gateway,):
            for _ in range(12):
                # Three processes must each hear the cooldown over pub/sub before their next pick: on a loaded
                # machine that takes longer than one THINK.
                await asyncio.sleep(3 * THINK)
                # A connection of its own each time, so the kernel spreads them over the workers (SO_REUSEPORT).
                async with openai.AsyncOpenAI(base_url=f"http://127.0.0.1:{gateway.port}/v1", api_key="x",
                                              max_retries=0) as client:
                    raw = await client.chat.completions.with_raw_response.create(model="m", messages=hi("x"))
                    assert raw.headers["x-gateway-backend"] == "healthy"
    assert throttled.chat_count == 1  # each worker's first request would go there without shared state
