"""SharedState: views that follow other replicas, leases renewed while held, and failing open without Redis."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time

import pytest
from redis.asyncio import Redis

from gateway.shared_state.shared import SLOW_FOR, Local, SharedState
from gateway.shared_state.store import Candidate, RedisStore
from tests.gateway.redis_server import redis_server
from tests.gateway.shared_state_replica import RULE, eventually, shared_replica

CAPPED = Candidate("a", max_concurrency=1, weight=1, priority=0)
OPEN = Candidate("b", max_concurrency=None, weight=1, priority=0)


def replica(url: str, **options: object) -> contextlib.AbstractAsyncContextManager[SharedState]:
    return shared_replica(url, ["a", "b"], **options)


async def test_a_throttle_seen_by_one_replica_reaches_the_others_view():
    with redis_server() as server:
        async with replica(server.url) as one, replica(server.url) as two:
            await asyncio.sleep(0.1)  # both subscribed
            assert two.decide_locally(OPEN, None) == Local(None)  # a clean, uncapped backend: no call at all
            one.release("b", None, "neutral", cooldown=5.0)
            await eventually(lambda: "b" in two.views and two.views["b"].cooling > 4)
            assert two.decide_locally(OPEN, None) is None


async def test_a_held_lease_is_renewed_and_a_dead_replicas_lease_expires():
    with redis_server() as server:
        async with replica(server.url, lease_ttl=0.6) as holder:
            _, acquired = await holder.acquire([CAPPED])
            assert acquired.backend == "a"
            async with replica(server.url, lease_ttl=0.6) as other:
                await asyncio.sleep(1.0)  # longer than the TTL: renewal keeps it
                _, refused = await other.acquire([CAPPED])
                assert refused.backend is None
                for _, lease in holder.leases.all():
                    holder.leases.drop(lease)  # as if the holder died: nobody renews its lease any more
                await asyncio.sleep(0.7)
                _, taken = await other.acquire([CAPPED])
                assert taken.backend == "a"


async def test_redis_gone_fails_open_within_the_deadline_logs_once_and_comes_back(capfd):
    with redis_server() as server:
        port = server.port
        # A deadline a loaded machine keeps even for the first call after the restart (which loads the scripts
        # again): missed, that call would be one more fall-back, and one more "unavailable" line.
        async with replica(server.url, deadline=0.25) as shared:
            assert (await shared.acquire([CAPPED])) is not None
            server.kill()
            durations = []
            for _ in range(20):
                started = time.perf_counter()
                assert await shared.acquire([CAPPED]) is None  # decide locally
                durations.append(time.perf_counter() - started)
            assert max(durations) < 0.25 + 0.1  # (0.1 s of slack for a busy machine's scheduler)
            assert not shared.up and sum(shared.fallbacks.values()) == 20
            with redis_server(port):
                await eventually(lambda: shared.up)
                assert await shared.acquire([CAPPED]) is not None
    events = [json.loads(line)["event"] for line in capfd.readouterr().out.splitlines() if line.startswith("{")]
    assert events.count("shared_state_unavailable") == 1 and events.count("shared_state_restored") == 1


async def test_a_slow_redis_is_abandoned_at_the_deadline():
    with redis_server() as server:
        async with replica(server.url, deadline=0.05) as shared:
            server.pause()
            try:
                stalled = time.perf_counter()
                while shared.up:  # a stall is given the benefit of the doubt for SLOW_FOR seconds
                    started = time.perf_counter()
                    assert await shared.acquire([CAPPED]) is None
                    assert time.perf_counter() - started < 0.05 + 0.1
                assert SLOW_FOR <= time.perf_counter() - stalled < SLOW_FOR + 0.3
                started = time.perf_counter()
                assert await shared.acquire([CAPPED]) is None  # known down: not even tried
                assert time.perf_counter() - started < 0.02
            finally:
                server.resume()
            await eventually(lambda: shared.up)
            assert await shared.acquire([CAPPED]) is not None


@pytest.mark.parametrize("effect", ["ok", "neutral"])
def test_nothing_is_sent_for_an_outcome_that_changes_nothing(effect):
    shared = SharedState(RedisStore(Redis()), ["b"], breaker=RULE)
    shared.release("b", None, effect)  # no running loop needed: nothing is scheduled
    assert not shared._background


async def test_a_lease_taken_after_its_request_gave_up_is_given_back_at_once():
    with redis_server() as server:
        async with replica(server.url, deadline=0.05, lease_ttl=60) as shared:
            server.pause()
            try:
                assert await shared.acquire([CAPPED]) is None  # gave up; the call is still on its way
            finally:
                server.resume()
            store = shared.store
            await eventually(lambda: shared.up)
            await asyncio.sleep(0.1)
            assert await store.redis.zcard(store.lease_key("a")) == 0  # not held for 60 s by nobody
