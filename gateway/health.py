"""Active health checks for llama.cpp backends.

llama.cpp's ``llama-server`` has ``/health``: 200 when ready, 503 while it loads the model (not ready, not an
error). llama-cpp-python's server has none (404), so for it we ask ``/v1/models`` instead. A backend that is
loading or down gets no traffic; when it answers again it is used again, with no restart of the gateway.

A probe that times out while the backend is serving requests means "busy", not "down": llama-cpp-python
answers one request at a time, and we must not eject a backend for being at work.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from aiohttp import web

from gateway import keys
from gateway.backend_state import BackendState
from gateway.balancer import Balancer
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
        self.watched = [s for s in balancer.states if s.config.kind is BackendKind.LLAMACPP]

    async def check(self, state: BackendState) -> tuple[bool, str]:
        if state.name not in self._use_models_endpoint:
            status, body = await self._upstream.probe(_server_root(state.config.url) + "/health")
            if status == 404:
                self._use_models_endpoint.add(state.name)  # llama-cpp-python: no /health
            else:
                return self._verdict(state, status, body)
        status, body = await self._upstream.probe(state.config.url + "/models")
        return self._verdict(state, status, body)

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
