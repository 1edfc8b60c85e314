"""One SharedState on a real Redis, started and stopped as the app does, and a wait for a condition: what the
shared-state tests that drive SharedState directly (fail-open, spares) share."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable, Sequence

from redis.asyncio import Redis

from gateway.shared_state.shared import SharedState
from gateway.shared_state.store import BreakerRule, RedisStore

RULE = BreakerRule(eject_after_failures=3, eject_base=5.0, eject_max=60.0)


@contextlib.asynccontextmanager
async def shared_replica(url: str, backends: Sequence[str], **options: object) -> AsyncIterator[SharedState]:
    redis = Redis.from_url(url, socket_connect_timeout=0.5, retry=None)
    shared = SharedState(RedisStore(redis), list(backends), breaker=RULE, **options)  # type: ignore[arg-type]
    await shared.start()  # as the app does: scripts loaded and connections open before the first request
    task = asyncio.create_task(shared.run())
    try:
        yield shared
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await shared.drain()
        await redis.aclose()


async def eventually(condition: Callable[[], object], timeout: float = 3.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.02)
