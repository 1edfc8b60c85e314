"""The two HTTP clients that can carry upstream traffic, behind one small interface (``GATEWAY_UPSTREAM_CLIENT``).

- ``http1``: our own keep-alive HTTP/1.1 client (``gateway.http1``): pre-built header blocks, llhttp parsing.
- ``aiohttp``: aiohttp's ``ClientSession``, tuned alike: one session, a TCPConnector with the same per-origin
  connection cap and idle timeout, no automatic decompression (``gateway.decoding`` does it, for both, under
  the size cap), no cookies, no redirects, the same read timeout between bytes.

Each raises its own errors; ``gateway.upstream`` is the one place they become ours. Neither resends a POST:
http1 by construction, aiohttp because it retries a dropped keep-alive connection only for idempotent methods.
"""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterator, Awaitable
from typing import Literal, Protocol

import aiohttp
from multidict import CIMultiDict, CIMultiDictProxy
from yarl import URL

from gateway.http1 import ConnectionPool, Origin, request_head

ClientName = Literal["http1", "aiohttp"]
# The most aiohttp hands on at once: what has arrived, up to this (never waiting for more). Unbounded, a slow
# consumer could get everything its buffer gathered in one piece.
_PIECE = 64 * 1024


class RawResponse(Protocol):
    """An answer as a transport gives it: body still encoded, errors still the transport's own."""

    @property
    def status(self) -> int: ...

    @property
    def headers(self) -> CIMultiDictProxy[str]: ...

    def take_body(self) -> bytes | None: ...

    def iter_chunks(self) -> AsyncIterator[bytes]: ...

    def close(self) -> None: ...


class Transport(Protocol):
    def route(self, method: str, url: str, headers: dict[str, str]) -> object:
        """What ``send`` needs to reach ``url`` with these fixed headers, prepared once per backend."""
        ...

    def send(
        self, route: object, extra: tuple[tuple[str, str], ...], body: bytes, read_timeout: float
    ) -> Awaitable[RawResponse]:
        """Send once (never resent after a byte was written); done when status and headers have arrived.

        ``extra``: per-request headers, whose values the caller has checked (``http1.is_safe_header_value``).
        """
        ...

    async def close(self) -> None: ...


def create_transport(
    client: ClientName,
    *,
    connect_timeout: float,
    idle_timeout: float,
    max_connections: int,
    ssl_context: ssl.SSLContext | None = None,
) -> Transport:
    if client == "aiohttp":
        return AiohttpTransport(
            connect_timeout=connect_timeout, idle_timeout=idle_timeout, max_connections=max_connections,
            ssl_context=ssl_context,
        )
    return Http1Transport(
        ConnectionPool(
            connect_timeout=connect_timeout, idle_timeout=idle_timeout, max_connections=max_connections,
            ssl_context=ssl_context,
        )
    )


class _Http1Route:
    __slots__ = ("head", "origin")

    def __init__(self, origin: Origin, head: bytes) -> None:
        self.origin = origin
        self.head = head


class Http1Transport:
    def __init__(self, pool: ConnectionPool) -> None:
        self.pool = pool

    def route(self, method: str, url: str, headers: dict[str, str]) -> object:
        origin, target = Origin.of(url)
        return _Http1Route(origin, request_head(method, target, origin, headers))

    def send(
        self, route: object, extra: tuple[tuple[str, str], ...], body: bytes, read_timeout: float
    ) -> Awaitable[RawResponse]:
        # Not a coroutine of its own: it only finishes the request head and hands the pool's coroutine on, so
        # the request costs no extra coroutine layer.
        assert isinstance(route, _Http1Route)
        head = route.head
        for name, value in extra:
            # Checked by the caller, as the protocol says; UTF-8, as aiohttp's client writes headers too.
            head += f"{name}: {value}\r\n".encode()
        return self.pool.request(route.origin, head, body, read_timeout)

    async def close(self) -> None:
        await self.pool.close()


class _AiohttpRoute:
    __slots__ = ("headers", "method", "url")

    def __init__(self, method: str, url: URL, headers: CIMultiDict[str]) -> None:
        self.method = method
        self.url = url
        self.headers = headers


class AiohttpTransport:
    """aiohttp's client, created inside the running loop (the app's cleanup context)."""

    def __init__(
        self, *, connect_timeout: float, idle_timeout: float, max_connections: int,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self._connect_timeout = connect_timeout
        connector = aiohttp.TCPConnector(
            limit=0,  # no global cap: the per-origin one is ours
            limit_per_host=max_connections,
            keepalive_timeout=idle_timeout,
            ssl=ssl_context if ssl_context is not None else True,
            ttl_dns_cache=60,
        )
        self._session = aiohttp.ClientSession(
            connector=connector,
            auto_decompress=False,  # gateway.decoding decodes, under the size cap
            cookie_jar=aiohttp.DummyCookieJar(),
            skip_auto_headers=("User-Agent", "Accept-Encoding"),
            raise_for_status=False,
        )
        self._timeouts: dict[float, aiohttp.ClientTimeout] = {}

    def route(self, method: str, url: str, headers: dict[str, str]) -> object:
        return _AiohttpRoute(method, URL(url, encoded=True), CIMultiDict(headers))

    def _timeout(self, read_timeout: float) -> aiohttp.ClientTimeout:
        timeout = self._timeouts.get(read_timeout)
        if timeout is None:
            timeout = self._timeouts[read_timeout] = aiohttp.ClientTimeout(
                total=None, sock_connect=self._connect_timeout, sock_read=read_timeout,
                # Waiting for a free connection under the per-origin cap counts as connecting.
                connect=self._connect_timeout,
            )
        return timeout

    async def send(
        self, route: object, extra: tuple[tuple[str, str], ...], body: bytes, read_timeout: float
    ) -> RawResponse:
        assert isinstance(route, _AiohttpRoute)
        headers = route.headers
        if extra:
            headers = headers.copy()
            headers.extend(extra)
        response = await self._session.request(
            route.method, route.url, data=body or None, headers=headers, timeout=self._timeout(read_timeout),
            allow_redirects=False,
        )
        return _AiohttpResponse(response)

    async def close(self) -> None:
        await self._session.close()


class _AiohttpResponse:
    __slots__ = ("_response", "headers", "status")

    def __init__(self, response: aiohttp.ClientResponse) -> None:
        self._response = response
        self.status = response.status
        self.headers = response.headers

    def take_body(self) -> bytes | None:
        content = self._response.content
        if not content.is_eof():
            return None
        return content.read_nowait()

    def iter_chunks(self) -> AsyncIterator[bytes]:
        return self._response.content.iter_chunked(_PIECE)

    def close(self) -> None:
        # Back to the pool only when read to the end (aiohttp closes it otherwise); an unfinished answer is
        # aborted, which is how an abandoned upstream request is cancelled.
        if self._response.content.at_eof():
            self._response.release()
        else:
            self._response.close()
