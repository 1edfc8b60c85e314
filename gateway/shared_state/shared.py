"""The replica's side of the shared state: a local view kept fresh from Redis, and failing open when Redis is not.

Hot path: at most one round trip per request, and often none.
- A backend with no ``max_concurrency`` whose shared state is clean (no cooldown, no failures, no probe out)
  is used on the local view alone: no lease, no call. Only an outcome that changes its state (a 429, a
  failure, a first success after trouble) is sent to Redis, after the answer, off the request's path.
- Otherwise (a capped backend, a backend in trouble, a conversation to pin) acquire is one script call that
  checks cooldown, breaker and affinity and takes the lease; its release is sent after the answer.
- Every release publishes the backend's new state, so the other replicas' views follow within a message; a
  refresh every ``lease_ttl / 3`` (with the renewal of this replica's leases) bounds staleness if one is lost.

Fail open: a call that fails or takes longer than ``deadline`` is abandoned and the request is decided on the
local view (each replica's own bookkeeping, as without Redis). Redis is then marked down: no request waits
for it again until a background ping gets through (every ``RETRY_EVERY`` s). Both transitions are logged
once and counted (``gateway_shared_state_fallbacks_total``, ``gateway_shared_state_up``).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import Callable, Sequence
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from redis.exceptions import TimeoutError as RedisTimeoutError

from gateway.logs import get_logger
from gateway.shared_state.store import (
    Acquired,
    BackendSnapshot,
    BreakerRule,
    Candidate,
    RedisStore,
    StoreUnavailable,
    parse_event,
)

RETRY_EVERY = 0.5  # seconds between pings while Redis is down
SLOW_FOR = 1.0  # seconds of calls missing the deadline, none succeeding, before Redis counts as down


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
    ) -> None:
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
        self.held: dict[str, str] = {}  # lease id → backend: this replica's leases in Redis, renewed
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

    def needs_call(self, candidate: Candidate, conversation: bytes | None) -> bool:
        """Whether taking ``candidate`` must go through Redis (else the local view decides alone)."""
        if not self.up:
            return False
        if conversation is not None or candidate.max_concurrency is not None:
            return True
        view = self.views.get(candidate.name)
        return view is not None and not view.clean

    async def acquire(
        self, candidates: Sequence[Candidate], conversation: bytes | None = None
    ) -> tuple[str, Acquired] | None:
        """(lease id, decision) — or None: Redis is unavailable, decide on the local view."""
        if not self.up:
            self._fell_open("down")
            return None
        lease = self.new_lease()
        try:
            async with asyncio.timeout(self.deadline):
                acquired = await self.store.acquire(
                    candidates, lease, self.lease_ttl, conversation=conversation, affinity_ttl=self.affinity_ttl
                )
        except (StoreUnavailable, TimeoutError) as exc:
            self._failed(exc)
            self._fell_open("error")
            return None
        self._slow_since = None
        if acquired.backend is not None:
            self.held[lease] = acquired.backend
        self.views.update(acquired.snapshots)
        return lease, acquired

    def release(self, backend: str, lease: str | None, effect: str, cooldown: float | None = None) -> None:
        """Free ``lease`` and record the attempt in Redis (breaker ``effect``: ok, failed or neutral; the
        ``cooldown`` asked for), after the answer: a background call.

        Without a lease (the local view decided), an attempt that changes nothing shared is not sent at all.
        """
        if lease is not None:
            self.held.pop(lease, None)
        elif not cooldown and (effect == "neutral" or (effect == "ok" and self.views.get(backend, _CLEAN).clean)):
            return
        if not self.up:
            return  # the lease expires by itself; the outcome stays local
        if lease is not None:
            self.releasing[backend] = self.releasing.get(backend, 0) + 1
        self._spawn(self._release(backend, lease, effect, cooldown or 0.0))

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
                interval = max(self.lease_ttl / 3, 0.1) if self.up else RETRY_EVERY
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
        try:
            async with asyncio.timeout(max(self.deadline, 1.0)):
                await self.store.renew([(backend, lease) for lease, backend in self.held.items()],
                                       self.lease_ttl)
                snapshots = await self.store.snapshot(self.backends)
        except (StoreUnavailable, TimeoutError) as exc:
            self._went_down(exc)
            return
        self._slow_since = None
        if not self.up:
            self.up = True
            self._log.warning("shared_state_restored")  # at the level of the message it answers
        for backend, snapshot in snapshots.items():
            self._apply(backend, snapshot)

    async def _listen(self) -> None:
        """Other replicas' releases, as they happen; reconnects after a lost connection."""
        while True:
            pubsub = self.store.redis.pubsub(ignore_subscribe_messages=True)
            try:
                await pubsub.subscribe(self.store.channel)
                async for message in pubsub.listen():
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
            now = time.monotonic()
            if self._slow_since is None:
                self._slow_since = now
            if now - self._slow_since < SLOW_FOR:
                return
        self._went_down(exc)

    def _went_down(self, exc: BaseException) -> None:
        if self.up:
            self.up = False
            self._went_down_event.set()
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
        """Wait for the releases still being sent (at shutdown)."""
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
