"""The shared state's lifetime is the app's: the Redis client, the view's background task, the metrics."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterator
from typing import Any

from aiohttp import web
from prometheus_client.core import Metric
from prometheus_client.registry import Collector

from gateway import keys
from gateway.shared_state.balancer import SharedBalancer
from gateway.shared_state.connection import redis_client
from gateway.shared_state.shared import SharedState
from gateway.shared_state.store import BreakerRule, RedisStore


class _SharedStateCollector(Collector):
    def __init__(self, shared: SharedState) -> None:
        self._shared = shared

    def collect(self) -> Iterator[Metric]:
        yield from self._shared.families()


def shared_state_ctx(credential: Any = None) -> Any:
    async def shared_state(app: web.Application) -> AsyncIterator[None]:
        settings = app[keys.SETTINGS]
        balancer = app[keys.BALANCER]
        assert settings.state_url is not None and isinstance(balancer, SharedBalancer)
        async with redis_client(settings.state_url, auth=settings.state_auth, deadline=settings.state_deadline,
                                credential=credential, wall=app[keys.CLOCK].wall) as redis:
            shared = SharedState(
                RedisStore(redis),
                [state.name for state in balancer.states],
                breaker=BreakerRule(settings.eject_after_failures, settings.eject_base, settings.eject_max),
                deadline=settings.state_deadline,
                lease_ttl=settings.state_lease_ttl,
                affinity_ttl=settings.state_affinity_ttl,
            )
            balancer.attach(shared)
            await shared.start()
            app[keys.METRICS].registry.register(_SharedStateCollector(shared))
            running = asyncio.create_task(shared.run())
            yield
            running.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await running
            await shared.drain()
            balancer.attach(None)

    return shared_state
