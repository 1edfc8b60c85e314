"""The one seam between routing policy and the network: the only module that calls backends.

Every aiohttp client error is translated here into our own exception tree, so the rest of the gateway never
sees an aiohttp exception:

    UpstreamError                     (.retryable, .counts_as_failure, .throttled)
    ├── UpstreamConnectionError       could not connect / connection dropped before a response → retry, failure
    ├── UpstreamTimeout               no response headers or body in time → retry, failure
    └── UpstreamStatusError           a non-2xx answer, with status, headers and body
            429, 503                  → retry on another backend, cool this one down (throttled)
            500, 502, 504, other 5xx  → retry, failure (circuit breaker)
            other 4xx                 → not retryable: the client's mistake, passed through as written
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

import aiohttp
from multidict import CIMultiDictProxy
from yarl import URL

from gateway.settings import BackendConfig, BackendKind

TokenProvider = Callable[[], Awaitable[str]]


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
_NOT_FORWARDED = frozenset(
    {"connection", "keep-alive", "transfer-encoding", "content-length", "content-encoding", "server", "date"}
)


def forwardable_headers(headers: CIMultiDictProxy[str]) -> dict[str, str]:
    return {name: value for name, value in headers.items() if name.lower() not in _NOT_FORWARDED}


class UpstreamClient:
    """Sends chat completions and health probes to backends over one pooled aiohttp session."""

    def __init__(
        self,
        session: aiohttp.ClientSession,
        *,
        connect_timeout: float,
        read_timeout: float,
        health_timeout: float,
        azure_token: TokenProvider | None = None,
    ) -> None:
        self._session = session
        self._timeout = aiohttp.ClientTimeout(total=None, sock_connect=connect_timeout, sock_read=read_timeout)
        self._health_timeout = aiohttp.ClientTimeout(total=health_timeout)
        self._azure_token = azure_token
        # Per backend, built on first use: parsing a URL and building headers on every request is measurable.
        self._static_headers: dict[str, dict[str, str]] = {}
        self._urls: dict[str, URL] = {}

    @staticmethod
    def _auth_headers(backend: BackendConfig) -> dict[str, str]:
        headers = {"Content-Type": "application/json", "Accept-Encoding": "identity"}
        if backend.api_key:
            if backend.kind is BackendKind.AZURE:
                headers["api-key"] = backend.api_key
            else:
                headers["Authorization"] = f"Bearer {backend.api_key}"
        return headers

    async def _headers_for(self, backend: BackendConfig, request_id: str) -> dict[str, str]:
        cached = self._static_headers.get(backend.name)
        if cached is None:
            cached = self._static_headers[backend.name] = self._auth_headers(backend)
        headers = dict(cached)
        if backend.kind is not BackendKind.LLAMACPP or _is_uuid(request_id):
            # llama-cpp-python answers a non-UUID X-Request-ID with an empty 400; a client's own id may be anything.
            headers["x-request-id"] = request_id
        if backend.kind is BackendKind.AZURE and not backend.api_key:
            if self._azure_token is None:
                raise UpstreamConnectionError(backend, "no Entra ID credential is configured for this backend")
            try:
                headers["Authorization"] = f"Bearer {await self._azure_token()}"
            except Exception as exc:  # azure-identity raises many types; none may reach the client as a 500
                raise UpstreamConnectionError(backend, f"could not get an Entra ID token: {exc}") from exc
        return headers

    @asynccontextmanager
    async def chat_completion(
        self, backend: BackendConfig, body: bytes, request_id: str
    ) -> AsyncIterator[aiohttp.ClientResponse]:
        """Open a chat completion; yields the response once a 2xx status and headers have arrived.

        A non-2xx answer is read whole (error bodies are small) and raised as UpstreamStatusError. The
        response is closed on exit, which aborts the upstream request if the body was not read to the end:
        that is how a client disconnect frees a llama.cpp slot.
        """
        headers = await self._headers_for(backend, request_id)
        url = self._urls.get(backend.name)
        if url is None:
            url = self._urls[backend.name] = URL(backend.chat_completions_url)
        try:
            response = await self._session.post(url, data=body, headers=headers, timeout=self._timeout)
        except (asyncio.TimeoutError, aiohttp.ServerTimeoutError) as exc:
            raise UpstreamTimeout(backend, f"{backend.name} sent no response in time") from exc
        except aiohttp.ClientError as exc:
            raise UpstreamConnectionError(backend, f"{backend.name} unreachable: {_describe(exc)}") from exc
        try:
            if response.status >= 300:
                try:
                    error_body = await response.read()
                except (aiohttp.ClientError, asyncio.TimeoutError):
                    error_body = b""
                raise UpstreamStatusError(backend, response.status, response.headers, error_body)
            yield response
        finally:
            response.close()

    async def read_body(self, backend: BackendConfig, response: aiohttp.ClientResponse) -> bytes:
        try:
            return await response.read()
        except (asyncio.TimeoutError, aiohttp.ServerTimeoutError) as exc:
            raise UpstreamTimeout(backend, f"{backend.name} stalled while sending its answer") from exc
        except aiohttp.ClientError as exc:
            raise UpstreamConnectionError(backend, f"{backend.name} dropped the answer: {_describe(exc)}") from exc

    async def iter_chunks(self, backend: BackendConfig, response: aiohttp.ClientResponse) -> AsyncIterator[bytes]:
        """The body as the upstream sends it, chunk by chunk, never buffered whole."""
        try:
            async for chunk in response.content.iter_any():
                yield chunk
        except (asyncio.TimeoutError, aiohttp.ServerTimeoutError) as exc:
            raise UpstreamTimeout(backend, f"{backend.name} stalled mid-stream") from exc
        except aiohttp.ClientError as exc:
            raise UpstreamConnectionError(backend, f"{backend.name} broke off mid-stream: {_describe(exc)}") from exc

    async def probe(self, url: str, backend: BackendConfig | None = None) -> tuple[int | None, bytes]:
        """GET a health or listing URL: (status, body), or (None, reason) when it could not be reached."""
        headers = self._auth_headers(backend) if backend is not None and backend.api_key else None
        try:
            async with self._session.get(url, headers=headers, timeout=self._health_timeout) as response:
                return response.status, await response.read()
        except (asyncio.TimeoutError, aiohttp.ClientError) as exc:
            return None, _describe(exc).encode()


def _is_uuid(text: str) -> bool:
    try:
        uuid.UUID(text)
    except ValueError:
        return False
    return True


def _describe(exc: BaseException) -> str:
    if isinstance(exc, asyncio.TimeoutError):
        return "timed out"
    return str(exc) or type(exc).__name__
