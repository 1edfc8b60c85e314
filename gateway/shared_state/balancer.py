"""The balancer when replicas share their routing state: the same decisions, with Redis as the arbiter.

``SharedBalancer.acquire`` chooses exactly as ``Balancer`` does, on its local view (each backend's
``BackendState``, which the shared view keeps up to date: cooldowns, breaker, probe, in-flight counts of all
replicas). Then:
- the chosen backend is clean and no conversation is to be looked up, and it is uncapped, or capped with a spare
  lease of this replica's on it (``shared``) → taken locally, no Redis call;
- otherwise one script call takes a lease on the first eligible of its ranked candidates (the conversation's
  backend first if the load guard allows), or says none is eligible anywhere, and refreshes the view. Redis is
  asked even when the local view finds every backend busy: the view's count of other replicas' requests is
  only as fresh as the last news, and releases are published only while somebody waits. Not about backends
  whose every slot this replica's own leases take, though: Redis could only refuse those;
- Redis unavailable (down, or slower than the deadline) → ``Balancer.acquire`` on the local view: fail open.

The wait queue stays per process. A slot freed on this replica goes to its own first waiter with the lease
(no barging, as without Redis). A slot freed on another replica wakes this replica's first waiter for that
backend, which tries for it (a refused acquire tells Redis somebody waits, and from then on, for a lease TTL,
releases of that backend are published); waiters also look again every ``lease_ttl / 3``,
since a dead replica's leases expire silently. Across replicas there is no global FIFO: whichever replica's
waiter asks first gets the slot. A global ticket queue would cost a Redis round trip per waiter per freed
slot, and a dead replica's tickets would hold everyone up until they expired.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from typing import Any

from gateway.backend_state import BackendCondition, BackendState
from gateway.balancer import Balancer, Lease, not_yet_tried
from gateway.errors import AllBackendsThrottled
from gateway.outcome import BreakerEffect, Verdict
from gateway.shared_state.shared import SharedState
from gateway.shared_state.store import BackendSnapshot, Candidate
from gateway.wait_queue import hand_over

_EFFECTS = {BreakerEffect.SUCCESS: "ok", BreakerEffect.FAILURE: "failed", BreakerEffect.NEUTRAL: "neutral"}


class SharedLease(Lease):
    """A lease that also holds (or, decided locally, stands for) a slot in the shared state."""

    __slots__ = ("lease_id",)

    def __init__(self, balancer: SharedBalancer, backend: BackendState, skipped: dict[str, str] | None,
                 affinity: str | None, lease_id: str | None) -> None:
        super().__init__(balancer, backend, skipped, affinity)
        self.lease_id = lease_id

    def release(self, verdict: Verdict | None = None) -> float | None:
        if self._released:
            return None
        self._released = True
        state = self.backend
        balancer = self._balancer
        assert isinstance(balancer, SharedBalancer)
        if verdict is None:
            state.abandon()
            ejected = None
        else:
            ejected = state.settle(verdict, balancer.now(), balancer.breaker)
        handed = balancer.finish_with(state, self.lease_id)
        if balancer.shared is not None:
            effect = "neutral" if verdict is None else _EFFECTS[verdict.breaker]
            cooldown = None if verdict is None else verdict.cooldown
            # Handed to a waiter here, the lease lives on with it: only the outcome is recorded.
            balancer.shared.release(state.name, None if handed else self.lease_id, effect, cooldown,
                                    room=balancer.has_room(state))
        return ejected


class SharedBalancer(Balancer):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._queue_max = kwargs.get("queue_max", 1000)
        self.shared: SharedState | None = None  # attached when the app starts (the Redis client lives with it)
        self._others = {state.name: 0 for state in self.states}  # other replicas' requests in flight
        self._handoffs: dict[str, deque[str | None]] = {state.name: deque() for state in self.states}
        self._candidates = {
            state.name: Candidate(state.name, state.max_concurrency, state.weight, state.priority)
            for state in self.states
        }

    def attach(self, shared: SharedState | None) -> None:
        self.shared = shared
        if shared is not None:
            shared.on_change = self.apply
            shared.on_down = self.forget_others

    # -- the one call --------------------------------------------------------------------------------

    async def acquire(
        self, candidates: Sequence[BackendState], tried: Sequence[str], preferred: str | None, deadline: float,
        conversation: bytes | None = None,
    ) -> Lease:
        shared = self.shared
        if shared is None or not shared.up:
            if shared is not None:
                shared.fallbacks["down"] = shared.fallbacks.get("down", 0) + 1
            return await self._local(candidates, tried, preferred, deadline)
        if preferred is not None and preferred in tried:
            preferred = None
        if conversation is not None and any(c.name in tried for c in candidates):
            conversation = None  # a failover: the pin is not the point any more, any free backend will do
        while True:  # each turn asks Redis at most once, then waits for news
            skipped: dict[str, str] = {}
            state = self._choose(candidates, tried, skipped, preferred)
            local = shared.decide_locally(self._candidates[state.name], conversation) if state is not None else None
            if state is not None and local is not None:
                state.start_request()
                return SharedLease(self, state, skipped or None, None, local.lease)
            untried = not_yet_tried(candidates, tried)
            if state is None and (refusal := self._refusal(untried)) is not None:
                raise refusal  # cooling, ejected or unhealthy everywhere: no use asking or waiting
            ranked = self._ranked(state, untried)
            if conversation is None:
                # Where this process's own leases fill the cap, Redis can only say no: don't ask (at saturation
                # that would be a call per request); a slot there frees here, and is handed to our waiter.
                ranked = [c for c in ranked if not shared.filled_by_us(c)]
            if ranked:
                # Redis decides, also when the local view thinks every backend busy: its count of the other
                # replicas' requests is only as fresh as the last news.
                got = await shared.acquire(ranked, conversation)
                if got is None:  # Redis failed us just now: this request is decided locally
                    return await self._local(candidates, tried, preferred, deadline)
                lease_id, acquired = got
                for name, snapshot in acquired.snapshots.items():
                    self.apply(name, snapshot, taken=name == acquired.backend)
                if acquired.backend is not None:
                    taken = self.by_name[acquired.backend]
                    taken.start_request()
                    return SharedLease(self, taken, skipped or None, acquired.affinity, lease_id)
                # Nothing eligible anywhere. Wait for news (a release here, or one published by another
                # replica now that Redis knows somebody waits) before asking again: no busy loop.
                preferred = acquired.pinned if acquired.pinned not in tried else None
                if (refusal := self._refusal(untried)) is not None:
                    raise refusal
            # Every untried backend is healthy but at its max_concurrency, counting every replica: queue.
            pinned = self._worth_waiting_for(preferred, candidates) if preferred is not None else None
            accepts = frozenset((pinned.name,)) if pinned is not None else frozenset(s.name for s in untried)
            if len(self.queue) >= self._queue_max or self.now() >= deadline:
                raise AllBackendsThrottled(
                    f"All backends are busy and no slot freed up within {self.queue_timeout:g}s.", retry_after=1.0
                )
            look_again = self.now() + max(shared.lease_ttl / 3, 0.1)  # leases of a dead replica expire silently
            waited = await self.queue.wait(min(deadline, look_again), accepts,
                                           pinned.name if pinned is not None else None)
            if isinstance(waited, BackendState):
                affinity = None if preferred is None else ("hit" if waited.name == preferred else "moved")
                return SharedLease(self, waited, skipped or None, affinity, self._handed_lease(waited.name))
            # True (news: look again) or False (time to look again, or the deadline, checked above).

    async def _local(
        self, candidates: Sequence[BackendState], tried: Sequence[str], preferred: str | None, deadline: float
    ) -> Lease:
        """Balancer's own decision on this process's view (no Redis), as a lease without a shared slot."""
        lease = await super().acquire(candidates, tried, preferred, deadline)
        # A slot handed over by a request that held a shared lease brings it along (any of ours will do).
        return SharedLease(self, lease.backend, lease.skipped, lease.affinity, self._handed_lease(lease.backend.name))

    def _handed_lease(self, name: str) -> str | None:
        return self._handoffs[name].popleft() if self._handoffs[name] else None

    def _ranked(self, chosen: BackendState | None, untried: list[BackendState]) -> list[Candidate]:
        """What Redis may choose from, best first: the locally chosen backend, then every other healthy one
        (busy or not: Redis counts the slots), by priority and load."""
        now = self.now()
        others = sorted(
            (s for s in untried if s is not chosen and s.condition(now) is BackendCondition.HEALTHY),
            key=lambda s: (s.priority, self.load(s)),
        )
        first = [self._candidates[chosen.name]] if chosen is not None else []
        return [*first, *(self._candidates[s.name] for s in others)]

    # -- the shared view -----------------------------------------------------------------------------

    def apply(self, name: str, snapshot: BackendSnapshot, taken: bool = False) -> None:
        """Fold a backend's shared state into its ``BackendState``, which every decision reads."""
        state = self.by_name.get(name)
        shared = self.shared
        if state is None or shared is None:
            return
        now = self.now()
        if snapshot.cooling > 0:
            state.cooldown_until = max(state.cooldown_until, now + snapshot.cooling)
        state.recovering = snapshot.recovering
        state.consecutive_failures = snapshot.failures
        state.ejections = snapshot.ejections
        state.ejected_until = now + snapshot.ejected if snapshot.ejections else 0.0
        state.probe_in_flight = snapshot.probe_held
        # in_flight counts this process's requests itself; add those of the others: all leases but ours (used,
        # spare, or being given back: a release on its way may not have reached Redis when this was read).
        mine = shared.leases.on(name) + shared.releasing.get(name, 0)
        others = max(snapshot.leases - mine, 0) if state.max_concurrency is not None else 0
        state.in_flight += others - self._others[name]
        self._others[name] = others
        free = state.max_concurrency is None or snapshot.leases < state.max_concurrency
        if not taken and free and self.queue.anyone_for(name) and state.condition(now) is BackendCondition.HEALTHY:
            # A slot freed elsewhere (or the backend recovered): the first waiter that can use it asks Redis (the
            # view's count of other replicas' requests is only an estimate). Not on news of a full backend, such
            # as the answer to a refused call: the waiter would ask again at once, round trip after round trip.
            waiter = self.queue.next_for(name)
            if waiter is not None and not waiter.future.done():
                waiter.future.set_result(True)

    def forget_others(self) -> None:
        """Redis is gone: from now on each process counts only its own requests (fail open)."""
        for name, others in self._others.items():
            self.by_name[name].in_flight -= others
            self._others[name] = 0

    # -- bookkeeping ---------------------------------------------------------------------------------

    def finish(self, state: BackendState) -> None:
        """A slot handed to a waiter who had given up comes back here: pass it and its lease on."""
        lease_id = self._handed_lease(state.name)
        if not self.finish_with(state, lease_id) and self.shared is not None and lease_id is not None:
            self.shared.release(state.name, lease_id, "neutral", room=self.has_room(state))

    def has_room(self, state: BackendState) -> bool:
        """Whether a capped backend would keep at least half its slots free with one more spare of ours: only
        then is a finished request's lease kept for the next one. Where slots are scarce they go back at once: a
        spare there would soon keep another replica's request waiting, or send its conversation elsewhere."""
        cap = state.max_concurrency
        shared = self.shared
        if cap is None or shared is None:
            return False
        return 2 * (state.in_flight + shared.leases.spares(state.name) + 1) <= cap

    def finish_with(self, state: BackendState, lease_id: str | None) -> bool:
        """``Balancer.finish``, passing the shared lease along with the slot; True if it was handed over."""
        state.finish_request()
        if not self.queue.anyone_for(state.name):
            return False
        if state.condition(self.now()) is not BackendCondition.HEALTHY:
            self.queue.wake_all()  # cooling, ejected or unhealthy now: let them all look again
            return False
        waiter = self.queue.next_for(state.name)
        if waiter is None:
            return False
        state.start_request()
        self._handoffs[state.name].append(lease_id)
        hand_over(waiter, state)
        return True
