"""Spare leases: a replica keeps a finished request's slot for its next one, and gives it back when it is wanted
elsewhere, unused, or no longer certainly alive."""

from __future__ import annotations

import asyncio
import contextlib
import time

from gateway.shared_state.leases import Leases
from gateway.shared_state.shared import Local, SharedState
from gateway.shared_state.store import Candidate
from tests.gateway.redis_server import redis_server
from tests.gateway.shared_state_replica import eventually, shared_replica

ONE_SLOT = Candidate("a", max_concurrency=1, weight=1, priority=0)


def replica(url: str, **options: object) -> contextlib.AbstractAsyncContextManager[SharedState]:
    return shared_replica(url, ["a"], **options)


async def leases_in_redis(shared: SharedState) -> int:
    return int(await shared.store.redis.zcard(shared.store.lease_key("a")))


async def spare_of(shared: SharedState) -> str:
    """A lease taken from Redis and kept, as a request that ended with room to spare leaves it."""
    got = await shared.acquire([ONE_SLOT])
    assert got is not None and got[1].backend == "a"
    shared.release("a", got[0], "ok", room=True)
    assert shared.leases.spares("a") == 1
    return got[0]


async def test_a_kept_lease_serves_the_next_request_without_a_call_and_stays_counted():
    with redis_server() as server:
        async with replica(server.url) as shared:
            spare = await spare_of(shared)
            assert await leases_in_redis(shared) == 1  # still taken, for every replica
            assert shared.decide_locally(ONE_SLOT, b"conversation") is None  # a conversation is looked up
            assert shared.decide_locally(ONE_SLOT, None) == Local(spare)
            assert shared.decide_locally(ONE_SLOT, None) is None  # one spare, one request
            shared.release("a", spare, "failed", room=True)  # an outcome to record goes to Redis
            await eventually(lambda: not shared.releasing.get("a"))
            assert await leases_in_redis(shared) == 0 and shared.views["a"].failures == 1


async def test_a_spare_is_replaced_by_the_lease_of_a_call_that_picks_its_backend():
    with redis_server() as server:
        async with replica(server.url) as shared:
            await spare_of(shared)
            got = await shared.acquire([ONE_SLOT], b"conversation")  # full, but the slot is ours
            assert got is not None and got[1].backend == "a"
            assert shared.leases.spares("a") == 0 and shared.leases.on("a") == 1
            assert await leases_in_redis(shared) == 1


async def test_a_replica_refused_a_slot_gets_another_ones_spare_at_once():
    with redis_server() as server:
        async with replica(server.url) as keeper, replica(server.url) as other:
            await asyncio.sleep(0.1)  # both subscribed
            await spare_of(keeper)
            refused = await other.acquire([ONE_SLOT])
            assert refused is not None and refused[1].backend is None
            await eventually(lambda: "a" in other.views and other.views["a"].leases == 0)  # the release, published
            assert keeper.leases.spares("a") == 0
            got = await other.acquire([ONE_SLOT])
            assert got is not None and got[1].backend == "a"
            # Somebody waits for a: for a while the keeper keeps nothing there.
            own = await keeper.acquire([Candidate("a", max_concurrency=4, weight=1, priority=0)])
            assert own is not None and own[1].backend == "a"
            keeper.release("a", own[0], "ok", room=True)
            assert keeper.leases.spares("a") == 0


async def test_a_spare_unused_for_a_renewal_interval_is_given_back():
    with redis_server() as server:
        async with replica(server.url, lease_ttl=0.6) as shared:  # renewals every 0.2 s
            await spare_of(shared)
            started = time.monotonic()
            await eventually(lambda: shared.leases.spares("a") == 0)
            assert 0.2 <= time.monotonic() - started < 0.4 + 0.3  # (slack for a busy machine)
            await eventually(lambda: not shared.releasing.get("a"))
            assert await leases_in_redis(shared) == 0


async def test_spares_are_forgotten_when_redis_goes_away():
    with redis_server() as server:
        async with replica(server.url, deadline=0.05) as shared:
            await spare_of(shared)
            server.kill()
            assert await shared.acquire([ONE_SLOT]) is None  # unreachable: down at once, decided locally
            assert not shared.up
            assert shared.leases.spares("a") == 0 and len(shared.leases) == 0
            assert shared.decide_locally(ONE_SLOT, None) is None


def test_a_spare_that_may_have_expired_is_forgotten_rather_than_used():
    leases = Leases(margin=3.0)
    leases.add("l1", "a", alive_until=10.0)  # sent at 0 with a TTL of 10
    leases.keep("l1", now=1.0)
    assert leases.take("a", now=6.9) == "l1"  # the next renewal is due before it could expire
    leases.keep("l1", now=6.9)
    assert leases.take("a", now=7.0) is None  # renewals are late: it may be gone from Redis
    assert "l1" not in leases and leases.on("a") == 0  # and it is not renewed any more


def test_a_renewal_drops_the_leases_redis_no_longer_has_and_extends_the_others():
    leases = Leases(margin=3.0)
    for lease in ("l1", "l2"):
        leases.add(lease, "a", alive_until=10.0)
        leases.keep(lease, now=1.0)
    renewal = leases.all()
    leases.renewed(renewal, [False, True], alive_until=18.0)
    assert leases.all() == [("a", "l2")] and leases.spares("a") == 1
    assert leases.take("a", now=14.0) == "l2"
