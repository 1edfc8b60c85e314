"""The one seam between routing policy and the network: the only module that calls backends.

Requests go out over ``gateway.http1``'s keep-alive pool. Every transport error is translated here into our
own exception tree, so the rest of the gateway never sees a socket or parser exception:

    UpstreamError                     (.retryable, .counts_as_failure, .throttled)
    ├── UpstreamConnectionError       could not connect / connection dropped before a response → retry, failure
    ├── UpstreamTimeout               no response headers or body in time → retry, failure
    └── UpstreamStatusError           a non-2xx answer, with status, headers and body
            429, 503                  → retry on another backend, cool this one down (throttled)
            500, 502, 504, other 5xx  → retry, failure (circuit breaker)
            other 4xx                 → not retryable: the client's mistake, passed through as written
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncGenerator, Awaitable, Callable
from typing import Protocol

from multidict import CIMultiDict, CIMultiDictProxy

from gateway.http1 import (
    ConnectionPool,
    ConnectTimeout,
    Http1Error,
    Origin,
    ReadTimeout,
    Response,
    header_line,
    is_safe_header_value,
    request_head,
)
from gateway.settings import BackendConfig, BackendKind

TokenProvider = Callable[[], Awaitable[str]]


class UpstreamResponse(Protocol):
    """What the proxy may use of an upstream's 2xx answer, whatever client fetched it.

    Status and headers have arrived; the body is taken with ``take_body``, ``read`` or ``iter_chunks``, whose
    failures are already ``UpstreamError``s (never a socket or parser exception). ``close`` must always be called:
    it returns a fully read connection to its pool and aborts the upstream request otherwise, which is how a
    client disconnect frees a llama.cpp slot.
    """

    @property
    def status(self) -> int: ...

    @property
    def headers(self) -> CIMultiDictProxy[str]:
        """As the upstream sent them; ``forwardable_headers`` picks what may be copied onto our answer."""
        ...

    @property
    def content_type(self) -> str:
        """The media type alone, lower case (``text/event-stream``), "" when none was sent."""
        ...

    def take_body(self) -> bytes | None:
        """The whole body if it has all arrived already (no await: the common case of a small answer);
        None when some is still to come, for ``read``."""
        ...

    async def read(self) -> bytes:
        """The whole body."""
        ...

    def iter_chunks(self) -> AsyncGenerator[bytes, None]:
        """The body as it arrives, piece by piece, never buffered whole."""
        ...

    def close(self) -> None: ...


class UpstreamError(Exception):
    retryable = True
    counts_as_failure = True
    throttled = False
    status: int | None = None

    def __init__(self, backend: BackendConfig, message: str) -> None:
        super().__init__(message)
        self.backend = backend
        self.message = message


class UpstreamConnectionError(UpstreamError):
    pass


class UpstreamTimeout(UpstreamError):
    pass


class UpstreamStatusError(UpstreamError):
    def __init__(
        self,
        backend: BackendConfig,
        status: int,
        headers: CIMultiDictProxy[str],
        body: bytes,
    ) -> None:
        super().__init__(backend, f"{backend.name} answered HTTP {status}")
        self.status = status
        self.headers = headers
        self.body = body
        self.throttled = status in (429, 503)
        self.retryable = status == 429 or status >= 500
        # Throttling says "busy", not "broken": it cools the backend down instead of counting toward ejection.
        self.counts_as_failure = status >= 500 and not (status == 503 and _has_retry_hint(headers))


def _has_retry_hint(headers: CIMultiDictProxy[str]) -> bool:
    return "retry-after" in headers or "retry-after-ms" in headers


# Hop-by-hop and framing headers we must not copy from an upstream answer onto ours.
_NOT_FORWARDED = ("Connection", "Keep-Alive", "Transfer-Encoding", "Content-Length", "Content-Encoding", "Server",
                  "Date")


def forwardable_headers(headers: CIMultiDictProxy[str]) -> CIMultiDict[str]:
    """The upstream's end-to-end headers, case-insensitive: a header set on the result replaces the upstream's
    whatever its spelling (uvicorn-based servers send ``content-type``, we set ``Content-Type``)."""
    forwarded = CIMultiDict(headers)
    for name in _NOT_FORWARDED:
        forwarded.popall(name, None)
    return forwarded


class _Route:
    """Per backend, built on first use: where it is, the fixed part of every request's header block, and
    which per-request headers it takes."""

    __slots__ = ("entra", "head", "origin", "uuid_request_ids")

    def __init__(self, origin: Origin, head: bytes, *, uuid_request_ids: bool, entra: bool) -> None:
        self.origin = origin
        self.head = head
        self.uuid_request_ids = uuid_request_ids  # only a UUID may go as X-Request-ID
        self.entra = entra  # an Entra ID bearer token goes with every request


class UpstreamClient:
    """Sends chat completions and health probes to backends over one keep-alive connection pool."""

    def __init__(
        self,
        pool: ConnectionPool,
        *,
        read_timeout: float,
        health_timeout: float,
        azure_token: TokenProvider | None = None,
    ) -> None:
        self._pool = pool
        self._read_timeout = read_timeout
        self._health_timeout = health_timeout
        self._azure_token = azure_token
        self._routes: dict[str, _Route] = {}

    @staticmethod
    def _auth_headers(backend: BackendConfig) -> dict[str, str]:
        headers = {"Content-Type": "application/json", "Accept-Encoding": "identity"}
        if backend.api_key:
            if backend.kind is BackendKind.AZURE:
                headers["api-key"] = backend.api_key
            else:
                headers["Authorization"] = f"Bearer {backend.api_key}"
        return headers

    def _route(self, backend: BackendConfig) -> _Route:
        route = self._routes.get(backend.name)
        if route is None:
            origin, target = Origin.of(backend.chat_completions_url)
            route = self._routes[backend.name] = _Route(
                origin,
                request_head("POST", target, origin, self._auth_headers(backend)),
                # llama-cpp-python answers a non-UUID X-Request-ID with an empty 400.
                uuid_request_ids=backend.kind is BackendKind.LLAMACPP,
                entra=backend.kind is BackendKind.AZURE and not backend.api_key,
            )
        return route

    async def _entra_header(self, backend: BackendConfig) -> bytes:
        if self._azure_token is None:
            raise UpstreamConnectionError(backend, "no Entra ID credential is configured for this backend")
        try:
            token = await self._azure_token()
        except Exception as exc:  # azure-identity raises many types; none may reach the client as a 500
            raise UpstreamConnectionError(backend, f"could not get an Entra ID token: {exc}") from exc
        return header_line("Authorization", f"Bearer {token}")

    async def chat_completion(self, backend: BackendConfig, body: bytes, request_id: str) -> UpstreamResponse:
        """Send a chat completion; returns the response once a 2xx status and headers have arrived.

        A non-2xx answer is read whole (error bodies are small) and raised as UpstreamStatusError. The caller
        must ``close()`` the response: that aborts the upstream request if the body was not read to the end,
        which is how a client disconnect frees a llama.cpp slot.
        """
        route = self._route(backend)
        head = route.head
        # A client's own request id may be anything: it is passed on only where the backend accepts it.
        # (Not one with CR or LF: it would smuggle a header of its own.)
        if (
            request_id.isascii()
            and is_safe_header_value(request_id)
            and (not route.uuid_request_ids or _is_uuid(request_id))
        ):
            head += b"x-request-id: %s\r\n" % request_id.encode()
        if route.entra:
            head += await self._entra_header(backend)
        try:
            response = await self._pool.request(route.origin, head, body, self._read_timeout)
        except Http1Error as exc:
            raise _translate(backend, exc, "sent no response in time", "unreachable") from exc
        if response.status >= 300:
            try:
                error_body = await response.read()
            except Http1Error:
                error_body = b""
            finally:
                response.close()
            raise UpstreamStatusError(backend, response.status, response.headers, error_body)
        return _Http1Answer(backend, response)

    async def probe(self, url: str, backend: BackendConfig | None = None) -> tuple[int | None, bytes]:
        """GET a health or listing URL: (status, body), or (None, reason) when it could not be reached."""
        headers = self._auth_headers(backend) if backend is not None and backend.api_key else {}
        try:
            return await self._pool.get(url, headers, self._health_timeout)
        except TimeoutError:
            return None, b"timed out"
        except (Http1Error, ValueError) as exc:
            return None, str(exc).encode()


class _Http1Answer:
    """``UpstreamResponse`` over ``gateway.http1``'s ``Response``: its errors translated to ours."""

    __slots__ = ("_backend", "_response")

    def __init__(self, backend: BackendConfig, response: Response) -> None:
        self._backend = backend
        self._response = response

    @property
    def status(self) -> int:
        return self._response.status

    @property
    def headers(self) -> CIMultiDictProxy[str]:
        return self._response.headers

    @property
    def content_type(self) -> str:
        return self._response.content_type

    def take_body(self) -> bytes | None:
        return self._response.take_body()

    async def read(self) -> bytes:
        try:
            return await self._response.read()
        except Http1Error as exc:
            raise _translate(self._backend, exc, "stalled while sending its answer", "dropped the answer") from exc

    async def iter_chunks(self) -> AsyncGenerator[bytes, None]:
        try:
            async for chunk in self._response.iter_chunks():
                yield chunk
        except Http1Error as exc:
            raise _translate(self._backend, exc, "stalled mid-stream", "broke off mid-stream") from exc

    def close(self) -> None:
        self._response.close()


def _translate(backend: BackendConfig, exc: Http1Error, timed_out: str, broken: str) -> UpstreamError:
    if isinstance(exc, ReadTimeout):
        return UpstreamTimeout(backend, f"{backend.name} {timed_out}")
    if isinstance(exc, ConnectTimeout):
        return UpstreamTimeout(backend, f"{backend.name} unreachable: {exc}")
    return UpstreamConnectionError(backend, f"{backend.name} {broken}: {exc}")


def _is_uuid(text: str) -> bool:
    try:
        uuid.UUID(text)
    except ValueError:
        return False
    return True
