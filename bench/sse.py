"""Streaming clients: one stream at a time, timed chunk by chunk (time to first token, gaps between chunks),
and many streams held open at once (the memory a server needs per open stream).

A stream's events are timed when their line arrives, so the cost of this client is in every number alike,
direct or through a proxy.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
from collections.abc import Mapping
from dataclasses import dataclass, field

import aiohttp


@dataclass(frozen=True)
class StreamTiming:
    ttft: float  # seconds from sending the request to the first data event
    gaps: tuple[float, ...]  # seconds between consecutive data events ([DONE] excluded)


class StreamFailed(Exception):
    pass


async def timed_stream(
    session: aiohttp.ClientSession, url: str, body: bytes, headers: Mapping[str, str]
) -> StreamTiming:
    started = time.perf_counter()
    arrivals: list[float] = []
    async with session.post(url, data=body, headers=headers) as response:
        if response.status != 200:
            raise StreamFailed(f"HTTP {response.status}: {(await response.read())[:200]!r}")
        done = False
        # Read to the end even after [DONE]: a response left half-read would cost its kept-alive connection.
        async for line in response.content:
            if done or not line.startswith(b"data:"):
                continue
            if line.strip() == b"data: [DONE]":
                done = True
                continue
            arrivals.append(time.perf_counter())
    if not arrivals:
        raise StreamFailed("the stream ended without a data event")
    gaps = tuple(later - earlier for earlier, later in itertools.pairwise(arrivals))
    return StreamTiming(ttft=arrivals[0] - started, gaps=gaps)


async def sequential_streams(
    url: str, body: bytes, headers: Mapping[str, str], *, duration: float, limit: int = 10_000
) -> tuple[list[StreamTiming], int]:
    """Streams one after another over one kept-alive connection for `duration` s; (timings, failures)."""
    timings: list[StreamTiming] = []
    failures = 0
    connector = aiohttp.TCPConnector(limit=1)
    timeout = aiohttp.ClientTimeout(total=30)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        deadline = time.monotonic() + duration
        while time.monotonic() < deadline and len(timings) + failures < limit:
            try:
                timings.append(await timed_stream(session, url, body, headers))
            except (StreamFailed, aiohttp.ClientError, TimeoutError):
                failures += 1
    return timings, failures


@dataclass
class OpenStreams:
    """`count` streams opened at once (at most `opening` connecting at a time) and held until close()."""

    url: str
    body: bytes
    headers: Mapping[str, str]
    count: int
    opening: int = 100
    opened: int = 0
    failed: int = 0
    ended: int = 0
    errors: list[str] = field(default_factory=list)
    _all_open: asyncio.Event = field(default_factory=asyncio.Event)
    _tasks: list[asyncio.Task[None]] = field(default_factory=list)
    _session: aiohttp.ClientSession | None = None

    async def open(self, timeout: float) -> None:
        """Returns when every stream has sent its first event or failed, or after `timeout` seconds."""
        connector = aiohttp.TCPConnector(limit=0, force_close=True)
        self._session = aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=None))
        gate = asyncio.Semaphore(self.opening)
        self._tasks = [asyncio.create_task(self._hold(gate)) for _ in range(self.count)]
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._all_open.wait(), timeout)

    def _settled(self) -> None:
        if self.opened + self.failed == self.count:
            self._all_open.set()

    @property
    def open_now(self) -> int:
        return self.opened - self.ended

    async def _hold(self, gate: asyncio.Semaphore) -> None:
        assert self._session is not None
        first = True
        await gate.acquire()
        try:
            async with self._session.post(self.url, data=self.body, headers=self.headers) as response:
                if response.status != 200:
                    raise StreamFailed(f"HTTP {response.status}")
                # Keep reading, as a chat client does: a stream nobody reads would stall in socket buffers.
                async for line in response.content:
                    if first and line.startswith(b"data:"):
                        first = False
                        self.opened += 1
                        gate.release()
                        self._settled()
            if first:
                raise StreamFailed("the stream ended before its first event")
        except (StreamFailed, aiohttp.ClientError, OSError) as exc:
            if first:
                self.failed += 1
                if len(self.errors) < 5:
                    self.errors.append(str(exc) or type(exc).__name__)
                gate.release()
                self._settled()
                return
        if not first:
            self.ended += 1  # over (or broken) before we closed it: no longer open

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._session is not None:
            await self._session.close()
