"""The one seam between routing policy and the network: the only module that calls backends.

Requests go out over one of two clients (``gateway.transports``: our own ``http1`` or aiohttp's). Every transport
error is translated here into our own exception tree, so the rest of the gateway never sees a socket or parser
exception:

    UpstreamError                     (.retryable, .counts_as_failure, .throttled)
    ├── UpstreamConnectionError       could not connect / connection dropped / undecodable body → retry, failure
    ├── UpstreamTimeout               no response headers or body in time → retry, failure
    └── UpstreamStatusError           a non-2xx answer, with status, headers and body (at most 64 KiB of it)
            429, 503                  → retry on another backend, cool this one down (throttled)
            500, 502, 504, other 5xx  → retry, failure (circuit breaker)
            other 4xx                 → not retryable: the client's mistake, passed through as written
        └── UpstreamAnswerTooLarge    a 2xx answer over GATEWAY_MAX_RESPONSE_BYTES: our own 502, not retried
                                      (another backend would most likely answer as much), not a failure

What the transport promises (the README's delivery guarantees):
- a request is sent once: never resent on another connection after it was written, since the upstream may have
  acted on it; failover to *another* backend is the proxy's decision;
- an answer is decoded (gzip, deflate) before it is relayed, so its bytes and its headers agree;
- what is buffered is bounded: a non-streamed answer by ``max_response_bytes`` (decoded size), an error body by
  64 KiB; streams are relayed piece by piece and never buffered whole.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncGenerator, Awaitable, Callable
from typing import Protocol

import aiohttp
from multidict import CIMultiDict, CIMultiDictProxy, istr

from gateway.apis import api_url
from gateway.decoding import Decoder, DecodingError, decode_whole, decoder_for
from gateway.errors import error_body
from gateway.http1 import ConnectTimeout, Http1Error, ReadTimeout, is_safe_header_value
from gateway.settings import Api, BackendConfig, BackendKind
from gateway.transports import RawResponse, Transport

ERROR_BODY_LIMIT = 64 * 1024  # an error answer is a short JSON message; more is read as "too large"
TokenProvider = Callable[[], Awaitable[str]]
_CHAT = Api.CHAT  # (a module global: read faster than the enum's attribute)


class UpstreamResponse(Protocol):
    """What the proxy may use of an upstream's 2xx answer, whatever client fetched it.

    Status and headers have arrived; the body is taken with ``take_body``, ``read`` or ``iter_chunks``, already
    decoded (no Content-Encoding left to undo), and their failures are already ``UpstreamError``s (never a socket
    or parser exception); ``take_body`` and ``read`` raise ``UpstreamAnswerTooLarge`` past the size cap rather
    than buffer more. ``close`` must always be called:
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


class UpstreamAnswerTooLarge(UpstreamStatusError):
    """A 2xx answer too large to buffer: rendered as our own OpenAI-shaped 502, passed to the client as is."""

    retryable = False
    counts_as_failure = False

    def __init__(self, backend: BackendConfig, limit: int) -> None:
        message = (
            f"The answer of backend {backend.name} is larger than {limit} bytes (GATEWAY_MAX_RESPONSE_BYTES); "
            "ask for a stream (\"stream\": true) or fewer tokens."
        )
        headers = CIMultiDictProxy(CIMultiDict({"Content-Type": "application/json"}))
        super().__init__(backend, 502, headers, error_body(message, "server_error", "upstream_answer_too_large"))
        self.message = message
        self.retryable = False
        self.counts_as_failure = False
        self.throttled = False


# Hop-by-hop and framing headers we must not copy from an upstream answer onto ours.
# As istr: multidict then need not case-fold and hash each name again on every answer.
_NOT_FORWARDED = tuple(istr(name) for name in ("Connection", "Keep-Alive", "Transfer-Encoding", "Content-Length",
                                                "Content-Encoding", "Server", "Date"))


def forwardable_headers(headers: CIMultiDictProxy[str]) -> CIMultiDict[str]:
    """The upstream's end-to-end headers, case-insensitive: a header set on the result replaces the upstream's
    whatever its spelling (uvicorn-based servers send ``content-type``, we set ``Content-Type``)."""
    forwarded = CIMultiDict(headers)
    for name in _NOT_FORWARDED:
        forwarded.popall(name, None)
    return forwarded


class _Route:
    """Per backend, built on first use: the transport's prepared request, and which per-request headers it
    takes."""

    __slots__ = ("backend", "entra", "prepared", "uuid_request_ids")

    def __init__(self, backend: BackendConfig, prepared: object, *, uuid_request_ids: bool, entra: bool) -> None:
        self.backend = backend
        self.prepared = prepared
        self.uuid_request_ids = uuid_request_ids  # only a UUID may go as X-Request-ID
        self.entra = entra  # an Entra ID bearer token goes with every request


class UpstreamClient:
    """Sends chat completions and health probes to backends over one transport (one keep-alive pool)."""

    def __init__(
        self,
        transport: Transport,
        *,
        read_timeout: float,
        health_timeout: float,
        max_response_bytes: int = 32 * 1024 * 1024,
        azure_token: TokenProvider | None = None,
    ) -> None:
        self._transport = transport
        self._read_timeout = read_timeout
        self._health_timeout = health_timeout
        self._max_response_bytes = max_response_bytes
        self._azure_token = azure_token
        self._chat_routes: dict[int, _Route] = {}
        self._other_routes: dict[Api, dict[int, _Route]] = {api: {} for api in Api}

    @staticmethod
    def _auth_headers(backend: BackendConfig) -> dict[str, str]:
        headers = {"Content-Type": "application/json", "Accept-Encoding": "identity"}
        if backend.api_key:
            if backend.kind is BackendKind.AZURE:
                headers["api-key"] = backend.api_key
            else:
                headers["Authorization"] = f"Bearer {backend.api_key}"
        return headers

    def _route(self, backend: BackendConfig, api: Api) -> _Route:
        # Keyed by the config object's id, checked to be that very object: no attribute of the pydantic model is
        # read on the way (each such read costs several times a plain one).
        routes = self._chat_routes if api is _CHAT else self._other_routes[api]
        route = routes.get(id(backend))
        if route is None or route.backend is not backend:
            route = routes[id(backend)] = _Route(
                backend,
                self._transport.route("POST", api_url(backend, api), self._auth_headers(backend)),
                # llama-cpp-python answers a non-UUID X-Request-ID with an empty 400.
                uuid_request_ids=backend.kind is BackendKind.LLAMACPP,
                entra=backend.kind is BackendKind.AZURE and not backend.api_key,
            )
        return route

    async def _entra_header(self, backend: BackendConfig) -> tuple[str, str]:
        if self._azure_token is None:
            raise UpstreamConnectionError(backend, "no Entra ID credential is configured for this backend")
        try:
            token = await self._azure_token()
        except Exception as exc:  # azure-identity raises many types; none may reach the client as a 500
            raise UpstreamConnectionError(backend, f"could not get an Entra ID token: {exc}") from exc
        if not is_safe_header_value(token):
            raise UpstreamConnectionError(backend, "the Entra ID token is not a valid header value")
        return "Authorization", f"Bearer {token}"

    async def chat_completion(
        self, backend: BackendConfig, body: bytes, request_id: str, api: Api = Api.CHAT
    ) -> UpstreamResponse:
        """Send a chat completion (or a request to another of the backend's ``api``s); returns the response
        once a 2xx status and headers have arrived.

        A non-2xx answer is read (up to ``ERROR_BODY_LIMIT``) and raised as UpstreamStatusError. The caller
        must ``close()`` the response: that aborts the upstream request if the body was not read to the end,
        which is how a client disconnect frees a llama.cpp slot.
        """
        route = self._route(backend, api)
        extra: tuple[tuple[str, str], ...] = ()
        # A client's own request id may be anything: it is passed on only where the backend accepts it.
        # (Not one with CR or LF: it would smuggle a header of its own.)
        if (
            request_id.isascii()
            and is_safe_header_value(request_id)
            and (not route.uuid_request_ids or _is_uuid(request_id))
        ):
            extra = (("x-request-id", request_id),)
        if route.entra:
            extra += (await self._entra_header(backend),)
        try:
            raw = await self._transport.send(route.prepared, extra, body, self._read_timeout)
        except _TRANSPORT_ERRORS as exc:
            raise _translate(backend, exc, "sent no response in time", "unreachable") from exc
        answer = _Answer(backend, raw, self._max_response_bytes)
        if raw.status >= 300:
            try:
                headers, error = await answer.read_error_body()
            finally:
                answer.close()
            raise UpstreamStatusError(backend, raw.status, headers, error)
        return answer

    async def probe(self, url: str, backend: BackendConfig | None = None) -> tuple[int | None, bytes]:
        """GET a health or listing URL: (status, body), or (None, reason) when it could not be reached."""
        headers = self._auth_headers(backend) if backend is not None and backend.api_key else {}
        try:
            async with asyncio.timeout(self._health_timeout):
                route = self._transport.route("GET", url, headers)
                raw = await self._transport.send(route, (), b"", self._health_timeout)
                try:
                    body = bytearray()
                    async for chunk in raw.iter_chunks():
                        body += chunk
                        if len(body) > self._max_response_bytes:  # bounded like any other answer
                            return None, b"answer larger than GATEWAY_MAX_RESPONSE_BYTES"
                    return raw.status, bytes(body)
                finally:
                    raw.close()
        except TimeoutError:
            return None, b"timed out"
        except (*_TRANSPORT_ERRORS, ValueError) as exc:
            return None, str(exc).encode()


_TRANSPORT_ERRORS = (Http1Error, aiohttp.ClientError, TimeoutError)


class _Answer:
    """``UpstreamResponse`` over a transport's raw answer: its body decoded and bounded, its errors ours."""

    __slots__ = ("_backend", "_decoder", "_limit", "_raw", "_undecodable", "close", "headers", "status")

    def __init__(self, backend: BackendConfig, raw: RawResponse, limit: int) -> None:
        self._backend = backend
        self._raw = raw
        self._limit = limit
        # The transport's own close, as is: a method of ours around it would be one more call on every request.
        self.close: Callable[[], None] = raw.close
        self.status = raw.status
        headers = self.headers = raw.headers
        self._decoder: Decoder | None = None
        self._undecodable: DecodingError | None = None  # raised when the body is taken, not before
        if "Content-Encoding" in headers:
            try:
                self._decoder = decoder_for(headers["Content-Encoding"])
            except DecodingError as exc:
                self._undecodable = exc

    @property
    def content_type(self) -> str:
        value = self.headers.get("Content-Type", "")
        return value.partition(";")[0].strip().lower()

    def take_body(self) -> bytes | None:
        if self._undecodable is not None:
            raise self._undecodable_error(self._undecodable)
        body = self._raw.take_body()
        if body is None:
            return None
        if self._decoder is None:
            if len(body) > self._limit:
                raise UpstreamAnswerTooLarge(self._backend, self._limit)
            return body
        try:
            decoded = decode_whole(self._decoder, body, self._limit)
        except DecodingError as exc:
            raise self._undecodable_error(exc) from None
        if decoded is None:
            raise UpstreamAnswerTooLarge(self._backend, self._limit)
        return decoded

    async def read(self) -> bytes:
        if self._decoder is None and _declared_length(self.headers) > self._limit:
            raise UpstreamAnswerTooLarge(self._backend, self._limit)  # not a byte of it read
        parts: list[bytes] = []
        size = 0
        async for piece in self._pieces("stalled while sending its answer", "dropped the answer"):
            size += len(piece)
            if size > self._limit:
                raise UpstreamAnswerTooLarge(self._backend, self._limit)
            parts.append(piece)
        return b"".join(parts)

    def iter_chunks(self) -> AsyncGenerator[bytes, None]:
        return self._pieces("stalled mid-stream", "broke off mid-stream")

    async def read_error_body(self) -> tuple[CIMultiDictProxy[str], bytes]:
        """Headers and body of an error answer, read up to ``ERROR_BODY_LIMIT``: past it, or when it cannot be
        read, the body is our own message and the headers say JSON (the rest, Retry-After included, stay)."""
        parts: list[bytes] = []
        size = 0
        problem = ""
        try:
            async for piece in self._pieces("stalled", "dropped the answer"):
                size += len(piece)
                if size > ERROR_BODY_LIMIT:
                    problem = f"a body larger than {ERROR_BODY_LIMIT} bytes"
                    break
                parts.append(piece)
        except UpstreamError as exc:
            problem = f"a body that could not be read ({exc.message})"
        if not problem:
            return self.headers, b"".join(parts)
        headers = CIMultiDict(self.headers)
        headers.popall("Content-Encoding", None)
        headers["Content-Type"] = "application/json"
        message = f"Backend {self._backend.name} answered HTTP {self.status} with {problem}."
        return CIMultiDictProxy(headers), error_body(message, "server_error", "upstream_error")

    async def _pieces(self, timed_out: str, broken: str) -> AsyncGenerator[bytes, None]:
        """The body as it arrives, decoded, with the transport's errors translated."""
        decoder = self._decoder
        if self._undecodable is not None:
            raise self._undecodable_error(self._undecodable)
        try:
            if decoder is None:
                async for chunk in self._raw.iter_chunks():
                    yield chunk
                return
            async for chunk in self._raw.iter_chunks():
                for piece in decoder.feed(chunk):
                    yield piece
            rest = decoder.finish()
            if rest:
                yield rest
        except _TRANSPORT_ERRORS as exc:
            raise _translate(self._backend, exc, timed_out, broken) from exc
        except DecodingError as exc:
            raise self._undecodable_error(exc) from None

    def _undecodable_error(self, exc: DecodingError) -> UpstreamConnectionError:
        return UpstreamConnectionError(self._backend, f"{self._backend.name} sent an undecodable answer: {exc}")


def _declared_length(headers: CIMultiDictProxy[str]) -> int:
    try:
        return int(headers.get("Content-Length", "0"))
    except ValueError:
        return 0


def _translate(backend: BackendConfig, exc: BaseException, timed_out: str, broken: str) -> UpstreamError:
    if isinstance(exc, ReadTimeout | aiohttp.SocketTimeoutError):
        return UpstreamTimeout(backend, f"{backend.name} {timed_out}")
    if isinstance(exc, ConnectTimeout | aiohttp.ConnectionTimeoutError | TimeoutError):
        return UpstreamTimeout(backend, f"{backend.name} unreachable: {exc or 'connect timeout'}")
    return UpstreamConnectionError(backend, f"{backend.name} {broken}: {exc}")


def _is_uuid(text: str) -> bool:
    try:
        uuid.UUID(text)
    except ValueError:
        return False
    return True
