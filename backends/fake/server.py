"""Running a fake on a real socket: for tests (`serve`) and for the CLI (`run_forever`)."""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import AsyncIterator, Callable
from typing import TYPE_CHECKING

from aiohttp import web
from aiohttp.log import access_logger

if TYPE_CHECKING:
    from .upstream import FakeUpstream


def _url(host: str, port: int) -> str:
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


@contextlib.asynccontextmanager
async def serve(
    upstream: FakeUpstream,
    host: str = "127.0.0.1",
    port: int = 0,
    *,
    access_log: bool = False,
    shutdown_timeout: float = 1.0,
) -> AsyncIterator[str]:
    """Listen on `host:port` (0: an ephemeral port) and yield the base URL until the block exits."""
    runner = web.AppRunner(
        upstream.make_app(),
        # Cancel the handler when the client goes away, so RecordedRequest.cancelled is set promptly.
        handler_cancellation=True,
        # Off unless asked for: the fake runs under benchmarks where logging each request costs throughput.
        access_log=access_logger if access_log else None,
        # Tests should not wait long for a scripted multi-second delay when they are done.
        shutdown_timeout=shutdown_timeout,
    )
    await runner.setup()
    try:
        site = web.TCPSite(runner, host, port, backlog=1024)
        await site.start()
        upstream.base_url = _url(host, runner.addresses[0][1])
        yield upstream.base_url
    finally:
        upstream.base_url = None
        await runner.cleanup()


async def run_forever(
    upstream: FakeUpstream, host: str, port: int, *, access_log: bool, announce: Callable[[str], None]
) -> None:
    """Serve until SIGINT/SIGTERM; `announce` gets the URL once listening (port 0 picks one)."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    async with serve(upstream, host, port, access_log=access_log) as url:
        announce(url)
        await stop.wait()
