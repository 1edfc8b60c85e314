"""Active health checks for llama.cpp backends.

llama.cpp's ``llama-server`` has ``/health``: 200 when ready, 503 while it loads the model (not ready, not an
error). llama-cpp-python's server has none (404), so for it we ask ``/v1/models`` instead. A backend that is
loading or down gets no traffic; when it answers again it is used again, with no restart of the gateway.

A probe that times out while the backend is serving requests means "busy", not "down": llama-cpp-python
answers one request at a time, and we must not eject a backend for being at work.

A backend of kind ``llama-server`` is asked more (gateway/llama_server.py): once ready, its capacity from
``/props`` (``total_slots``, read again whenever it comes back: a restarted server may have other slots) unless
``max_concurrency`` is set by hand, and at every check its load from ``/metrics`` (or ``/slots`` when metrics
are off), which counts other clients' requests too.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from aiohttp import web

from gateway import keys
from gateway.backend_state import BackendState
from gateway.balancer import Balancer
from gateway.llama_server import (
    METRICS_PATH,
    PROPS_PATH,
    SLOTS_PATH,
    ReportedLoad,
    load_from_metrics,
    load_from_slots,
    total_slots,
)
from gateway.logs import get_logger
from gateway.settings import BackendKind
from gateway.upstream import UpstreamClient


def _server_root(url: str) -> str:
    return url.removesuffix("/v1")


class HealthChecker:
    def __init__(self, balancer: Balancer, upstream: UpstreamClient, interval: float) -> None:
        self._balancer = balancer
        self._upstream = upstream
        self._interval = interval
        self._log = get_logger()
        self._use_models_endpoint: set[str] = set()
        self._use_slots_endpoint: set[str] = set()
        self.watched = [s for s in balancer.states if s.config.kind.is_llama_cpp]

    async def check(self, state: BackendState) -> tuple[bool, str]:
        if state.config.kind is BackendKind.LLAMA_SERVER:
            return await self._check_llama_server(state)
        if state.name not in self._use_models_endpoint:
            status, body = await self._upstream.probe(_server_root(state.config.url) + "/health")
            if status == 404:
                self._use_models_endpoint.add(state.name)  # llama-cpp-python: no /health
            else:
                return self._verdict(state, status, body)
        status, body = await self._upstream.probe(state.config.url + "/models")
        return self._verdict(state, status, body)

    async def _check_llama_server(self, state: BackendState) -> tuple[bool, str]:
        root = _server_root(state.config.url)
        status, body = await self._upstream.probe(root + "/health")
        ready, detail = self._verdict(state, status, body)
        if not ready:
            return ready, detail
        if state.config.max_concurrency is None and (state.max_concurrency is None or not state.reachable):
            status, body = await self._upstream.probe(root + PROPS_PATH)
            slots = total_slots(body) if status == 200 else None
            if slots is None:
                return False, f"no total_slots in {PROPS_PATH} (HTTP {status})"
            if slots != state.max_concurrency:
                self._log.info("backend_capacity", backend=state.name, total_slots=slots)
                state.max_concurrency = slots
                self._balancer.wake_all()  # more slots than before: queued requests may go now
        state.record_reported_load(await self._reported_load(state, root))
        return True, ""

    async def _reported_load(self, state: BackendState, root: str) -> ReportedLoad | None:
        """Its own count of requests processing and waiting; None when it says nothing usable."""
        if state.name not in self._use_slots_endpoint:
            status, body = await self._upstream.probe(root + METRICS_PATH)
            if status == 200:
                return load_from_metrics(body)
            if status is not None:  # started without --metrics (501) or an older server (404)
                self._use_slots_endpoint.add(state.name)
        status, body = await self._upstream.probe(root + SLOTS_PATH)
        return load_from_slots(body) if status == 200 else None

    @staticmethod
    def _verdict(state: BackendState, status: int | None, body: bytes) -> tuple[bool, str]:
        if status == 200:
            return True, ""
        if status == 503:
            return False, "loading model"
        if status is None:
            reason = body.decode(errors="replace")
            if reason == "timed out" and state.in_flight > 0:
                return True, ""  # busy serving, not down
            return False, f"unreachable: {reason}"
        return False, f"health check answered HTTP {status}"

    async def check_all(self) -> None:
        results = await asyncio.gather(*(self.check(state) for state in self.watched))
        for state, (reachable, detail) in zip(self.watched, results):
            if state.record_health(reachable, detail):
                log = self._log.info if reachable else self._log.warning
                log("backend_health", backend=state.name, upstream=state.config.host,
                    healthy=reachable, detail=detail or "ok")
                if reachable:
                    self._balancer.wake_all()

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self._interval)
            try:
                await self.check_all()
            except Exception:  # noqa: BLE001 (a bug here must not stop health checking for good)
                self._log.exception("health_check_failed")


async def health_checks_ctx(app: web.Application) -> AsyncIterator[None]:
    checker = HealthChecker(app[keys.BALANCER], app[keys.UPSTREAM], app[keys.SETTINGS].health_interval)
    if not checker.watched:
        yield
        return
    await checker.check_all()  # know which backends are up before the first request
    task = asyncio.create_task(checker.run(), name="gateway-health-checks")
    yield
    task.cancel()
    try:
        await task
    except asyncio.CancelledError:
        pass
