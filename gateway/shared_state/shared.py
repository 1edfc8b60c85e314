"""The replica's side of the shared state: a local view kept fresh from Redis, and failing open when Redis is not.

Hot path: at most one round trip per request, and usually none.
- A backend with no ``max_concurrency`` whose shared state is clean (no cooldown, no failures, no probe out)
  is used on the local view alone: no lease, no call. Only an outcome that changes its state (a 429, a
  failure, a first success after trouble) is sent to Redis, after the answer, off the request's path.
- A capped backend: a request that ends with nothing to record (a success on a clean backend, or cancelled) and
  leaves the backend with at least half its slots free keeps its lease as a *spare* (``leases``), unless some
  replica is waiting for that backend; the next request for it on this replica, if the view is clean and no
  conversation is to be looked up, takes the spare: no call before it, none after. Spares are renewed with the
  other leases; one unused for a renewal interval is given back with the next renewal.
- Otherwise (no spare, a backend in trouble, a conversation to pin) acquire is one script call that checks
  cooldown, breaker and affinity and takes the lease (replacing a spare of ours on the backend it picks, so the
  slot we hold is ours to use); its release is sent after the answer.
- Every release publishes the backend's new state, so the other replicas' views follow within a message; a
  refresh every ``lease_ttl / 3`` (with the renewal of this replica's leases) bounds staleness if one is lost.

Exact across replicas all the same: a request goes to a capped backend only on a lease Redis counts (granted by
the acquire script below the cap, handed on by a request that held it, or kept spare — still in Redis's set), so
the requests of all replicas together never exceed the cap. A spare costs others a slot only while nobody needs
it: a replica refused a slot announces the full backends it wanted (``wants``), the replicas keeping spares there
give them back at once (their release publishes the freed slot, which wakes the waiter), and keep none there for a
lease TTL. The price is on that path only: three round trips (refusal, give-back, retry) instead of one.

Fail open: a call that fails or takes longer than ``deadline`` is abandoned and the request is decided on the
local view (each replica's own bookkeeping, as without Redis). Redis is then marked down: no request waits
for it again until a background ping gets through (every ``RETRY_EVERY`` s). Both transitions are logged
once and counted (``gateway_shared_state_fallbacks_total``, ``gateway_shared_state_up``). Spares are given up
when Redis goes down (given back if it is merely slow, else they expire there): after an outage every slot is
asked for again.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from redis.exceptions import TimeoutError as RedisTimeoutError

from gateway.logs import get_logger
from gateway.shared_state.leases import Leases
from gateway.shared_state.store import (
    Acquired,
    BackendSnapshot,
    BreakerRule,
    Candidate,
    RedisStore,
    StoreUnavailable,
    parse_event,
    parse_want,
)

RETRY_EVERY = 0.5  # seconds between pings while Redis is down
SLOW_FOR = 1.0  # seconds of calls missing the deadline, none succeeding, before Redis counts as down


@dataclass(frozen=True, slots=True)
class Local:
    """A request may go to the backend without asking Redis, on ``lease`` (a spare of ours; None: none needed)."""

    lease: str | None


class SharedState:
    def __init__(
        self,
        store: RedisStore,
        backends: Sequence[str],
        *,
        breaker: BreakerRule,
        deadline: float = 0.05,
        lease_ttl: float = 10.0,
        affinity_ttl: float = 3600.0,
        on_change: Callable[[str, BackendSnapshot], None] | None = None,
        on_down: Callable[[], None] | None = None,
        now: Callable[[], float] = time.monotonic,
    ) -> None:
        """``now``: the clock lease TTLs are kept on (real seconds, as Redis's own)."""
        self.store = store
        self.backends = list(backends)
        self.breaker = breaker
        self.deadline = deadline
        self.lease_ttl = lease_ttl
        self.affinity_ttl = affinity_ttl
        self.on_change = on_change  # called with every fresh snapshot (the balancer applies it)
        self.on_down = on_down  # called when Redis stops answering (the balancer goes back to its own counts)
        self.up = True
        self.views: dict[str, BackendSnapshot] = {}
        self.now = now
        self.interval = max(lease_ttl / 3, 0.1)  # between two renewals (and refreshes of the view)
        self.leases = Leases(margin=self.interval)  # this replica's leases in Redis, renewed; spares among them
        self.wanted: dict[str, float] = {}  # backend → until when no spare is kept there (somebody waits)
        self.releasing: dict[str, int] = {}  # backend → releases of its leases sent and not yet answered
        self.fallbacks: dict[str, int] = {}  # reason → requests decided on the local view
        self._replica = os.urandom(6).hex()
        self._serial = 0
        self._background: set[asyncio.Task[Any]] = set()
        self._went_down_event = asyncio.Event()
        self._slow_since: float | None = None  # when calls started missing the deadline (None: the last one made it)
        self._log = get_logger()

    # -- the hot path --------------------------------------------------------------------------------

    def new_lease(self) -> str:
        self._serial += 1
        return f"{self._replica}:{self._serial}"

    def decide_locally(self, candidate: Candidate, conversation: bytes | None) -> Local | None:
        """How a request may go to ``candidate`` without asking Redis, or None: it must ask."""
        if not self.up or conversation is not None:
            return None
        view = self.views.get(candidate.name)
        if view is not None and not view.clean:
            return None  # a cooldown, a breaker or a probe to respect: Redis decides
        if candidate.max_concurrency is None:
            return Local(None)
        spare = self.leases.take(candidate.name, self.now())
        return Local(spare) if spare is not None else None

    def filled_by_us(self, candidate: Candidate) -> bool:
        """Whether our own leases alone take every slot of ``candidate``: Redis would refuse it for certain."""
        cap = candidate.max_concurrency
        return cap is not None and self.up and self.leases.on(candidate.name) >= cap

    async def acquire(
        self, candidates: Sequence[Candidate], conversation: bytes | None = None
    ) -> tuple[str, Acquired] | None:
        """(lease id, decision) — or None: Redis is unavailable, decide on the local view."""
        if not self.up:
            self._fell_open("down")
            return None
        lease = self.new_lease()
        sent = self.now()
        # Our spares on the candidates count as free slots for this call; the one on the backend it picks is
        # replaced by the new lease.
        lent = {c.name: spare for c in candidates
                if c.max_concurrency is not None and (spare := self.leases.take(c.name, sent)) is not None}
        try:
            async with asyncio.timeout(self.deadline):
                acquired = await self.store.acquire(
                    candidates, lease, self.lease_ttl, conversation=conversation, affinity_ttl=self.affinity_ttl,
                    spares=lent, origin=self._replica,
                )
        except (StoreUnavailable, TimeoutError) as exc:
            for spare in lent.values():
                self.leases.drop(spare)  # given back by the store if the answer comes late, else left to expire
            self._failed(exc)
            self._fell_open("error")
            return None
        self._slow_since = None
        for name, spare in lent.items():
            if name == acquired.backend:
                self.leases.drop(spare)  # replaced (or it had expired)
            elif spare in self.leases:  # (still alive at the last renewal)
                if self._wanted(name):
                    self.leases.drop(spare)
                    self._send_release(name, spare, "neutral")
                else:
                    self.leases.keep(spare, sent)
        if acquired.backend is not None:
            self.leases.add(lease, acquired.backend, sent + self.lease_ttl)
        self.views.update(acquired.snapshots)
        return lease, acquired

    def release(self, backend: str, lease: str | None, effect: str, cooldown: float | None = None, *,
                room: bool = False) -> None:
        """Free ``lease`` and record the attempt in Redis (breaker ``effect``: ok, failed or neutral; the
        ``cooldown`` asked for), after the answer: a background call.

        An attempt that changes nothing shared sends nothing: without a lease (the local view decided), or
        with one when the backend has ``room`` to spare (at least half its slots free, by the balancer's view)
        and nobody waits for it: then the lease is kept for the next request.
        """
        changes_nothing = not cooldown and (
            effect == "neutral" or (effect == "ok" and self.views.get(backend, _CLEAN).clean)
        )
        if lease is not None:
            if changes_nothing and room and self.up and lease in self.leases and not self._wanted(backend):
                self.leases.keep(lease, self.now())
                return
            self.leases.drop(lease)
        elif changes_nothing:
            return
        if not self.up:
            return  # the lease expires by itself; the outcome stays local
        self._send_release(backend, lease, effect, cooldown or 0.0)

    def _send_release(self, backend: str, lease: str | None, effect: str, cooldown: float = 0.0) -> None:
        if lease is not None:
            self.releasing[backend] = self.releasing.get(backend, 0) + 1
        self._spawn(self._release(backend, lease, effect, cooldown))

    async def _release(self, backend: str, lease: str | None, effect: str, cooldown: float) -> None:
        try:
            async with asyncio.timeout(max(self.deadline, 1.0)):
                snapshot = await self.store.release(backend, lease, effect, breaker=self.breaker,
                                                    cooldown=cooldown, origin=self._replica)
        except (StoreUnavailable, TimeoutError) as exc:
            self._went_down(exc)
            return
        finally:
            if lease is not None:
                self.releasing[backend] -= 1
        self._apply(backend, snapshot)

    # -- spares --------------------------------------------------------------------------------------

    def _wanted(self, backend: str) -> bool:
        return self.wanted.get(backend, 0.0) > self.now()

    def _wanted_elsewhere(self, backends: Sequence[str]) -> None:
        """Another replica was refused a slot on ``backends``: give back our spares there, keep none for a TTL
        (as long as its waiting is announced; it is announced again while it goes on)."""
        until = self.now() + self.lease_ttl
        for backend in backends:
            self.wanted[backend] = until
            for _, spare in self.leases.spares_of(backend):
                self._send_release(backend, spare, "neutral")

    # -- keeping the view fresh ----------------------------------------------------------------------

    def _apply(self, backend: str, snapshot: BackendSnapshot) -> None:
        if not self.up:
            return  # news from before the outage (a release that got through late): the local view rules now
        self.views[backend] = snapshot
        if self.on_change is not None:
            self.on_change(backend, snapshot)

    async def start(self, timeout: float = 5.0) -> None:
        """Before the first request: scripts loaded, connections open, the view filled in; or start down."""
        try:
            async with asyncio.timeout(timeout):
                await self.store.prepare()
                snapshots = await self.store.snapshot(self.backends)
        except (StoreUnavailable, TimeoutError) as exc:
            self._went_down(exc)
            return
        for backend, snapshot in snapshots.items():
            self._apply(backend, snapshot)

    async def run(self) -> None:
        """Renew leases, refresh the view, follow other replicas' releases; and notice Redis come back."""
        listener = asyncio.create_task(self._listen())
        try:
            while True:
                interval = self.interval if self.up else RETRY_EVERY
                try:
                    async with asyncio.timeout(interval):
                        await self._went_down_event.wait()  # then wait RETRY_EVERY, not the rest of interval
                    self._went_down_event.clear()
                    continue
                except TimeoutError:
                    pass
                await self._renew_and_refresh()
        finally:
            listener.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await listener

    async def _renew_and_refresh(self) -> None:
        if self.up:
            # Spares nobody used for a whole interval: this replica does not need them now, others may.
            for backend, spare in self.leases.idle(before=self.now() - self.interval):
                self._send_release(backend, spare, "neutral")
        renewal = self.leases.all()
        sent = self.now()
        try:
            async with asyncio.timeout(max(self.deadline, 1.0)):
                alive = await self.store.renew(renewal, self.lease_ttl)
                snapshots = await self.store.snapshot(self.backends)
        except (StoreUnavailable, TimeoutError) as exc:
            self._went_down(exc)
            return
        self.leases.renewed(renewal, alive, sent + self.lease_ttl)
        self._slow_since = None
        if not self.up:
            self.up = True
            self._log.warning("shared_state_restored")  # at the level of the message it answers
        for backend, snapshot in snapshots.items():
            self._apply(backend, snapshot)

    async def _listen(self) -> None:
        """Other replicas' releases and wants, as they happen; reconnects after a lost connection."""
        while True:
            pubsub = self.store.redis.pubsub(ignore_subscribe_messages=True)
            try:
                await pubsub.subscribe(self.store.channel, self.store.wants)
                async for message in pubsub.listen():
                    if _text(message["channel"]) == self.store.wants:
                        want = parse_want(message["data"])
                        if want is not None and want[0] != self._replica and self.up:
                            self._wanted_elsewhere(want[1])
                        continue
                    event = parse_event(message["data"])
                    if event is not None and event[2] != self._replica:  # our own: applied already
                        self._apply(event[0], event[1])
            except Exception as exc:  # noqa: BLE001 - any Redis trouble: the periodic refresh keeps the view
                self._log.debug("shared_state_events_lost", error=f"{type(exc).__name__}: {exc}")
            finally:
                with contextlib.suppress(Exception):
                    await pubsub.aclose()  # type: ignore[no-untyped-call]  # (redis-py leaves it untyped)
            await asyncio.sleep(RETRY_EVERY)

    # -- failing open --------------------------------------------------------------------------------

    def _failed(self, exc: BaseException) -> None:
        """A request's call failed. Unreachable: down now. Slow: down once calls have missed the deadline for
        ``SLOW_FOR`` seconds without one success, so that a stall of a busy machine does not switch every later
        request to the local view (each request still waits no longer than the deadline)."""
        slow = isinstance(exc, TimeoutError) or isinstance(exc.__cause__, (TimeoutError, RedisTimeoutError))
        if slow:
            now = self.now()
            if self._slow_since is None:
                self._slow_since = now
            if now - self._slow_since < SLOW_FOR:
                return
        self._went_down(exc)

    def _went_down(self, exc: BaseException) -> None:
        if self.up:
            self.up = False
            self._went_down_event.set()
            for backend, spare in self.leases.every_spare():
                # Unused from now on: given back if Redis is merely slow, else they expire there.
                self._send_release(backend, spare, "neutral")
            if self.on_down is not None:
                self.on_down()
            reason = str(exc) or type(exc).__name__
            self._log.warning("shared_state_unavailable", error=reason,
                              fallback="local view of this process until Redis answers again")

    def _fell_open(self, reason: str) -> None:
        self.fallbacks[reason] = self.fallbacks.get(reason, 0) + 1

    def _spawn(self, coroutine: Any) -> None:
        task = asyncio.get_running_loop().create_task(coroutine)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def drain(self) -> None:
        """Give the spares back and wait for the releases still being sent (at shutdown)."""
        if self.up:
            for backend, spare in self.leases.every_spare():
                self._send_release(backend, spare, "neutral")
        if self._background:
            await asyncio.wait(list(self._background), timeout=max(self.deadline, 1.0))

    def families(self) -> list[Metric]:
        up = GaugeMetricFamily("gateway_shared_state_up", "1 when the shared state (Redis) answers, 0 when this "
                               "process decides on its local view", value=1.0 if self.up else 0.0)
        fallbacks = CounterMetricFamily(
            "gateway_shared_state_fallbacks", "Requests decided on the local view because Redis was unavailable "
            "(error: this request's call failed or was too slow; down: Redis was known to be down)",
            labels=["reason"],
        )
        for reason in ("error", "down"):
            fallbacks.add_metric([reason], self.fallbacks.get(reason, 0))
        return [up, fallbacks]


_CLEAN = BackendSnapshot(0.0, False, 0, 0, 0.0, False, 0)


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
