"""Which backend takes the next attempt, and what to say when none can: one call, ``acquire``, returns a
``Lease`` or raises the refusal.

Selection, in order:
1. candidates: backends that serve the requested model (none → 404) and were not already tried for this
   request;
2. eligible: not cooling down, not ejected, healthy, under their ``max_concurrency`` (``BackendState``);
3. the best (lowest) ``priority`` among the eligible;
4. inside that tier: the conversation's pinned backend (affinity) if it is there and no busier than the least
   busy; else the policy chosen once at start-up (``gateway.policies``).

When nothing is eligible the reason decides the answer: every candidate cooling down → 429 at once with the
soonest recovery as Retry-After (the client's own backoff then waits, not us); all merely busy → wait in a
bounded queue for a free slot (``gateway.wait_queue``), 429 if none frees up in time; nothing alive → 503.

The lease holds the backend's slot until ``release(verdict)``: the verdict (``gateway.outcome``) is recorded on
the backend (cooldown, breaker), then the slot goes to the next waiter. ``release()`` without a verdict — the
attempt was cancelled — settles nothing, but gives a half-open probe back.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence

from gateway.backend_state import BackendCondition, BackendState, BreakerPolicy
from gateway.errors import AllBackendsThrottled, ModelNotFound, NoBackendAvailable
from gateway.outcome import SUCCEEDED, Verdict
from gateway.policies import policy_for
from gateway.settings import Api, BackendConfig, RoutingStrategy
from gateway.wait_queue import WaitQueue, hand_over

Refusal = AllBackendsThrottled | NoBackendAvailable | ModelNotFound


class Lease:
    """One attempt's hold on a backend: who it is, why others were passed over, and how affinity went."""

    __slots__ = ("_balancer", "_released", "affinity", "backend", "skipped")

    def __init__(
        self, balancer: Balancer, backend: BackendState, skipped: dict[str, str] | None, affinity: str | None
    ) -> None:
        self.backend = backend
        self.skipped = skipped  # name → why it was not eligible (untried candidates only); None if none were
        self.affinity = affinity  # "hit" or "moved" when a pinned backend was asked for, else None
        self._balancer = balancer
        self._released = False

    def accepted(self) -> None:
        """The backend answered 2xx: a probe after a cooldown need not hold the others back any longer. (Only
        a backend that is ``recovering`` has anything to record: callers may skip the call otherwise.)"""
        self.backend.accepted()

    def release(self, verdict: Verdict | None = None) -> float | None:
        """Record ``verdict`` on the backend and free the slot; returns the ejection period if the circuit
        opened. Idempotent: only the first call counts."""
        if self._released:
            return None
        self._released = True
        state = self.backend
        if verdict is SUCCEEDED:
            state.record_success()  # the usual case, settled without the verdict's arithmetic or the clock
            ejected = None
        elif verdict is None:
            state.abandon()
            ejected = None
        else:
            ejected = state.settle(verdict, self._balancer.now(), self._balancer.breaker)
        self._balancer.finish(state)
        return ejected


class Balancer:
    def __init__(
        self,
        backends: Iterable[BackendConfig],
        *,
        routing: RoutingStrategy = RoutingStrategy.AUTO,
        queue_timeout: float = 30.0,
        queue_max: int = 1000,
        queue_aging: float = 5.0,
        breaker: BreakerPolicy | None = None,
        now: Callable[[], float],
        state_factory: Callable[[BackendConfig], BackendState] = BackendState,
    ) -> None:
        """``state_factory`` builds each backend's state: where a shared implementation plugs in."""
        self.states = [state_factory(config) for config in backends]
        self.by_name = {state.name: state for state in self.states}
        self.now = now
        self.breaker = breaker or BreakerPolicy()
        self.queue_timeout = queue_timeout
        self.queue = WaitQueue(
            self.by_name, max_size=queue_max, aging=queue_aging, now=now, give_back=self.finish
        )
        self._policy = policy_for(routing, self.states)
        self._restricted_models = any(s.config.models is not None for s in self.states)
        # Worked out once: on every request's path, a per-backend check would show.
        self._by_api = {api: [s for s in self.states if api in s.config.served_apis] for api in Api}
        self._tiered = len({s.priority for s in self.states}) > 1  # else every eligible backend is one tier

    # -- the one call --------------------------------------------------------------------------------

    def candidates(self, model: str | None, api: Api | None = None) -> Sequence[BackendState]:
        """The backends serving ``model`` (ModelNotFound, 404, if none does), and ``api`` natively when given
        (possibly none: the caller says what that means for its request)."""
        states = self.states if api is None else self._by_api[api]
        if not self._restricted_models:
            return states
        serving = _serving_model(self.states, model)
        if not serving:
            raise ModelNotFound(f"The model {model!r} does not exist or no backend serves it.")
        return serving if api is None else _serving_model(states, model)

    async def acquire(
        self,
        candidates: Sequence[BackendState],
        tried: Sequence[str],
        preferred: str | None,
        deadline: float,
        conversation: bytes | None = None,
    ) -> Lease:
        """A lease on the backend for the next attempt, its slot already taken; or the refusal, raised.

        ``tried``: backends this request already tried (never again); ``preferred``: the backend holding the
        conversation (affinity), if any; ``deadline``: how long it may queue for a free slot (monotonic);
        ``conversation``: the affinity key, for a balancer that looks the conversation up itself (shared).
        """
        if preferred is not None and preferred in tried:
            preferred = None  # it already failed this request: no loyalty to a broken backend
        while True:
            skipped: dict[str, str] = {}
            state = self._choose(candidates, tried, skipped, preferred)
            if state is not None and (preferred is None or state.name == preferred):
                # Decided without queueing: a backend is free (the conversation's own, if it has one).
                state.start_request()
                return Lease(self, state, skipped or None, None if preferred is None else "hit")
            waited: BackendState | bool
            pinned = self._worth_waiting_for(preferred, candidates) if preferred is not None else None
            if pinned is not None:
                # Its conversation's cache is there and the others are no less busy: queue for it.
                waited = await self.queue.wait(deadline, frozenset((pinned.name,)), pinned.name)
            elif state is not None:
                state.start_request()
                waited = state
            else:
                untried = not_yet_tried(candidates, tried)
                refusal = self._refusal(untried)
                if refusal is not None:
                    raise refusal
                # Every untried backend is healthy but at its max_concurrency: queue for a free slot.
                waited = await self.queue.wait(deadline, frozenset(s.name for s in untried))
            if waited is False:
                raise AllBackendsThrottled(
                    f"All backends are busy and no slot freed up within {self.queue_timeout:g}s.", retry_after=1.0
                )
            if isinstance(waited, BackendState):
                affinity = None if preferred is None else ("hit" if waited.name == preferred else "moved")
                return Lease(self, waited, skipped or None, affinity)
            # True: something changed (a backend came back): look again.

    # -- choosing ------------------------------------------------------------------------------------

    def _choose(
        self,
        candidates: Sequence[BackendState],
        tried: Sequence[str],
        skipped: dict[str, str],
        preferred: str | None,
    ) -> BackendState | None:
        """The backend for the next attempt, or None when no untried candidate is eligible right now."""
        now = self.now()
        tier: list[BackendState] = []
        for state in candidates:
            if state.name in tried:
                continue
            if state.available(now):
                tier.append(state)
            else:
                skipped[state.name] = state.skip_reason(now) or "busy"
        if not tier:
            return None
        if self._tiered and len(tier) > 1:
            tier = _best_priority(tier)
        if len(tier) == 1:
            return tier[0]
        if preferred is not None:
            for state in tier:
                if state.name == preferred and self.load(state) <= self._least_load(tier):
                    return state
        return self._policy.select(tier, self.load)

    def _least_load(self, states: Iterable[BackendState]) -> float:
        return min(self.load(s) for s in states)

    def load(self, state: BackendState) -> float:
        """Outstanding work per unit of weight: requests in flight plus those queued for this backend only, plus
        other clients' requests a llama-server backend reported (``foreign_load``, 0 for other kinds)."""
        return (state.in_flight + self.queue.pinned_to(state.name) + state.foreign_load) / state.weight

    def _worth_waiting_for(self, preferred: str, candidates: Sequence[BackendState]) -> BackendState | None:
        """The pinned backend, if it is merely busy and no busier than the least busy other candidate.

        Waiting for it keeps the conversation's cache; when another backend is less loaded (say idle), going
        there is cheaper than queueing, and the conversation moves with it.
        """
        state = self.by_name.get(preferred)
        now = self.now()
        if state is None or state not in candidates or state.condition(now) is not BackendCondition.HEALTHY:
            return None
        others = [s for s in candidates if s is not state and s.condition(now) is BackendCondition.HEALTHY]
        if others and self.load(state) > min(self.load(s) for s in others):
            return None
        return state

    def _refusal(self, untried: Sequence[BackendState]) -> Refusal | None:
        """The error to answer with when no candidate is eligible, or None if waiting for a slot may help."""
        if not untried:
            return NoBackendAvailable("Every backend that serves this request was tried.")
        now = self.now()
        cooling: list[float] = []
        any_cooling = False
        for state in untried:
            condition = state.condition(now)
            if condition is BackendCondition.HEALTHY:
                return None  # healthy but at max_concurrency: a slot will free up
            if condition is BackendCondition.COOLING:
                any_cooling = True
                cooling.append(state.available_at(now) - now)
            elif condition is BackendCondition.EJECTED and not state.probe_in_flight:
                cooling.append(state.available_at(now) - now)
        if any_cooling:
            soonest = min(cooling)
            return AllBackendsThrottled(
                f"All backends are throttled; retry after {soonest:.3f}s.", retry_after=soonest
            )
        return NoBackendAvailable("No backend is available to serve this request (all ejected or unhealthy).")

    def soonest_recovery(self, candidates: Sequence[BackendState]) -> AllBackendsThrottled | None:
        """429 with the soonest recovery when every candidate is cooling down or ejected (and some cooling)."""
        refusal = self._refusal(candidates)
        return refusal if isinstance(refusal, AllBackendsThrottled) else None

    # -- bookkeeping ---------------------------------------------------------------------------------

    def finish(self, state: BackendState) -> None:
        """A request on ``state`` is over: hand its slot straight to the first waiter that can use it."""
        state.finish_request()
        queue = self.queue
        if not queue.waiting or not queue.anyone_for(state.name):
            # Nobody is queued who could take it (the usual case). Requests pinned to other backends wait for
            # those alone, so whatever state this one is in now changes nothing for them.
            return
        if state.condition(self.now()) is not BackendCondition.HEALTHY:
            # Cooling down, ejected or unhealthy: nobody is handed this backend, and those queued for it may
            # now be better off elsewhere, or with a 429 and a Retry-After: let them all look again.
            self.queue.wake_all()
            return
        waiter = self.queue.next_for(state.name)
        if waiter is not None:
            state.start_request()
            hand_over(waiter, state)

    def wake_all(self) -> None:
        """A backend became usable again (health restored): let every waiter look again."""
        self.queue.wake_all()

    @property
    def queued(self) -> int:
        return len(self.queue)


# Comprehensions apart from the methods on every request's path: a comprehension that reads a local of its
# function makes that local a cell, created on every call of the function, whether the comprehension runs or not.


def not_yet_tried(candidates: Sequence[BackendState], tried: Sequence[str]) -> list[BackendState]:
    return [c for c in candidates if c.name not in tried]


def _serving_model(states: Sequence[BackendState], model: str | None) -> list[BackendState]:
    return [s for s in states if s.config.serves(model)]


def _best_priority(tier: list[BackendState]) -> list[BackendState]:
    best = min(state.priority for state in tier)
    return [state for state in tier if state.priority == best]
