"""Which backend takes the next attempt, and what to say when none can.

Selection, in order:
1. candidates: backends that serve the requested model and were not already tried for this request;
2. eligible: not cooling down, not ejected, healthy, under their ``max_concurrency``;
3. the best (lowest) ``priority`` among the eligible;
4. inside that tier: the conversation's pinned backend (affinity) if it is there and no busier than the least
   busy; else least outstanding requests (per unit of weight) when the backends have a known capacity
   (``max_concurrency``) or ``routing=least_outstanding``; otherwise smooth weighted round robin.

When nothing is eligible the reason decides the answer: every candidate cooling down → 429 at once with the
soonest recovery as Retry-After (the client's own backoff then waits, not us); all merely busy → wait in a
bounded queue for a free slot; nothing alive at all → 503.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable, Iterable

from gateway.backend_state import BackendCondition, BackendState
from gateway.errors import AllBackendsThrottled, ModelNotFound, NoBackendAvailable
from gateway.settings import BackendConfig, RoutingStrategy


class Balancer:
    def __init__(
        self,
        backends: Iterable[BackendConfig],
        *,
        routing: RoutingStrategy = RoutingStrategy.AUTO,
        queue_timeout: float = 30.0,
        queue_max: int = 1000,
        queue_aging: float = 5.0,
        now: Callable[[], float],
    ) -> None:
        self.states = [BackendState(config) for config in backends]
        self.by_name = {state.name: state for state in self.states}
        self.now = now
        self._queue_timeout = queue_timeout
        self._queue_max = queue_max
        self._waiters: deque[_Waiter] = deque()
        # Requests waiting for one backend in particular (the one holding their conversation).
        self._pinned_waiters: dict[str, deque[_Waiter]] = {s.name: deque() for s in self.states}
        self._aging = queue_aging
        self._least_outstanding = routing is RoutingStrategy.LEAST_OUTSTANDING or (
            routing is RoutingStrategy.AUTO and all(s.max_concurrency is not None for s in self.states)
        )
        self._restricted_models = any(s.config.models is not None for s in self.states)
        # Equal weights make smooth weighted round robin a plain rotation, which costs a third as much.
        self._equal_weights = len({s.weight for s in self.states}) <= 1
        self._turn = 0  # rotates ties (least outstanding) or turns (equal weights); a balancer uses one

    # -- choosing --------------------------------------------------------------------------------------

    def candidates(self, model: str | None) -> list[BackendState]:
        if not self._restricted_models:
            return self.states
        serving = [s for s in self.states if s.config.serves(model)]
        if not serving:
            raise ModelNotFound(f"The model {model!r} does not exist or no backend serves it.")
        return serving

    def choose(
        self,
        candidates: list[BackendState],
        tried: frozenset[str] | set[str],
        skipped: dict[str, str] | None = None,
        preferred: str | None = None,
    ) -> BackendState | None:
        """The backend for the next attempt, or None when no untried candidate is eligible right now.

        ``skipped`` (if given) is filled with the reason each untried candidate was passed over, for the log.
        """
        now = self.now()
        best_priority = None
        tier: list[BackendState] = []
        for state in candidates:
            if state.name in tried:
                continue
            if not state.available(now):
                if skipped is not None:
                    skipped[state.name] = state.skip_reason(now) or "busy"
                continue
            priority = state.priority
            if best_priority is None or priority < best_priority:
                best_priority, tier = priority, [state]
            elif priority == best_priority:
                tier.append(state)
        if not tier:
            return None
        if len(tier) == 1:
            return tier[0]
        if preferred is not None:
            for state in tier:
                if state.name == preferred and self.load(state) <= min(self.load(s) for s in tier):
                    return state
        if self._least_outstanding:
            return self._least_loaded(tier)
        if self._equal_weights:
            self._turn += 1
            return tier[(self._turn - 1) % len(tier)]  # the first backend first, as round robin is expected to
        return self._smooth_weighted_round_robin(tier)

    def _least_loaded(self, tier: list[BackendState]) -> BackendState:
        # Rotate the starting point so that equally loaded backends take turns instead of the first always
        # winning ties (which would leave the second idle at low concurrency).
        self._turn += 1
        offset = self._turn % len(tier)
        rotated = tier[offset:] + tier[:offset]
        return min(rotated, key=self.load)

    @staticmethod
    def _smooth_weighted_round_robin(tier: list[BackendState]) -> BackendState:
        # nginx's smooth WRR: weights 5,1,1 give a a b a c a a rather than a a a a a b c.
        total = 0
        chosen = tier[0]
        for state in tier:
            state.current_weight += state.weight
            total += state.weight
            if state.current_weight > chosen.current_weight:
                chosen = state
        chosen.current_weight -= total
        return chosen

    # -- when nothing is eligible ----------------------------------------------------------------------

    def refusal(self, candidates: list[BackendState]) -> AllBackendsThrottled | NoBackendAvailable | None:
        """The error to answer with when no candidate is eligible, or None if waiting for a slot may help."""
        now = self.now()
        cooling: list[float] = []
        busy = False
        for state in candidates:
            condition = state.condition(now)
            if condition is BackendCondition.HEALTHY:
                busy = True  # healthy but at max_concurrency: a slot will free up
            elif condition is BackendCondition.COOLING:
                cooling.append(state.available_at(now) - now)
            elif condition is BackendCondition.EJECTED and not state.probe_in_flight:
                cooling.append(state.available_at(now) - now)
        if busy:
            return None
        if cooling and any(s.condition(now) is BackendCondition.COOLING for s in candidates):
            soonest = min(cooling)
            return AllBackendsThrottled(
                f"All backends are throttled; retry after {soonest:.3f}s.", retry_after=soonest
            )
        return NoBackendAvailable("No backend is available to serve this request (all ejected or unhealthy).")

    def load(self, state: BackendState) -> float:
        """Outstanding work per unit of weight: requests in flight plus those queued for this backend only."""
        return (state.in_flight + len(self._pinned_waiters[state.name])) / state.weight

    def worth_waiting_for(self, preferred: str, candidates: list[BackendState]) -> BackendState | None:
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

    async def wait_for_slot(
        self, deadline: float, accepts: frozenset[str], backend: BackendState | None = None
    ) -> BackendState | bool:
        """Queue until a slot frees up on one of ``accepts`` (or on ``backend``, for a pinned conversation).

        Returns the backend whose slot was handed over — already counted as started, so no request arriving
        meanwhile can take it (no barging) — or True when
        something changed and the caller should look again (a backend came back), or False on deadline or a
        full queue.
        """
        remaining = deadline - self.now()
        if remaining <= 0 or self.queued >= self._queue_max:
            return False
        queue = self._waiters if backend is None else self._pinned_waiters[backend.name]
        waiter = _Waiter(asyncio.get_running_loop().create_future(), accepts, self.now())
        queue.append(waiter)
        delivered = False
        try:
            async with asyncio.timeout(remaining):
                result = await waiter.future
            delivered = True
            return result
        except TimeoutError:
            return False
        finally:
            if not delivered:
                if waiter.future.done() and not waiter.future.cancelled():
                    handed = waiter.future.result()
                    if isinstance(handed, BackendState):
                        self.finish(handed)  # handed over as we gave up: pass it on, don't leak it
                else:
                    waiter.future.cancel()
            try:
                queue.remove(waiter)
            except ValueError:
                pass

    @property
    def queue_timeout(self) -> float:
        return self._queue_timeout

    @property
    def queued(self) -> int:
        return len(self._waiters) + sum(len(queue) for queue in self._pinned_waiters.values())

    # -- bookkeeping -----------------------------------------------------------------------------------

    def start(self, state: BackendState) -> None:
        state.start_request(self.now())

    def finish(self, state: BackendState) -> None:
        """A request on ``state`` is over: hand its slot straight to the first waiter that can use it."""
        state.finish_request()
        if not self._waiters and not self._pinned_waiters[state.name]:
            # Nobody is queued who could take it (the usual case). Requests pinned to other backends wait for
            # those alone, so whatever state this one is in now changes nothing for them.
            return
        if state.condition(self.now()) is not BackendCondition.HEALTHY:
            # Cooling down, ejected or unhealthy: nobody is handed this backend, and those queued for it may
            # now be better off elsewhere, or with a 429 and a Retry-After: let them all look again.
            self.wake_all()
            return
        # A request whose conversation is cached here goes first: it is the shortest job (its history needs
        # no re-reading), and serving short jobs first lowers everyone's wait (bench.affinity: turn-3 TTFT
        # 2.5 s first come first served, 0.9 s this way). Aging bounds the cost for the others: a request that
        # has queued longer than `aging` seconds outranks them.
        # Requests pinned to another backend are never handed this one, even if it would idle: moving a
        # conversation means re-reading its whole history, while its own backend frees up within one answer.
        pinned = _first_accepting(self._pinned_waiters[state.name], state.name)
        general = _first_accepting(self._waiters, state.name)
        if pinned is not None and (general is None or self.now() - general.since <= self._aging):
            waiter, queue = pinned, self._pinned_waiters[state.name]
        elif general is not None:
            waiter, queue = general, self._waiters
        else:
            return
        queue.remove(waiter)
        self.start(state)
        waiter.future.set_result(state)

    def wake_all(self) -> None:
        """A backend became usable again (health restored): let every waiter look again."""
        for queue in (self._waiters, *self._pinned_waiters.values()):
            while queue:
                waiter = queue.popleft()
                if not waiter.future.done():
                    waiter.future.set_result(True)

    def any_ready(self) -> bool:
        now = self.now()
        return any(s.condition(now) is BackendCondition.HEALTHY for s in self.states)


class _Waiter:
    __slots__ = ("future", "accepts", "since")

    def __init__(self, future: asyncio.Future[BackendState | bool], accepts: frozenset[str], since: float) -> None:
        self.future = future
        self.accepts = accepts
        self.since = since


def _first_accepting(queue: deque[_Waiter], backend: str) -> _Waiter | None:
    """The oldest live waiter in ``queue`` that may use ``backend`` (its model, not already tried)."""
    for waiter in queue:
        if not waiter.future.done() and backend in waiter.accepts:
            return waiter
    return None
