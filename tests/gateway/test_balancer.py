"""Routing policy without sockets: the clock is a ManualClock, leases are taken and released directly."""

import asyncio
import itertools
from collections import Counter

import pytest

from gateway.backend_state import BackendCondition, BackendState, BreakerPolicy
from gateway.balancer import Balancer
from gateway.clock import ManualClock
from gateway.errors import AllBackendsThrottled, ModelNotFound, NoBackendAvailable
from gateway.outcome import SUCCEEDED, BreakerEffect, Verdict
from gateway.policies import LeastOutstanding, RoundRobin, SmoothWeighted, policy_for
from gateway.settings import BackendConfig, RoutingStrategy


def make(*specs, **kwargs):
    clock = ManualClock()
    backends = [BackendConfig(url=f"http://127.0.0.1:{9000 + i}/v1", **spec) for i, spec in enumerate(specs)]
    return Balancer(backends, now=clock.monotonic, **kwargs), clock


async def acquire(balancer, model=None, tried=(), preferred=None, wait=5.0):
    return await balancer.acquire(balancer.candidates(model), tried, preferred, balancer.now() + wait)


async def pick_many(balancer, n, model=None):
    """Backends of ``n`` requests in a row, each released (answered) before the next."""
    names = []
    for _ in range(n):
        lease = await acquire(balancer, model)
        names.append(lease.backend.name)
        lease.release(SUCCEEDED)
    return names


async def test_weighted_round_robin_is_smooth_and_exact():
    balancer, _ = make({"name": "a", "weight": 5}, {"name": "b"}, {"name": "c"})
    assert await pick_many(balancer, 7) == ["a", "a", "b", "a", "c", "a", "a"]  # interleaved, not a burst


async def test_equal_weights_take_turns_starting_with_the_first():
    balancer, _ = make({"name": "a"}, {"name": "b"}, {"name": "c"})
    assert await pick_many(balancer, 6) == ["a", "b", "c", "a", "b", "c"]


def test_the_policy_is_chosen_once_from_the_backends():
    states = [BackendState(BackendConfig(name=n, url="http://127.0.0.1:1/v1", max_concurrency=2)) for n in "ab"]
    assert isinstance(policy_for(RoutingStrategy.AUTO, states), LeastOutstanding)
    assert isinstance(policy_for(RoutingStrategy.ROUND_ROBIN, states), RoundRobin)
    weighted = [BackendState(BackendConfig(name=n, url="http://127.0.0.1:1/v1", weight=w)) for n, w in ("a3", "b1")]
    assert isinstance(policy_for(RoutingStrategy.AUTO, weighted), SmoothWeighted)


def test_available_says_what_condition_and_free_slot_say():
    """The hot path's one-expression check must agree with the rules as written out, in every state."""
    policy = BreakerPolicy(eject_after_failures=1, eject_base=5.0)
    config = BackendConfig(name="a", url="http://127.0.0.1:9000/v1", max_concurrency=1)
    for reachable, cooling, failures, probing, busy, now in itertools.product(
        (True, False), (False, True), (0, 1, 2), (False, True), (False, True), (0.0, 4.0, 7.0, 30.0)
    ):
        state = BackendState(config)
        for _ in range(failures):
            state.start_request()
            state.record_failure(0.0 if failures == 1 else 6.0, policy)
            state.finish_request()
        if probing and state.circuit_open():
            state.start_request()
            state.finish_request()
        if cooling:
            state.record_throttled(0.0, 5.0)
        if busy:
            state.start_request()
        state.reachable = reachable
        expected = state.condition(now) is BackendCondition.HEALTHY and state.has_free_slot()
        assert state.available(now) is expected, (reachable, cooling, failures, probing, busy, now)
        assert (state.skip_reason(now) is None) is expected


async def test_best_priority_tier_wins_until_it_is_unavailable():
    balancer, clock = make({"name": "primary", "priority": 0}, {"name": "spare", "priority": 1})
    assert Counter(await pick_many(balancer, 10)) == {"primary": 10}
    balancer.by_name["primary"].record_throttled(clock.monotonic(), 5)
    assert Counter(await pick_many(balancer, 3)) == {"spare": 3}
    clock.advance(5.01)
    assert Counter(await pick_many(balancer, 3)) == {"primary": 3}


async def test_cooling_backend_gets_nothing_and_skip_reason_is_reported():
    balancer, clock = make({"name": "a"}, {"name": "b"})
    balancer.by_name["a"].record_throttled(clock.monotonic(), 2.5)
    lease = await acquire(balancer)
    assert lease.backend.name == "b"
    assert lease.skipped == {"a": "cooling down for 2.500s"}


async def test_after_a_cooldown_one_request_probes_before_the_others():
    balancer, clock = make({"name": "a"}, {"name": "b"})
    a = balancer.by_name["a"]
    a.record_throttled(clock.monotonic(), 1.0)
    clock.advance(1.01)
    probe = await acquire(balancer)
    assert probe.backend is a
    others = [await acquire(balancer) for _ in range(3)]
    assert [lease.backend.name for lease in others] == ["b"] * 3
    assert others[0].skipped == {"a": "cooled down, probe in flight"}
    probe.release(SUCCEEDED)
    assert Counter(await pick_many(balancer, 4)) == {"a": 2, "b": 2}


async def test_a_probe_after_a_cooldown_that_is_throttled_again_cools_it_down_again():
    balancer, clock = make({"name": "a"})
    a = balancer.by_name["a"]
    a.record_throttled(clock.monotonic(), 1.0)
    clock.advance(1.01)
    probe = await acquire(balancer)
    with pytest.raises(AllBackendsThrottled) as refused:
        await acquire(balancer)
    assert refused.value.headers() == {"Retry-After": "1", "retry-after-ms": "1"}  # the probe is out: soon
    probe.release(Verdict("throttled", retry=True, breaker=BreakerEffect.NEUTRAL, cooldown=2.0))
    assert a.condition(clock.monotonic()) is BackendCondition.COOLING
    assert a.cooldown_until - clock.monotonic() == pytest.approx(2.0)


async def test_all_cooling_refuses_with_soonest_recovery():
    balancer, clock = make({"name": "a"}, {"name": "b"})
    balancer.by_name["a"].record_throttled(clock.monotonic(), 7)
    balancer.by_name["b"].record_throttled(clock.monotonic(), 3)
    with pytest.raises(AllBackendsThrottled) as refused:
        await acquire(balancer)
    assert refused.value.retry_after == pytest.approx(3)
    assert refused.value.headers() == {"Retry-After": "3", "retry-after-ms": "3000"}


async def test_models_filter_and_unknown_model():
    balancer, _ = make({"name": "a", "models": ["m1"]}, {"name": "b", "models": ["m2"]})
    assert await pick_many(balancer, 3, "m2") == ["b"] * 3
    with pytest.raises(ModelNotFound):
        balancer.candidates("nope")


async def test_every_candidate_tried_is_a_refusal():
    balancer, _ = make({"name": "a"}, {"name": "b"})
    with pytest.raises(NoBackendAvailable, match="was tried"):
        await acquire(balancer, tried=("a", "b"))


async def test_least_outstanding_for_backends_with_capacity():
    balancer, _ = make({"name": "a", "max_concurrency": 2}, {"name": "b", "max_concurrency": 2})
    first, second = await acquire(balancer), await acquire(balancer)
    assert second.backend is not first.backend  # never two on one while the other idles
    await acquire(balancer)
    await acquire(balancer)
    assert {s.in_flight for s in balancer.states} == {2}
    # Busy, not broken: worth waiting for a slot (and none frees up before the deadline).
    with pytest.raises(AllBackendsThrottled, match="no slot freed up"):
        await acquire(balancer, wait=0)


async def test_round_robin_forced_ignores_load():
    balancer, _ = make({"name": "a", "max_concurrency": 5}, {"name": "b", "max_concurrency": 5},
                       routing=RoutingStrategy.ROUND_ROBIN)
    held = [await acquire(balancer) for _ in range(4)]
    assert [lease.backend.name for lease in held] == ["a", "b", "a", "b"]


async def test_a_freed_slot_is_handed_to_the_oldest_waiter():
    balancer, clock = make({"name": "a", "max_concurrency": 1}, queue_timeout=1.0)
    state = balancer.by_name["a"]
    holder = await acquire(balancer)
    first = asyncio.create_task(acquire(balancer))
    await asyncio.sleep(0)
    second = asyncio.create_task(acquire(balancer))
    await asyncio.sleep(0)
    assert balancer.queued == 2
    holder.release(SUCCEEDED)
    # Handed over, not merely announced: a newcomer sees the backend busy and cannot barge in.
    assert state.in_flight == 1 and not state.available(clock.monotonic())
    assert (await first).backend is state
    assert not second.done()
    second.cancel()
    await asyncio.gather(second, return_exceptions=True)
    with pytest.raises(AllBackendsThrottled):
        await acquire(balancer, wait=0)  # deadline passed


async def test_a_waiter_that_gives_up_passes_its_handed_slot_on():
    balancer, _ = make({"name": "a", "max_concurrency": 1})
    state = balancer.by_name["a"]
    holder = await acquire(balancer)
    leaving = asyncio.create_task(acquire(balancer))
    await asyncio.sleep(0)
    staying = asyncio.create_task(acquire(balancer))
    await asyncio.sleep(0)
    holder.release(SUCCEEDED)  # handed to `leaving`...
    leaving.cancel()  # ...whose client disconnects before it runs
    await asyncio.gather(leaving, return_exceptions=True)
    assert (await staying).backend is state and state.in_flight == 1


async def test_the_queue_count_follows_every_way_out_of_the_queue():
    """The count a release reads instead of walking the queues: handed a slot, cancelled, timed out, woken."""
    balancer, _ = make({"name": "a", "max_concurrency": 1}, {"name": "b", "max_concurrency": 1})
    on_a, on_b = await acquire(balancer, tried=("b",)), await acquire(balancer, tried=("a",))
    waiting = [asyncio.create_task(acquire(balancer)) for _ in range(3)]
    pinned = asyncio.create_task(acquire(balancer, preferred="a"))
    short = asyncio.create_task(acquire(balancer, wait=0.05))
    await asyncio.sleep(0)
    assert balancer.queued == 5
    on_a.release(SUCCEEDED)  # handed over
    await asyncio.sleep(0)
    assert balancer.queued == 4
    waiting[2].cancel()
    await asyncio.gather(waiting[2], return_exceptions=True)
    assert balancer.queued == 3
    with pytest.raises(AllBackendsThrottled):
        await short  # timed out
    assert balancer.queued == 2
    balancer.wake_all()  # all look again, find nothing free, and queue again
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    assert balancer.queued == 2
    for task in waiting + [pinned]:
        task.cancel()
    await asyncio.gather(*waiting, pinned, return_exceptions=True)
    assert balancer.queued == 0
    on_b.release(SUCCEEDED)
    assert balancer.by_name["b"].in_flight == 0


async def test_waiters_only_take_backends_they_can_use():
    balancer, _ = make({"name": "a", "max_concurrency": 1}, {"name": "b", "max_concurrency": 1})
    on_a, on_b = await acquire(balancer, tried=("b",)), await acquire(balancer, tried=("a",))
    only_b = asyncio.create_task(acquire(balancer, tried=("a",)))
    await asyncio.sleep(0)
    on_a.release(SUCCEEDED)
    await asyncio.sleep(0)
    assert not only_b.done() and balancer.by_name["a"].in_flight == 0
    on_b.release(SUCCEEDED)
    assert (await only_b).backend.name == "b"


FAILED = Verdict("failed", retry=True, breaker=BreakerEffect.FAILURE)


async def test_circuit_breaker_ejects_grows_and_probes_once():
    balancer, clock = make({"name": "a"}, {"name": "b"}, breaker=BreakerPolicy(eject_after_failures=2,
                                                                                  eject_base=4, eject_max=10))
    a = balancer.by_name["a"]
    now = clock.monotonic
    assert (await acquire(balancer)).release(FAILED) is None
    assert (await acquire(balancer, tried=("b",))).release(FAILED) == 4
    assert a.condition(now()) is BackendCondition.EJECTED
    assert await pick_many(balancer, 3) == ["b"] * 3
    clock.advance(4.01)
    assert a.condition(now()) is BackendCondition.HEALTHY  # half-open
    probe = await acquire(balancer, tried=("b",))
    assert probe.backend is a and a.condition(now()) is BackendCondition.EJECTED  # nobody else while it is out
    assert await pick_many(balancer, 2) == ["b"] * 2
    assert probe.release(FAILED) == 8  # probe failed: longer
    clock.advance(8.01)
    assert (await acquire(balancer, tried=("b",))).release(FAILED) == 10  # capped
    clock.advance(10.01)
    (await acquire(balancer, tried=("b",))).release(SUCCEEDED)
    assert a.condition(now()) is BackendCondition.HEALTHY and a.ejections == 0


async def test_a_cancelled_probe_settles_nothing_and_lets_the_next_request_probe():
    balancer, clock = make({"name": "a"}, breaker=BreakerPolicy(eject_after_failures=1, eject_base=4))
    a = balancer.by_name["a"]
    (await acquire(balancer)).release(FAILED)
    clock.advance(4.01)
    probe = await acquire(balancer)
    assert a.probe_in_flight
    probe.release()  # its client went away: neither success nor failure
    assert not a.probe_in_flight and a.in_flight == 0 and a.ejections == 1
    second = await acquire(balancer)
    assert second.backend is a and a.probe_in_flight
    second.release(SUCCEEDED)
    assert a.condition(clock.monotonic()) is BackendCondition.HEALTHY


async def test_all_ejected_is_503():
    balancer, _ = make({"name": "a"}, breaker=BreakerPolicy(eject_after_failures=1))
    (await acquire(balancer)).release(FAILED)
    with pytest.raises(NoBackendAvailable):
        await acquire(balancer)


async def test_unhealthy_backend_is_skipped_and_recovers():
    balancer, _ = make({"name": "a"}, {"name": "b"})
    balancer.by_name["a"].record_health(False, "loading model")
    assert await pick_many(balancer, 4) == ["b"] * 4
    assert not balancer.by_name["a"].record_health(False, "loading model")  # no change
    assert balancer.by_name["a"].record_health(True)
    assert Counter(await pick_many(balancer, 4)) == {"a": 2, "b": 2}


async def test_cached_conversations_go_first_until_others_have_waited_too_long():
    balancer, clock = make({"name": "a", "max_concurrency": 1}, queue_aging=5.0)
    holder = await acquire(balancer)
    general = asyncio.create_task(acquire(balancer, wait=60))
    await asyncio.sleep(0)
    pinned = asyncio.create_task(acquire(balancer, preferred="a", wait=60))
    await asyncio.sleep(0)
    holder.release(SUCCEEDED)
    first = await pinned  # its prefix is cached on a: the shortest job goes first
    assert first.affinity == "hit"
    later_pinned = asyncio.create_task(acquire(balancer, preferred="a", wait=60))
    await asyncio.sleep(0)
    clock.advance(5.01)  # the general request has now waited longer than the aging limit
    first.release(SUCCEEDED)
    second = await general
    assert second.affinity is None
    second.release(SUCCEEDED)
    assert (await later_pinned).backend.name == "a"


async def test_a_request_pinned_to_a_busy_backend_keeps_waiting_for_it():
    """Moving a conversation costs a full re-read of its history; its own backend frees up within one answer."""
    balancer, _ = make({"name": "a", "max_concurrency": 1}, {"name": "b", "max_concurrency": 1})
    on_a, on_b = await acquire(balancer, tried=("b",)), await acquire(balancer, tried=("a",))
    for_a = asyncio.create_task(acquire(balancer, preferred="a"))
    await asyncio.sleep(0)
    on_b.release(SUCCEEDED)
    await asyncio.sleep(0)
    assert not for_a.done() and balancer.by_name["b"].in_flight == 0
    on_a.release(SUCCEEDED)
    lease = await for_a
    assert lease.backend.name == "a" and lease.affinity == "hit"


async def test_a_pinned_backend_busier_than_an_idle_one_moves_the_conversation():
    balancer, _ = make({"name": "a", "max_concurrency": 2}, {"name": "b", "max_concurrency": 2})
    await acquire(balancer, tried=("b",))
    lease = await acquire(balancer, preferred="a")
    assert lease.backend.name == "b" and lease.affinity == "moved"


async def test_a_probe_after_a_cooldown_lets_the_others_in_once_it_is_answered():
    """A 2xx status is the probe's answer: others need not wait for a long stream to end."""
    balancer, clock = make({"name": "a"})
    a = balancer.by_name["a"]
    a.record_throttled(clock.monotonic(), 1.0)
    clock.advance(1.01)
    probe = await acquire(balancer)
    with pytest.raises(AllBackendsThrottled):
        await acquire(balancer)
    probe.accepted()
    assert (await acquire(balancer)).backend is a


async def test_a_breaker_probe_holds_until_it_is_settled_even_once_answered():
    balancer, clock = make({"name": "a"}, breaker=BreakerPolicy(eject_after_failures=1, eject_base=4))
    (await acquire(balancer)).release(FAILED)
    clock.advance(4.01)
    probe = await acquire(balancer)
    probe.accepted()  # headers are not the whole answer: a stream may still break
    with pytest.raises(NoBackendAvailable):
        await acquire(balancer)
    probe.release(SUCCEEDED)
    assert (await acquire(balancer)).backend.name == "a"
