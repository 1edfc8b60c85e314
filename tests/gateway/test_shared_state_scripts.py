"""The shared-state Lua scripts against a real redis-server: leases, TTLs, cooldown, breaker, affinity."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator

import pytest
from redis.asyncio import Redis

from gateway.shared_state import scripts
from gateway.shared_state.store import (
    BreakerRule,
    Candidate,
    RedisStore,
    StoreUnavailable,
    parse_event,
    parse_want,
)
from tests.gateway.redis_server import RedisServer, redis_server

RULE = BreakerRule(eject_after_failures=2, eject_base=5.0, eject_max=60.0)
A = Candidate("a", max_concurrency=1, weight=1, priority=0)
B = Candidate("b", max_concurrency=1, weight=1, priority=0)
OPEN_A = Candidate("a", max_concurrency=None, weight=1, priority=0)


@pytest.fixture(scope="module")
def server() -> Iterator[RedisServer]:
    with redis_server() as running:
        yield running


@pytest.fixture
async def store(server: RedisServer) -> AsyncIterator[RedisStore]:
    redis = Redis.from_url(server.url)
    await redis.flushall()
    yield RedisStore(redis)
    await redis.aclose()


async def test_a_lease_per_slot_and_the_next_candidate_when_full(store):
    first = await store.acquire([A, B], "l1", 10)
    second = await store.acquire([A, B], "l2", 10)
    third = await store.acquire([A, B], "l3", 10)
    assert (first.backend, second.backend, third.backend) == ("a", "b", None)
    assert third.snapshots["a"].leases == third.snapshots["b"].leases == 1
    await store.release("a", "l1", "ok", breaker=RULE)
    assert (await store.acquire([A, B], "l3", 10)).backend == "a"


async def test_a_lease_not_renewed_expires_with_its_ttl_and_renewal_keeps_it(store):
    await store.acquire([A], "kept", 0.3)
    await store.acquire([B], "dropped", 0.3)
    for _ in range(4):
        await asyncio.sleep(0.1)
        assert await store.renew([("a", "kept")], 0.3) == [True]
    snapshots = await store.snapshot(["a", "b"])
    assert snapshots["a"].leases == 1 and snapshots["b"].leases == 0
    assert await store.renew([("b", "dropped"), ("a", "kept")], 0.3) == [False, True]  # not taken back


async def test_cooldown_is_kept_on_the_server_clock_and_one_request_tries_after_it(store):
    assert (await store.acquire([OPEN_A], "l1", 10)).backend == "a"
    snapshot = await store.release("a", "l1", "neutral", breaker=RULE, cooldown=0.2)
    assert 0.15 < snapshot.cooling <= 0.2 and snapshot.recovering
    assert (await store.acquire([OPEN_A], "l2", 10)).backend is None
    await asyncio.sleep(0.25)
    probe = await store.acquire([OPEN_A], "l3", 10)
    assert probe.backend == "a"
    # Its cooldown is over, but until that first request succeeds nobody else goes there.
    assert (await store.acquire([OPEN_A], "l4", 10)).snapshots["a"].probe_held
    assert (await store.acquire([OPEN_A], "l4", 10)).backend is None
    assert (await store.release("a", "l3", "ok", breaker=RULE)).clean
    assert (await store.acquire([OPEN_A], "l5", 10)).backend == "a"


async def test_breaker_opens_after_consecutive_failures_and_lets_one_probe_through(store):
    await store.release("a", None, "failed", breaker=RULE)
    snapshot = await store.release("a", None, "failed", breaker=RULE)
    assert snapshot.ejections == 1 and 4.9 < snapshot.ejected <= 5.0
    assert (await store.acquire([OPEN_A], "l1", 10)).backend is None
    # The probe's hold ends with its lease: a prober that dies does not keep the backend ejected.
    await store.redis.hset(store.state_key("a"), "eju", 0)
    assert (await store.acquire([OPEN_A], "probe", 0.2)).backend == "a"
    assert (await store.acquire([OPEN_A], "l2", 10)).backend is None
    failed_probe = await store.release("a", "probe", "failed", breaker=RULE)
    assert failed_probe.ejections == 2 and 9.9 < failed_probe.ejected <= 10.0  # twice as long
    await store.redis.hset(store.state_key("a"), "eju", 0)
    await store.acquire([OPEN_A], "dies", 0.2)
    await asyncio.sleep(0.25)
    assert (await store.acquire([OPEN_A], "next", 10)).backend == "a"
    assert (await store.release("a", "next", "ok", breaker=RULE)).clean


async def test_cancelled_probe_decides_nothing_and_frees_the_probe(store):
    await store.release("a", None, "failed", breaker=RULE)
    await store.release("a", None, "failed", breaker=RULE)
    await store.redis.hset(store.state_key("a"), "eju", 0)
    await store.acquire([OPEN_A], "probe", 10)
    snapshot = await store.release("a", "probe", "neutral", breaker=RULE)
    assert not snapshot.probe_held and snapshot.ejections == 1 and snapshot.failures == 2
    assert (await store.acquire([OPEN_A], "again", 10)).backend == "a"


async def test_affinity_follows_the_conversation_with_a_load_guard(store):
    key = b"conversation-1"
    first = await store.acquire([B, A], "l1", 10, conversation=key)
    assert (first.backend, first.affinity) == ("b", "new")
    await store.release("b", "l1", "ok", breaker=RULE)
    again = await store.acquire([A, B], "l2", 10, conversation=key)
    assert (again.backend, again.affinity) == ("b", "hit")  # though the caller preferred a
    # b busy, a free: the turn moves rather than wait, and the conversation follows it.
    moved = await store.acquire([A, B], "l3", 10, conversation=key)
    assert (moved.backend, moved.affinity) == ("a", "moved")
    assert await store.redis.get(store.affinity_key(key)) == b"a"
    assert 3500_000 < await store.redis.pttl(store.affinity_key(key)) <= 3600_000


async def test_release_publishes_the_new_state_for_other_replicas(store):
    pubsub = store.redis.pubsub()
    await pubsub.subscribe(store.channel)
    await pubsub.get_message(timeout=1)  # the subscribe confirmation
    await store.release("a", None, "neutral", breaker=RULE, cooldown=5, origin="replica-1")
    message = await pubsub.get_message(timeout=1)
    await pubsub.aclose()
    name, snapshot, origin = parse_event(message["data"])
    assert name == "a" and 4.9 < snapshot.cooling <= 5 and snapshot.recovering and origin == "replica-1"


async def test_keys_are_versioned_and_hash_tagged_for_one_cluster_slot(store):
    await store.acquire([A], "l1", 10, conversation=b"x")
    await store.release("a", None, "failed", breaker=RULE)
    keys = sorted(k.decode() for k in await store.redis.keys("*"))
    assert keys and all(k.startswith("{gw}:" + scripts.VERSION + ":") for k in keys)
    for source in (scripts.ACQUIRE, scripts.RELEASE, scripts.RENEW, scripts.SNAPSHOT):
        assert f"script version {scripts.VERSION}" in source  # the version is part of each script's SHA


async def test_an_unreachable_server_is_one_error_type(server):
    redis = Redis.from_url("redis://127.0.0.1:1/0", socket_connect_timeout=0.2)
    with pytest.raises(StoreUnavailable):
        await RedisStore(redis).acquire([A], "l1", 10)
    await redis.aclose()


async def test_a_freed_slot_is_published_only_while_someone_waits_for_it(store):
    pubsub = store.redis.pubsub(ignore_subscribe_messages=True)
    await pubsub.subscribe(store.channel)
    await store.acquire([A], "l1", 10)
    await store.release("a", "l1", "ok", breaker=RULE)
    assert await pubsub.get_message(timeout=0.2) is None  # nobody waits: no message for every request
    await store.acquire([A], "l2", 10)
    assert (await store.acquire([A], "l3", 10)).backend is None  # this one will wait
    await store.release("a", "l2", "ok", breaker=RULE)
    message = await pubsub.get_message(timeout=1)
    await pubsub.aclose()
    assert message is not None and parse_event(message["data"])[1].leases == 0


async def test_a_spare_of_the_callers_counts_as_free_and_the_new_lease_takes_its_place(store):
    a2 = Candidate("a", max_concurrency=2, weight=1, priority=0)
    await store.acquire([a2], "spare", 10)
    await store.acquire([a2], "other-replicas", 10)
    assert (await store.acquire([a2], "refused", 10)).backend is None  # full: 2 of 2
    taken = await store.acquire([a2], "new", 10, spares={"a": "spare"})
    assert taken.backend == "a" and taken.snapshots["a"].leases == 2  # the spare's slot, not a third one
    assert sorted(await store.redis.zrange(store.lease_key("a"), 0, -1)) == [b"new", b"other-replicas"]


async def test_a_spare_on_a_backend_not_taken_stays_and_an_expired_one_counts_for_nothing(store):
    await store.acquire([A], "spare-a", 10)
    taken = await store.acquire([B, A], "new", 10, spares={"a": "spare-a"})
    assert taken.backend == "b"  # the caller's order: its spare on a is still there for it
    assert await store.redis.zcard(store.lease_key("a")) == 1
    await store.acquire([A], "gone", 0.1, spares={"a": "spare-a"})  # (replaced the spare: a is full again)
    await asyncio.sleep(0.15)
    await store.acquire([A], "someone-else", 10)
    assert (await store.acquire([A], "late", 10, spares={"a": "gone"})).backend is None  # expired: not ours


async def test_a_refusal_on_a_full_backend_announces_it_wanted_once_per_half_ttl(store):
    pubsub = store.redis.pubsub()
    await pubsub.subscribe(store.wants)
    await pubsub.get_message(timeout=1)  # the subscribe confirmation
    cooling = Candidate("c", max_concurrency=None, weight=1, priority=0)
    await store.release("c", None, "neutral", breaker=RULE, cooldown=5)
    await store.acquire([A], "held", 10)
    for attempt in ("first", "second"):
        assert (await store.acquire([A, cooling], attempt, 0.4, origin="replica-2")).backend is None
    message = await pubsub.get_message(timeout=1)
    assert parse_want(message["data"]) == ("replica-2", ["a"])  # the full one only (not a cooling one)
    assert await pubsub.get_message(timeout=0.1) is None  # still waiting, said already
    await asyncio.sleep(0.25)  # past half the TTL: said again
    await store.acquire([A], "third", 0.4, origin="replica-2")
    assert parse_want((await pubsub.get_message(timeout=1))["data"]) == ("replica-2", ["a"])
    await pubsub.aclose()


async def test_a_lease_granted_just_as_its_caller_gave_up_is_given_back(store):
    # The answer arrives, and in the same turn of the loop the caller's deadline cancels it before it reads it
    # (seen at c=32 on a busy machine: each such lease stayed taken for its TTL, and the cap filled up).
    wide = Candidate("a", max_concurrency=100, weight=1, priority=0)
    caller = asyncio.create_task(store.acquire([wide], "l1", 10))
    await asyncio.sleep(0)  # the call is queued for the next pipeline
    (*_, answer), = store._batch._pending
    answer.add_done_callback(lambda _: caller.cancel())  # runs before the caller resumes
    with pytest.raises(asyncio.CancelledError):
        await caller
    for _ in range(50):
        if await store.redis.zcard(store.lease_key("a")) == 0:
            break
        await asyncio.sleep(0.01)
    assert await store.redis.zcard(store.lease_key("a")) == 0


async def test_scripts_the_server_lost_are_loaded_again_alone_or_in_a_batch(store):
    await store.redis.script_flush()  # (a restarted Redis has none)
    assert (await store.acquire([A], "alone", 10)).backend == "a"
    await store.redis.script_flush()
    together = await asyncio.gather(store.acquire([B], "one", 10), store.release("a", "alone", "ok", breaker=RULE))
    assert together[0].backend == "b" and together[1].leases == 0
