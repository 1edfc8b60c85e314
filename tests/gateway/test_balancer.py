"""Routing policy without sockets: the clock is a ManualClock, states are set directly."""

import asyncio
import itertools
from collections import Counter

import pytest

from gateway.backend_state import BackendCondition, BackendState, BreakerPolicy
from gateway.balancer import Balancer
from gateway.clock import ManualClock
from gateway.errors import AllBackendsThrottled, ModelNotFound, NoBackendAvailable
from gateway.settings import BackendConfig, RoutingStrategy


def make(*specs, **kwargs):
    clock = ManualClock()
    backends = [BackendConfig(url=f"http://127.0.0.1:{9000 + i}/v1", **spec) for i, spec in enumerate(specs)]
    return Balancer(backends, now=clock.monotonic, **kwargs), clock


def pick_many(balancer, n, model=None):
    candidates = balancer.candidates(model)
    return Counter(balancer.choose(candidates, set()).name for _ in range(n))


def test_weighted_round_robin_is_smooth_and_exact():
    balancer, _ = make({"name": "a", "weight": 5}, {"name": "b"}, {"name": "c"})
    candidates = balancer.candidates(None)
    order = [balancer.choose(candidates, set()).name for _ in range(7)]
    assert Counter(order) == {"a": 5, "b": 1, "c": 1}
    assert order[:2] != ["a", "a"] or order[2] != "a"  # interleaved, not a burst of five


def test_equal_weights_take_turns_starting_with_the_first():
    balancer, _ = make({"name": "a"}, {"name": "b"}, {"name": "c"})
    candidates = balancer.candidates(None)
    assert [balancer.choose(candidates, set()).name for _ in range(6)] == ["a", "b", "c", "a", "b", "c"]


def test_available_says_what_condition_and_free_slot_say():
    """The hot path's one-expression check must agree with the rules as written out, in every state."""
    policy = BreakerPolicy(eject_after_failures=1, eject_base=5.0)
    config = BackendConfig(name="a", url="http://127.0.0.1:9000/v1", max_concurrency=1)
    for reachable, cooling, failures, probing, busy, now in itertools.product(
        (True, False), (False, True), (0, 1, 2), (False, True), (False, True), (0.0, 4.0, 7.0, 30.0)
    ):
        state = BackendState(config)
        for _ in range(failures):
            state.start_request(0.0)
            state.record_failure(0.0 if failures == 1 else 6.0, policy)
            state.finish_request()
        if probing and state.circuit_open():
            state.start_request(now)
            state.finish_request()
        if cooling:
            state.record_throttled(0.0, 5.0)
        if busy:
            state.start_request(now)
        state.reachable = reachable
        expected = state.condition(now) is BackendCondition.HEALTHY and state.has_free_slot()
        assert state.available(now) is expected, (reachable, cooling, failures, probing, busy, now)
        assert (state.skip_reason(now) is None) is expected


def test_best_priority_tier_wins_until_it_is_unavailable():
    balancer, clock = make({"name": "primary", "priority": 0}, {"name": "spare", "priority": 1})
    assert pick_many(balancer, 10) == {"primary": 10}
    balancer.by_name["primary"].record_throttled(clock.monotonic(), 5)
    assert pick_many(balancer, 3) == {"spare": 3}
    clock.advance(5.01)
    assert pick_many(balancer, 3) == {"primary": 3}


def test_cooling_backend_gets_nothing_and_skip_reason_is_reported():
    balancer, clock = make({"name": "a"}, {"name": "b"})
    balancer.by_name["a"].record_throttled(clock.monotonic(), 2.5)
    skipped = {}
    assert balancer.choose(balancer.candidates(None), set(), skipped).name == "b"
    assert skipped == {"a": "cooling down for 2.500s"}


def test_all_cooling_refuses_with_soonest_recovery():
    balancer, clock = make({"name": "a"}, {"name": "b"})
    balancer.by_name["a"].record_throttled(clock.monotonic(), 7)
    balancer.by_name["b"].record_throttled(clock.monotonic(), 3)
    candidates = balancer.candidates(None)
    assert balancer.choose(candidates, set()) is None
    refusal = balancer.refusal(candidates)
    assert isinstance(refusal, AllBackendsThrottled)
    assert refusal.retry_after == pytest.approx(3)
    assert refusal.headers() == {"Retry-After": "3", "retry-after-ms": "3000"}


def test_models_filter_and_unknown_model():
    balancer, _ = make({"name": "a", "models": ["m1"]}, {"name": "b", "models": ["m2"]})
    assert pick_many(balancer, 3, "m2") == {"b": 3}
    with pytest.raises(ModelNotFound):
        balancer.candidates("nope")


def test_least_outstanding_for_backends_with_capacity():
    balancer, _ = make({"name": "a", "max_concurrency": 2}, {"name": "b", "max_concurrency": 2})
    candidates = balancer.candidates(None)
    first = balancer.choose(candidates, set())
    balancer.start(first)
    second = balancer.choose(candidates, set())
    assert second is not first  # never two on one while the other idles
    balancer.start(second)
    third = balancer.choose(candidates, set())
    balancer.start(third)
    fourth = balancer.choose(candidates, set())
    balancer.start(fourth)
    assert {s.in_flight for s in balancer.states} == {2}
    assert balancer.choose(candidates, set()) is None
    assert balancer.refusal(candidates) is None  # busy, not broken: worth waiting


def test_round_robin_forced_ignores_load():
    balancer, _ = make({"name": "a", "max_concurrency": 5}, {"name": "b", "max_concurrency": 5},
                       routing=RoutingStrategy.ROUND_ROBIN)
    candidates = balancer.candidates(None)
    a = balancer.choose(candidates, set())
    balancer.start(a)
    balancer.start(a)
    assert [balancer.choose(candidates, set()).name for _ in range(4)].count("a") == 2


async def test_a_freed_slot_is_handed_to_the_oldest_waiter():
    balancer, clock = make({"name": "a", "max_concurrency": 1}, queue_timeout=1.0)
    state = balancer.by_name["a"]
    balancer.start(state)
    first = asyncio.create_task(balancer.wait_for_slot(clock.monotonic() + 5, frozenset({"a"})))
    await asyncio.sleep(0)
    second = asyncio.create_task(balancer.wait_for_slot(clock.monotonic() + 5, frozenset({"a"})))
    await asyncio.sleep(0)
    assert balancer.queued == 2
    balancer.finish(state)
    # Handed over, not merely announced: a newcomer sees the backend busy and cannot barge in.
    assert state.in_flight == 1 and balancer.choose(balancer.candidates(None), set()) is None
    assert await first is state
    assert not second.done()
    second.cancel()
    assert await balancer.wait_for_slot(clock.monotonic(), frozenset({"a"})) is False  # deadline passed


async def test_a_waiter_that_gives_up_passes_its_handed_slot_on():
    balancer, clock = make({"name": "a", "max_concurrency": 1})
    state = balancer.by_name["a"]
    balancer.start(state)
    leaving = asyncio.create_task(balancer.wait_for_slot(clock.monotonic() + 5, frozenset({"a"})))
    await asyncio.sleep(0)
    staying = asyncio.create_task(balancer.wait_for_slot(clock.monotonic() + 5, frozenset({"a"})))
    await asyncio.sleep(0)
    balancer.finish(state)  # handed to `leaving`...
    leaving.cancel()  # ...whose client disconnects before it runs
    await asyncio.gather(leaving, return_exceptions=True)
    assert await staying is state and state.in_flight == 1


async def test_waiters_only_take_backends_they_can_use():
    balancer, clock = make({"name": "a", "max_concurrency": 1}, {"name": "b", "max_concurrency": 1})
    a, b = balancer.by_name["a"], balancer.by_name["b"]
    balancer.start(a)
    balancer.start(b)
    only_b = asyncio.create_task(balancer.wait_for_slot(clock.monotonic() + 5, frozenset({"b"})))
    await asyncio.sleep(0)
    balancer.finish(a)
    await asyncio.sleep(0)
    assert not only_b.done() and a.in_flight == 0
    balancer.finish(b)
    assert await only_b is b


def test_circuit_breaker_ejects_grows_and_probes_once():
    balancer, clock = make({"name": "a"}, {"name": "b"})
    policy = BreakerPolicy(eject_after_failures=2, eject_base=4, eject_max=10)
    a = balancer.by_name["a"]
    now = clock.monotonic
    assert a.record_failure(now(), policy) is None
    assert a.record_failure(now(), policy) == 4
    assert a.condition(now()) is BackendCondition.EJECTED
    assert pick_many(balancer, 3) == {"b": 3}
    clock.advance(4.01)
    assert a.condition(now()) is BackendCondition.HEALTHY  # half-open
    balancer.start(a)  # the probe
    assert a.condition(now()) is BackendCondition.EJECTED  # nobody else while it is out
    assert pick_many(balancer, 2) == {"b": 2}
    balancer.finish(a)
    assert a.record_failure(now(), policy) == 8  # probe failed: longer
    clock.advance(8.01)
    balancer.start(a)
    assert a.record_failure(now(), policy) == 10  # capped
    clock.advance(10.01)
    balancer.start(a)
    balancer.finish(a)
    a.record_success()
    assert a.condition(now()) is BackendCondition.HEALTHY and a.ejections == 0


def test_all_ejected_is_503():
    balancer, clock = make({"name": "a"})
    a = balancer.by_name["a"]
    a.record_failure(clock.monotonic(), BreakerPolicy(eject_after_failures=1))
    assert isinstance(balancer.refusal(balancer.candidates(None)), NoBackendAvailable)


def test_unhealthy_backend_is_skipped_and_recovers():
    balancer, _ = make({"name": "a"}, {"name": "b"})
    balancer.by_name["a"].record_health(False, "loading model")
    assert pick_many(balancer, 4) == {"b": 4}
    assert not balancer.by_name["a"].record_health(False, "loading model")  # no change
    assert balancer.by_name["a"].record_health(True)
    assert pick_many(balancer, 4) == {"a": 2, "b": 2}


async def test_cached_conversations_go_first_until_others_have_waited_too_long():
    balancer, clock = make({"name": "a", "max_concurrency": 1}, queue_aging=5.0)
    a = balancer.by_name["a"]
    balancer.start(a)
    deadline = clock.monotonic() + 60
    general = asyncio.create_task(balancer.wait_for_slot(deadline, frozenset({"a"})))
    await asyncio.sleep(0)
    pinned = asyncio.create_task(balancer.wait_for_slot(deadline, frozenset({"a"}), a))
    await asyncio.sleep(0)
    balancer.finish(a)
    assert await pinned is a  # its prefix is cached on a: the shortest job goes first
    later_pinned = asyncio.create_task(balancer.wait_for_slot(deadline, frozenset({"a"}), a))
    await asyncio.sleep(0)
    clock.advance(5.01)  # the general request has now waited longer than the aging limit
    balancer.finish(a)
    assert await general is a
    balancer.finish(a)
    assert await later_pinned is a


async def test_a_request_pinned_to_a_busy_backend_keeps_waiting_for_it():
    """Moving a conversation costs a full re-read of its history; its own backend frees up within one answer."""
    balancer, clock = make({"name": "a", "max_concurrency": 1}, {"name": "b", "max_concurrency": 1})
    a, b = balancer.by_name["a"], balancer.by_name["b"]
    balancer.start(a)
    balancer.start(b)
    for_a = asyncio.create_task(balancer.wait_for_slot(clock.monotonic() + 5, frozenset({"a"}), a))
    await asyncio.sleep(0)
    balancer.finish(b)
    await asyncio.sleep(0)
    assert not for_a.done() and b.in_flight == 0
    balancer.finish(a)
    assert await for_a is a
