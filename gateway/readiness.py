"""``/readyz``: can this gateway serve a request now?

Ready when at least one backend can take traffic. For llama.cpp backends the background health checks
(``gateway.health``) and the breaker already say so in the backend's condition. ``openai``/``azure`` backends
have no health check, so their condition alone would call a backend that refuses every connection "healthy"
until enough requests failed on it. Readiness therefore asks them too: a short ``GET {url}/models``, where any
HTTP answer (even 401 or 404) means reachable and only a refused or timed-out connection means not; the answer
is kept for ``interval`` seconds, so probes from orchestrators (or anyone: /readyz is public) cost the backends
at most one request per interval. The body names each backend with its condition, never its URL.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from gateway.backend_state import BackendCondition, BackendState
from gateway.balancer import Balancer
from gateway.upstream import UpstreamClient

UNREACHABLE = "unreachable"


class Readiness:
    def __init__(
        self, balancer: Balancer, upstream: UpstreamClient, *, interval: float, now: Callable[[], float]
    ) -> None:
        self._balancer = balancer
        self._upstream = upstream
        self._interval = interval
        self._now = now
        self._unchecked = [s for s in balancer.states if not s.config.kind.is_llama_cpp]
        self._reachable: dict[str, bool] = {}
        self._checked_at: float | None = None
        self._lock = asyncio.Lock()

    async def report(self) -> tuple[bool, dict[str, str]]:
        """(ready, backend name → its condition, or "unreachable")."""
        await self._refresh()
        now = self._now()
        backends: dict[str, str] = {}
        for state in self._balancer.states:
            condition = state.condition(now)
            if condition is BackendCondition.HEALTHY and not self._reachable.get(state.name, True):
                backends[state.name] = UNREACHABLE
            else:
                backends[state.name] = condition.value
        ready = any(value == BackendCondition.HEALTHY.value for value in backends.values())
        return ready, backends

    async def _refresh(self) -> None:
        if not self._unchecked:
            return
        async with self._lock:  # one round of probes at a time, however many /readyz arrive together
            if self._checked_at is not None and self._now() - self._checked_at < self._interval:
                return
            results = await asyncio.gather(*(self._reaches(state) for state in self._unchecked))
            self._reachable = {state.name: ok for state, ok in zip(self._unchecked, results, strict=True)}
            self._checked_at = self._now()

    async def _reaches(self, state: BackendState) -> bool:
        status, _ = await self._upstream.probe(state.config.url + "/models", state.config)
        return status is not None
