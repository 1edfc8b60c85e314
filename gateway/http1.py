"""A lean HTTP/1.1 client for the hot path: keep-alive connections on asyncio protocols, parsed by httptools.

Why not aiohttp's client: under load it was a quarter of the gateway's CPU (request and response objects,
tracing hooks, cookie and redirect machinery, a timer context per request), all for requests whose shape never
changes. Both sit behind the same seam (``gateway.transports``, ``GATEWAY_UPSTREAM_CLIENT``); measured side by side
(bench targets gateway-http1 and gateway-aiohttp) this one carried 1.7-2.2x the requests per second at c=32. Here a request is one pre-built header block plus the body, written in one call on a pooled
connection, and the answer is parsed by llhttp (through httptools, as uvicorn does).

What it does, and no more:
- one idle-connection stack per origin (most recently used first, so warm sockets are reused), each idle
  connection closed after ``idle_timeout``; a connection the server closed while idle is dropped from the pool;
- one timer per connection for both timeouts, re-armed when it fires rather than per request (a timer
  started and cancelled twice per request was 3% of the gateway's CPU under load);
- plain TCP or TLS (``https`` origins, certificate checked against the host name);
- a connect timeout, and a read timeout that fires when nothing has arrived for that long (not while we
  ourselves have paused reading because the consumer is slow);
- bodies framed by Content-Length, chunked transfer coding, or the end of the connection;
- back-pressure: reading pauses while more than ``_HIGH_WATER`` bytes wait for a slow consumer;
- at most ``max_connections`` per origin, and requests wait for one to come free;
- a request is written once and never resent: a connection the server closed while idle is skipped before
  writing, and after writing nobody can tell whether the server acted on it (see ``ConnectionPool.request``).

Its errors are its own (``Http1Error`` and subclasses); ``gateway.upstream`` translates them.
"""

from __future__ import annotations

import asyncio
import ssl
from collections import deque
from collections.abc import AsyncIterator
from typing import NamedTuple
from urllib.parse import urlsplit

import httptools
from multidict import CIMultiDict, CIMultiDictProxy

_HIGH_WATER = 256 * 1024  # buffered body bytes at which reading pauses
_LOW_WATER = 64 * 1024  # ... and resumes


class Http1Error(Exception):
    """The request could not be completed."""


class ConnectError(Http1Error):
    """No connection could be opened."""


class ConnectTimeout(ConnectError):
    """The connection was not open within the connect timeout."""


class ReadTimeout(Http1Error):
    """Nothing arrived from the server within the read timeout."""


class Disconnected(Http1Error):
    """The server closed the connection, or sent something that is not HTTP/1.1."""


class Origin(NamedTuple):
    """Where a connection goes: pooled connections are shared by requests to the same origin.

    A named tuple rather than a frozen dataclass: the pool looks it up in a dict a few times per request, and
    a tuple hashes and compares in C where a dataclass runs its generated Python ``__hash__`` and ``__eq__``.
    """

    scheme: str
    host: str
    port: int

    @classmethod
    def of(cls, url: str) -> tuple[Origin, str]:
        """``https://h:8443/a/b?q=1`` → (Origin(https, h, 8443), ``/a/b?q=1``)."""
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"not an http(s) URL: {url!r}")
        port = parts.port or (443 if parts.scheme == "https" else 80)
        target = parts.path or "/"
        if parts.query:
            target += "?" + parts.query
        return cls(parts.scheme, parts.hostname, port), target

    @property
    def host_header(self) -> str:
        default = 443 if self.scheme == "https" else 80
        host = f"[{self.host}]" if ":" in self.host else self.host
        return host if self.port == default else f"{host}:{self.port}"


def request_head(method: str, target: str, origin: Origin, headers: dict[str, str]) -> bytes:
    """The fixed part of a request's header block: request line, Host and the given headers, no blank line.

    Built once per backend; per request only the variable headers, Content-Length and the body are added.
    """
    head = f"{method} {target} HTTP/1.1\r\n".encode("latin-1") + header_line("Host", origin.host_header)
    return head + b"".join(header_line(name, value) for name, value in headers.items())


def header_line(name: str, value: str) -> bytes:
    """``name: value`` and its CRLF, ready to join to a head; raises ValueError for an unsafe value."""
    return f"{name}: {header_value(value)}\r\n".encode("latin-1")


def is_safe_header_value(value: str) -> bool:
    """Whether ``value`` can go into a header without smuggling a header of its own."""
    return "\r" not in value and "\n" not in value


def header_value(value: str) -> str:
    """``value``, checked with ``is_safe_header_value``."""
    if not is_safe_header_value(value):
        raise ValueError("a header value may not contain CR or LF")
    return value


class Response:
    """An answer whose status and headers have arrived; the body is read with ``read`` or ``iter_chunks``.

    ``close`` must always be called: it returns a fully read connection to the pool and closes one whose
    answer was not read to the end (which is how an abandoned upstream request is cancelled).
    """

    __slots__ = (
        "_buffered",
        "_chunks",
        "_closed",
        "_complete",
        "_connection",
        "_error",
        "_waiter",
        "headers",
        "status",
    )

    def __init__(self, connection: _Connection, status: int, headers: CIMultiDictProxy[str]) -> None:
        self.status = status
        self.headers = headers
        self._connection = connection
        # A list, not a deque: an open stream holds one, and an empty deque is ~0.6 kB where a list is 56 bytes.
        self._chunks: list[bytes] = []
        self._buffered = 0
        self._complete = False
        self._error: Http1Error | None = None
        self._waiter: asyncio.Future[None] | None = None
        self._closed = False

    @property
    def content_type(self) -> str:
        value = self.headers.get("Content-Type", "")
        return value.partition(";")[0].strip().lower()

    def take_body(self) -> bytes | None:
        """The whole body if it has all arrived (nearly every non-streamed answer has, by the time its headers
        are handled); None if some is still to come, for ``read`` to wait for."""
        if not self._complete or self._error is not None or self._connection._paused:
            return None
        chunks, self._chunks = self._chunks, []
        body = b"".join(chunks) if len(chunks) != 1 else chunks[0]
        self._buffered = 0
        return body

    async def read(self) -> bytes:
        parts: list[bytes] = []
        while True:
            if self._chunks:
                parts.extend(self._chunks)
                self._chunks.clear()
                self._buffered = 0
                self._connection.resume_reading()
            if self._error is not None:
                raise self._error
            if self._complete:
                return b"".join(parts)
            await self._wait()

    async def iter_chunks(self) -> AsyncIterator[bytes]:
        """The body as it arrives, in the pieces the network delivered (a stream's events are not regrouped)."""
        while True:
            while self._chunks:
                # What has arrived, taken as a batch (what arrives meanwhile goes to a new list, taken next).
                chunks, self._chunks = self._chunks, []
                for chunk in chunks:
                    self._buffered -= len(chunk)
                    if self._buffered <= _LOW_WATER:
                        self._connection.resume_reading()
                    yield chunk
            if self._error is not None:
                raise self._error
            if self._complete:
                return
            await self._wait()

    async def _wait(self) -> None:
        self._waiter = self._connection.loop.create_future()
        try:
            await self._waiter
        finally:
            self._waiter = None

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._complete and self._error is None:
            self._connection.release()
        else:
            self._connection.abort()

    # -- fed by the connection -------------------------------------------------------------------------

    def _feed(self, chunk: bytes) -> None:
        self._chunks.append(chunk)
        self._buffered += len(chunk)
        if self._buffered > _HIGH_WATER:
            self._connection.pause_reading()
        if self._waiter is not None:  # (a whole answer usually arrives before anyone waits: no call then)
            self._wake()

    def _finish(self) -> None:
        self._complete = True
        if self._waiter is not None:
            self._wake()

    def _fail(self, error: Http1Error) -> None:
        if not self._complete:
            self._error = error
            self._wake()

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)


class _Connection(asyncio.Protocol):
    """One keep-alive connection: sends a request, parses its answer, and goes back to its pool."""

    def __init__(self, pool: ConnectionPool, origin: Origin, loop: asyncio.AbstractEventLoop) -> None:
        self.pool = pool
        self.origin = origin
        self.loop = loop
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.closed = False
        self.idle_since: float | None = None  # set while the connection waits in its pool
        # The request in flight
        self._headers_waiter: asyncio.Future[Response] | None = None
        self._raw_headers: list[tuple[str, str]] = []
        self._response: Response | None = None
        self._paused = False
        self._keep_alive = False
        self._in_flight = False  # from sending a request until its answer is complete
        self._read_timeout = 0.0
        self._last_read = 0.0
        # The watchdog: one pending timer at most, at or before the earliest deadline that may be due.
        self._watchdog: asyncio.TimerHandle | None = None
        self._watchdog_due = 0.0

    # -- sending ---------------------------------------------------------------------------------------

    def send(self, data: bytes, read_timeout: float) -> asyncio.Future[Response]:
        assert self.transport is not None
        self._headers_waiter = self.loop.create_future()
        self._raw_headers = []
        self._response = None
        self._keep_alive = False
        self._in_flight = True
        self._read_timeout = read_timeout
        self._last_read = now = self.loop.time()
        self._arm_watchdog(now + read_timeout)
        self.transport.write(data)
        return self._headers_waiter

    def release(self) -> None:
        self._in_flight = False
        if self.closed or self._paused or not self._keep_alive:
            self.abort()
            return
        self._response = None
        self.pool.put_back(self)

    def wait_idle(self, idle_timeout: float) -> None:
        """In the pool from now on: closed once it has been idle for ``idle_timeout`` seconds."""
        self.idle_since = now = self.loop.time()
        self._arm_watchdog(now + idle_timeout)

    def abort(self) -> None:
        self._in_flight = False
        self._stop_watchdog()
        if not self.closed:
            self.closed = True
            self.pool.forget(self)
            if self.transport is not None:
                self.transport.abort()

    # -- flow control ----------------------------------------------------------------------------------

    def pause_reading(self) -> None:
        if not self._paused and self.transport is not None and not self.closed:
            self._paused = True
            self.transport.pause_reading()

    def resume_reading(self) -> None:
        if self._paused and self.transport is not None and not self.closed:
            self._paused = False
            self._last_read = self.loop.time()  # a slow consumer is not a silent server
            self.transport.resume_reading()

    # -- asyncio.Protocol ------------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        if self._headers_waiter is None and self._response is None:
            # Bytes with no request in flight: the connection's framing can no longer be trusted.
            self.abort()
            return
        self._last_read = self.loop.time()
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._fail(Disconnected(f"malformed HTTP answer: {exc}"))
            self.abort()

    def eof_received(self) -> bool:
        return False  # close our side too

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._in_flight = False
        self._stop_watchdog()
        self.pool.forget(self)
        response = self._response
        if response is not None and not response._complete and _ends_at_close(response.headers):
            response._finish()  # a body delimited by the end of the connection has simply ended
            return
        reason = f": {exc}" if exc is not None else ""
        self._fail(Disconnected(f"connection closed by the server{reason}"))

    # -- httptools callbacks ---------------------------------------------------------------------------

    def on_header(self, name: bytes, value: bytes) -> None:
        self._raw_headers.append((name.decode("latin-1"), value.decode("latin-1")))

    def on_headers_complete(self) -> None:
        status = self.parser.get_status_code()
        if 100 <= status < 200:
            self._raw_headers = []  # an interim answer (100 Continue): the real one follows
            return
        response = Response(self, status, CIMultiDictProxy(CIMultiDict(self._raw_headers)))
        self._raw_headers = []  # (held until the next request otherwise: ~0.4 kB per open stream)
        self._response = response
        waiter, self._headers_waiter = self._headers_waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_result(response)

    def on_body(self, body: bytes) -> None:
        if self._response is not None:
            self._response._feed(body)

    def on_message_complete(self) -> None:
        # Asked now: the parser forgets the message's framing once it is complete.
        self._keep_alive = self.parser.should_keep_alive()
        if self._response is not None:
            self._in_flight = False
            self._response._finish()

    # -- failure ---------------------------------------------------------------------------------------

    def _fail(self, error: Http1Error) -> None:
        waiter, self._headers_waiter = self._headers_waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_exception(error)
        if self._response is not None:
            self._response._fail(error)

    # -- the watchdog ----------------------------------------------------------------------------------

    def _arm_watchdog(self, due: float) -> None:
        # A pending timer that fires no later than ``due`` will do: on firing it works out the real deadline.
        if self._watchdog is not None:
            if self._watchdog_due <= due:
                return
            self._watchdog.cancel()
        self._watchdog_due = due
        self._watchdog = self.loop.call_at(due, self._on_watchdog)

    def _on_watchdog(self) -> None:
        self._watchdog = None
        if self.closed:
            return
        now = self.loop.time()
        if self._in_flight:
            if self._paused:  # we stopped reading for a slow consumer: the server is not silent
                self._arm_watchdog(now + self._read_timeout)
                return
            due = self._last_read + self._read_timeout
            if now < due:
                self._arm_watchdog(due)
                return
            self._fail(ReadTimeout(f"nothing received for {self._read_timeout:g}s"))
            self.abort()
        elif self.idle_since is not None:
            due = self.idle_since + self.pool.idle_timeout
            if now < due:
                self._arm_watchdog(due)
                return
            self.abort()  # idle for too long; forget() takes it off its pool's idle stack
        # Otherwise its answer is complete and being read: release() or abort() comes next.

    def _stop_watchdog(self) -> None:
        if self._watchdog is not None:
            self._watchdog.cancel()
            self._watchdog = None


def _ends_at_close(headers: CIMultiDictProxy[str]) -> bool:
    return "Content-Length" not in headers and "chunked" not in headers.get("Transfer-Encoding", "").lower()


class ConnectionPool:
    """Keep-alive connections per origin, opened on demand; closed with ``close`` (the app's cleanup).

    At most ``max_connections`` are open per origin: a request that finds them all busy waits for one to come
    back (or close), within the connect timeout. ``idle_timeout`` should stay below the servers' own keep-alive
    (uvicorn closes an idle connection after 5 s): a connection we drop first is never one the server drops
    just as we send on it.
    """

    def __init__(
        self,
        *,
        connect_timeout: float,
        idle_timeout: float = 4.0,
        max_connections: int = 1024,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self._connect_timeout = connect_timeout
        self.idle_timeout = idle_timeout
        self._max_connections = max_connections
        self._ssl_context = ssl_context
        self._idle: dict[Origin, list[_Connection]] = {}
        self._all: set[_Connection] = set()
        self._open: dict[Origin, int] = {}  # per origin: connections open or being opened
        self._waiters: dict[Origin, deque[asyncio.Future[None]]] = {}
        self._closed = False

    async def request(self, origin: Origin, head: bytes, body: bytes, read_timeout: float) -> Response:
        """Send ``head`` (a request line and headers, no blank line) with ``body``; the answer's headers.

        ``head`` gets Content-Length and the blank line here. Raises an ``Http1Error``.

        Sent once. A connection the server had closed while idle is never written to (``_take_idle`` skips
        it); once the request is written, a failure is the caller's to handle, even before any answer byte:
        the server may have read and acted on the request (a generation, a billed call) before closing.
        """
        data = b"%sContent-Length: %d\r\n\r\n%s" % (head, len(body), body)
        connection = self._take_idle(origin)
        if connection is None:
            connection = await self._connection_for(origin)
        return await self._send(connection, data, read_timeout)

    @staticmethod
    async def _send(connection: _Connection, data: bytes, read_timeout: float) -> Response:
        try:
            return await connection.send(data, read_timeout)
        except BaseException:  # cancelled or failed with a request in flight: the connection is unusable
            connection.abort()
            raise

    def put_back(self, connection: _Connection) -> None:
        if self._closed:
            connection.abort()
            return
        self._idle.setdefault(connection.origin, []).append(connection)
        connection.wait_idle(self.idle_timeout)
        if self._waiters.get(connection.origin):  # (someone waits for a connection there: rarely)
            self._wake(connection.origin)

    def forget(self, connection: _Connection) -> None:
        """A connection that closed: it leaves the pool, wherever it was."""
        if connection in self._all:
            self._all.discard(connection)
            self._open[connection.origin] -= 1
            self._wake(connection.origin)
        if connection.idle_since is not None:
            connection.idle_since = None
            idle = self._idle.get(connection.origin)
            if idle is not None and connection in idle:
                idle.remove(connection)

    async def close(self) -> None:
        self._closed = True
        for connection in list(self._all):
            connection.abort()
        self._all.clear()
        self._idle.clear()
        for waiters in self._waiters.values():
            for waiter in waiters:
                if not waiter.done():
                    waiter.set_result(None)

    @property
    def open_connections(self) -> int:
        return len(self._all)

    def _take_idle(self, origin: Origin) -> _Connection | None:
        idle = self._idle.get(origin)
        while idle:
            connection = idle.pop()
            connection.idle_since = None
            if not connection.closed and connection.transport is not None and not connection.transport.is_closing():
                return connection
        return None

    def _wake(self, origin: Origin) -> None:
        waiters = self._waiters.get(origin)
        while waiters:
            waiter = waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return

    async def _connection_for(self, origin: Origin) -> _Connection:
        """An idle connection that came back, or a new one once the origin is under its cap."""
        try:
            async with asyncio.timeout(self._connect_timeout):
                while self._open.get(origin, 0) >= self._max_connections and not self._closed:
                    waiter = asyncio.get_running_loop().create_future()
                    self._waiters.setdefault(origin, deque()).append(waiter)
                    try:
                        await waiter
                    finally:
                        if not waiter.done():
                            waiter.cancel()
                    connection = self._take_idle(origin)
                    if connection is not None:
                        return connection
                return await self._connect(origin)
        except TimeoutError:
            if self._open.get(origin, 0) >= self._max_connections:
                raise ConnectTimeout(
                    f"no connection to {origin.host_header} came free within {self._connect_timeout:g}s "
                    f"({self._max_connections} open, the per-backend cap)"
                ) from None
            raise ConnectTimeout(
                f"could not connect to {origin.host_header} within {self._connect_timeout:g}s"
            ) from None

    async def _connect(self, origin: Origin) -> _Connection:
        if self._closed:
            raise ConnectError("the connection pool is closed")
        loop = asyncio.get_running_loop()
        tls = None
        if origin.scheme == "https":
            if self._ssl_context is None:
                self._ssl_context = ssl.create_default_context()
            tls = self._ssl_context
        self._open[origin] = self._open.get(origin, 0) + 1  # the slot is taken while connecting
        try:
            _, connection = await loop.create_connection(
                lambda: _Connection(self, origin, loop), origin.host, origin.port,
                ssl=tls, server_hostname=origin.host if tls else None,
            )
        except BaseException as exc:
            self._open[origin] -= 1
            self._wake(origin)
            if isinstance(exc, (OSError, ssl.SSLError)):
                raise ConnectError(f"cannot connect to {origin.host_header}: {exc.strerror or exc}") from None
            raise
        if connection.closed:  # lost before we could count it
            self._open[origin] -= 1
            self._wake(origin)
            raise Disconnected(f"connection to {origin.host_header} closed at once")
        self._all.add(connection)
        return connection
