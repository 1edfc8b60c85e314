"""Proxying one client request: acquire a backend, try it, fail over at once, answer; told once at the end.

The request flows one way. ``serve`` reads and parses the body (the endpoint's parser), then runs attempts:

    for each attempt, up to max_attempts:
        lease   = balancer.acquire(...)              a backend with its slot taken, or the refusal (429/503)
        answer  = one attempt on lease.backend       relayed to the client (streamed, or whole)
        verdict = outcome.classify(error)            retry? cooldown? breaker?
        lease.release(verdict)                       recorded on the backend, slot handed on
        accounting                                   attempt line, metrics

A plain loop rather than tenacity: there is no wait between attempts (the next one goes to a *different*
backend, so there is nothing to wait for), the stop rule is a count, and whether to retry is the verdict's.
What is left for a retry library is the loop itself, and building its retry state cost ~50 µs per request —
as much as the rest of the gateway's own work — which is why the earlier code ran the first attempt by hand
beside it. Waiting is left to the client: when every backend is throttled we answer 429 with the soonest
recovery as Retry-After.

Generic over the endpoint: anything with the ``Proxied`` shape (the model to route by, whether it streams, the
conversation key, which backends can answer it and what goes to each) goes through the same flow. What goes to a
backend is an ``Outbound`` (gateway/apis.py): the API to call there, the bytes, and the translation that turns
the answer back into the client's API — a Responses request to a chat-only backend is rewritten both ways.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from contextlib import aclosing
from typing import Protocol

from aiohttp import web
from multidict import CIMultiDict, CIMultiDictProxy

from gateway.accounting import Accounting, RequestRecord
from gateway.affinity import AffinityStore
from gateway.apis import Outbound, Translation
from gateway.backend_state import BackendState
from gateway.balancer import Balancer, Lease
from gateway.clock import Clock
from gateway.drain import DRAIN
from gateway.errors import (
    AllBackendsThrottled,
    GatewayError,
    ShuttingDown,
    UpstreamUnavailable,
    error_response,
)
from gateway.outcome import SUCCEEDED, CooldownPolicy, classify
from gateway.relay import relay_stream
from gateway.request_body import arrived_body, read_body
from gateway.settings import Api, BackendConfig
from gateway.upstream import (
    UpstreamClient,
    UpstreamConnectionError,
    UpstreamError,
    UpstreamStatusError,
    forwardable_headers,
)
from gateway.usage import usage_from_body


class Proxied(Protocol):
    """What the proxy needs of a parsed client request, whatever the endpoint."""

    model: str | None  # routes the request (backends' ``models``)
    stream: bool  # the client asked for SSE
    affinity_key: bytes | None  # the conversation, when affinity routing is on

    @property
    def api(self) -> Api | None:
        """The API that answers it, natively, on every backend that can (a request passed through as it is);
        None when that depends on the backend, and ``served_by`` is asked of each (Responses, translated)."""
        ...

    def served_by(self, backend: BackendConfig) -> bool:
        """Whether this backend can answer it (natively or translated): the API table, ``gateway.apis``."""
        ...

    def unserved(self) -> GatewayError:
        """The answer when no backend for the model can."""
        ...

    def for_backend(self, backend: BackendConfig) -> Outbound:
        """What goes to this backend: its API, the bytes, and how its answer comes back."""
        ...


# An endpoint's parser: the body, the request (for its path's deployment), and whether to work out the
# conversation's affinity key (affinity routing is on).
Parse = Callable[[bytes, web.Request, bool], Proxied]


class _Retry(Exception):
    """This attempt failed in a way another backend may not: go on to the next attempt."""


class Proxy:
    def __init__(
        self,
        *,
        balancer: Balancer,
        upstream: UpstreamClient,
        accounting: Accounting,
        clock: Clock,
        max_attempts: int,
        cooldown: CooldownPolicy,
        expose_routing_headers: bool = True,
        affinity: AffinityStore | None = None,
    ) -> None:
        self._balancer = balancer
        self._upstream = upstream
        self._accounting = accounting
        self._clock = clock
        self._attempt_numbers = range(max_attempts)  # made once: iterated on every request
        self._cooldown = cooldown
        self._expose_routing_headers = expose_routing_headers
        self.affinity = affinity

    async def serve(self, request: web.Request, request_id: str, parse: Parse) -> web.StreamResponse:
        """The whole of one client request, the view's one call: read and parse it, then attempts until one
        answers (or none is left). One coroutine for all of it: a stream holds its coroutines for as long as it
        is open, and each layer is CPU per request and memory per open stream (~0.4 kB)."""
        record = RequestRecord(request_id, time.perf_counter(), request.path)
        if self._accounting.traced:
            self._accounting.began(record, request)
        status = 499  # nginx's "client closed request", if we are cancelled before answering
        try:
            body = arrived_body(request)
            if body is None:
                body = await read_body(request)
            proxied = parse(body, request, self.affinity is not None)
            record.model, record.stream = proxied.model, proxied.stream
            candidates = self._balancer.candidates(proxied.model, proxied.api)
            if proxied.api is None:
                candidates = _served_by(candidates, proxied)
            if not candidates:
                raise proxied.unserved()
            deadline = self._clock.monotonic() + self._balancer.queue_timeout
            conversation = proxied.affinity_key if self.affinity is not None else None
            preferred = self._pinned(conversation, record) if conversation is not None else None
            for _ in self._attempt_numbers:
                try:
                    lease = await self._balancer.acquire(candidates, record.tried, preferred, deadline, conversation)
                except GatewayError as refusal:
                    if record.attempts == 0:
                        raise
                    raise self._exhausted(candidates, record, refusal) from None
                record.tried += (lease.backend.name,)
                if lease.skipped:
                    record.skipped = lease.skipped
                if lease.affinity is not None:
                    record.affinity = lease.affinity
                try:
                    response = await self._attempt(request, proxied, lease, record)
                except _Retry:
                    record.ttfb = None  # that attempt's, told with it; the next one's is its own
                    continue
                status = 499 if record.client_gone else response.status
                return response
            raise self._exhausted(candidates, record, None)
        except GatewayError as error:
            status = error.status
            return _refusal(error, request_id)
        except asyncio.CancelledError:
            # Not the client leaving but the shutdown's grace running out (gateway.drain), with nothing sent yet
            # (a started stream is ended by the relay): 503, and another replica can take the request.
            if not request.app[DRAIN].expired or request.writer.output_size:
                raise
            asyncio.current_task().uncancel()  # type: ignore[union-attr]
            status = ShuttingDown.status
            return _refusal(ShuttingDown(), request_id)
        finally:
            self._accounting.finish(record, status)

    def _pinned(self, conversation: bytes, record: RequestRecord) -> str | None:
        """The backend holding this conversation's cache, if one does (affinity routing)."""
        assert self.affinity is not None
        preferred = self.affinity.preferred(conversation)
        if preferred is None:
            record.affinity = "new"
        return preferred

    def _exhausted(
        self, candidates: Sequence[BackendState], record: RequestRecord, refusal: GatewayError | None
    ) -> GatewayError:
        """Every attempt failed (or no backend is left to try): 429 if it is a matter of waiting, else 502."""
        soonest = self._balancer.soonest_recovery(candidates)
        if soonest is not None:
            return soonest
        if isinstance(refusal, AllBackendsThrottled):
            return refusal
        if record.throttled_attempts == record.attempts:
            # Every backend tried said "busy": that is a 429 to the client, never a 502, even when the cooldowns
            # it asked for are already over (a retry-after-ms of a few ms).
            return AllBackendsThrottled("All backends are throttled; retry shortly.", retry_after=1.0)
        last = record.last_error.message if record.last_error is not None else "no answer"
        return UpstreamUnavailable(f"No backend could answer after {record.attempts} attempt(s); last: {last}.")

    async def _attempt(
        self, request: web.Request, proxied: Proxied, lease: Lease, record: RequestRecord
    ) -> web.StreamResponse:
        """One attempt on the leased backend. Raises _Retry when failover should follow; releases the lease."""
        record.attempts += 1
        backend = lease.backend.config
        sent = time.perf_counter()
        outbound = proxied.for_backend(backend)
        translation = outbound.translation
        try:
            upstream = await self._upstream.chat_completion(backend, outbound.body, record.request_id, outbound.api)
            if lease.backend.recovering:  # (only a probe after a cooldown has news to give: no call otherwise)
                lease.accepted()
            try:
                record.ttfb = time.perf_counter() - sent  # (counted when the attempt is told: answered or failed)
                headers = self._headers(upstream.headers, lease, record)
                if proxied.stream and upstream.content_type == "text/event-stream":
                    async with aclosing(upstream.iter_chunks()) as chunks:
                        relayed = await relay_stream(request, upstream.status, headers, chunks, backend,
                                                     translation.stream() if translation is not None else None)
                    record.backend = lease.backend.name
                    record.usage = relayed.usage
                    record.client_gone = relayed.client_gone
                    if relayed.error is not None:
                        # Bytes already reached the client: no failover, but the attempt failed all the same.
                        record.stream_error = relayed.error.message
                        self._failed(lease, record, relayed.error, sent)
                        return relayed.response
                    response: web.StreamResponse = relayed.response
                else:
                    body = upstream.take_body()
                    if body is None:  # not all of it has arrived yet
                        body = await upstream.read()
                    record.usage = usage_from_body(body)
                    if translation is not None:
                        body = _translated(translation, body, backend)
                    response = web.Response(status=upstream.status, body=body, headers=headers)
            finally:
                upstream.close()  # back to the pool if read to the end; otherwise the upstream request is aborted
        except UpstreamError as error:
            if self._failed(lease, record, error, sent):
                raise _Retry from None
            # Not retryable: the client's own mistake (400, 401, 404...), or an answer over the size cap (our own
            # 502). Either is an UpstreamStatusError; the backend is fine, and the answer goes back as written.
            assert isinstance(error, UpstreamStatusError) and error.status is not None
            record.backend = backend.name
            headers = self._headers(error.headers, lease, record)
            return web.Response(status=error.status, body=error.body, headers=headers)
        except BaseException:
            lease.release()  # cancelled (the client went away) or a bug: settles nothing, frees a probe
            raise

        record.backend = lease.backend.name  # (not backend.name: a pydantic model's attributes are slow to read)
        lease.release(SUCCEEDED)
        if self.affinity is not None and proxied.affinity_key is not None:
            self.affinity.remember(proxied.affinity_key, lease.backend.name)
        if record.attempts > 1:
            # It failed over: the earlier attempts have their lines, and so does the one that answered.
            self._accounting.attempt(record, backend, sent, SUCCEEDED, status=response.status)
        self._accounting.answered(record, backend, sent, upstream.status)  # (the response's, without its property)
        return response

    def _failed(self, lease: Lease, record: RequestRecord, error: UpstreamError, sent: float) -> bool:
        """Settle a failed attempt: verdict on the backend, its line and counts. Returns whether to fail over."""
        verdict = classify(error, self._cooldown, self._clock.wall())
        ejected = lease.release(verdict)
        if verdict.retry:
            record.last_error = error
            if verdict.outcome == "throttled":
                record.throttled_attempts += 1
        self._accounting.attempt(
            record, lease.backend.config, sent, verdict, status=error.status, error=error, ejected_s=ejected
        )
        return verdict.retry and record.stream_error is None

    def _headers(self, upstream_headers: CIMultiDictProxy[str], lease: Lease, record: RequestRecord
                 ) -> CIMultiDict[str]:
        """The upstream's end-to-end headers and ours (request id, and who served it), for our answer."""
        headers = forwardable_headers(upstream_headers)
        headers["x-request-id"] = record.request_id
        if self._expose_routing_headers:
            headers["x-gateway-backend"] = lease.backend.name
            headers["x-gateway-attempts"] = str(record.attempts)
        return headers


def _translated(translation: Translation, body: bytes, backend: BackendConfig) -> bytes:
    """The upstream's answer in the client's API; an answer that cannot be read is this backend's failure."""
    try:
        return translation.answer(body)
    except (ValueError, TypeError) as exc:
        raise UpstreamConnectionError(backend, f"{backend.name} sent an answer that could not be read: {exc}") from None


def _served_by(candidates: Sequence[BackendState], proxied: Proxied) -> list[BackendState]:
    # A module function: in the method, the comprehension would make ``proxied`` a cell on every request.
    return [c for c in candidates if proxied.served_by(c.config)]


def _refusal(error: GatewayError, request_id: str) -> web.Response:
    """Our own error answer, with the request's id (the guard leaves the proxy's answers alone)."""
    response = error_response(error)
    response.headers["x-request-id"] = request_id
    return response
