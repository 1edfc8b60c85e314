"""Proxying one chat completion: pick a backend, try it, fail over at once, relay the answer.

The failover loop is tenacity's: stop after ``max_attempts``, retry only on a retryable upstream failure, no wait
between attempts (the next attempt goes to a *different* backend, so there is nothing to wait for). Waiting is
left to the client: when every backend is throttled we answer 429 with the soonest recovery as Retry-After.

Streams are relayed chunk by chunk. The client's response is started only when the first chunk has arrived
from the upstream, so until a byte has reached the client a broken stream can still fail over; after that, an
upstream failure ends the stream with an SSE error event (the openai SDK raises it) instead of a silent cut.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from dataclasses import dataclass

from aiohttp import web
from multidict import CIMultiDict, CIMultiDictProxy
from tenacity import AsyncRetrying, retry_if_exception_type, stop_after_attempt, wait_none

from gateway.affinity import AffinityTable
from gateway.backend_state import BackendState, BreakerPolicy
from gateway.balancer import Balancer
from gateway.chat_request import ChatRequest
from gateway.clock import Clock
from gateway.cooldown import cooldown_from_headers
from gateway.errors import AllBackendsThrottled, GatewayError, UpstreamUnavailable, sse_error_event
from gateway.logs import bound_logger, event_writer, milliseconds
from gateway.metrics import GatewayMetrics
from gateway.upstream import (
    UpstreamClient,
    UpstreamError,
    UpstreamResponse,
    UpstreamStatusError,
    forwardable_headers,
)
from gateway.usage import StreamUsageSniffer, Usage, usage_from_body

SSE_HEADERS = {
    "Content-Type": "text/event-stream",
    "Cache-Control": "no-cache",
    # nginx (and Azure Front Door / App Gateway setups built on it) would otherwise buffer the whole stream.
    "X-Accel-Buffering": "no",
}


@dataclass(slots=True)
class RequestRecord:
    """What happened to one client request: the canonical log line and the metrics are built from it."""

    request_id: str
    started: float
    attempts: int = 0
    backend: str | None = None
    tried: tuple[str, ...] = ()  # backends in the order they were tried
    skipped: dict[str, str] | None = None
    last_error: UpstreamError | None = None
    ttfb: float | None = None
    usage: Usage | None = None
    stream_error: str | None = None
    client_gone: bool = False
    affinity: str | None = None  # "new", "hit" or "moved" when affinity routing is on


class _RetryableAttempt(Exception):
    def __init__(self, error: UpstreamError) -> None:
        super().__init__(error.message)
        self.error = error


class ChatProxy:
    def __init__(
        self,
        *,
        balancer: Balancer,
        upstream: UpstreamClient,
        metrics: GatewayMetrics,
        clock: Clock,
        max_attempts: int,
        cooldown_default: float,
        cooldown_max: float,
        breaker: BreakerPolicy,
        expose_routing_headers: bool = True,
        affinity: AffinityTable | None = None,
    ) -> None:
        self._balancer = balancer
        self._upstream = upstream
        self._metrics = metrics
        self._clock = clock
        self._max_attempts = max_attempts
        self._cooldown_default = cooldown_default
        self._cooldown_max = cooldown_max
        self._breaker = breaker
        self._expose_routing_headers = expose_routing_headers
        self.affinity = affinity
        self._log = bound_logger()
        self._write_request_line = event_writer("request")

    async def handle(self, request: web.Request, chat: ChatRequest, record: RequestRecord) -> web.StreamResponse:
        candidates = self._balancer.candidates(chat.model)
        deadline = self._clock.monotonic() + self._balancer.queue_timeout
        # The first attempt runs outside tenacity: building its retry state costs ~50 µs, as much as the rest of
        # our own work per request, and nearly every request succeeds first time. Failover is tenacity's.
        try:
            state = self._take_free(candidates, chat, record)
            if state is None:
                state = await self._pick(candidates, chat, record, deadline)
            return await self._attempt(request, chat, state, record)
        except _RetryableAttempt:
            if self._max_attempts == 1:
                raise self._exhausted(candidates, record) from None
        retrying = AsyncRetrying(
            stop=stop_after_attempt(self._max_attempts - 1),
            retry=retry_if_exception_type(_RetryableAttempt),
            wait=wait_none(),
            reraise=True,
        )
        try:
            async for attempt in retrying:
                with attempt:
                    state = await self._pick(candidates, chat, record, deadline)
                    return await self._attempt(request, chat, state, record)
        except _RetryableAttempt:
            raise self._exhausted(candidates, record) from None
        raise AssertionError("unreachable: tenacity either returns or raises")  # pragma: no cover

    # -- choosing --------------------------------------------------------------------------------------

    def _take_free(self, candidates: list[BackendState], chat: ChatRequest, record: RequestRecord
                   ) -> BackendState | None:
        """The first attempt's backend when one is free and nothing needs weighing (no affinity): taken at
        once, without the coroutine ``_pick`` is. None sends the request down ``_pick``'s whole path."""
        if self.affinity is not None:
            return None
        state = self._choose(candidates, record, None)
        return self._take(state, record) if state is not None else None

    def _choose(self, candidates: list[BackendState], record: RequestRecord, preferred: str | None
                ) -> BackendState | None:
        skipped: dict[str, str] = {}
        state = self._balancer.choose(candidates, record.tried, skipped, preferred)
        if skipped:
            record.skipped = skipped
        return state

    def _take(self, state: BackendState, record: RequestRecord) -> BackendState:
        self._balancer.start(state)
        record.tried += (state.name,)
        return state

    async def _pick(
        self, candidates: list[BackendState], chat: ChatRequest, record: RequestRecord, deadline: float
    ) -> BackendState:
        """The backend for the next attempt, with its slot already taken (``Balancer.start``)."""
        preferred = self._preferred_backend(chat, record)
        while True:
            state = self._choose(candidates, record, preferred)
            if state is not None and (preferred is None or state.name == preferred):
                # Decided without queueing: a backend is free (the conversation's own, if it has one).
                if preferred is not None:
                    record.affinity = "hit"
                return self._take(state, record)
            waited: BackendState | bool | None = None
            if preferred is not None and (state is None or state.name != preferred):
                pinned = self._balancer.worth_waiting_for(preferred, candidates)
                if pinned is not None:
                    # Its conversation's cache is there and the others are no less busy: queue for it.
                    waited = await self._balancer.wait_for_slot(deadline, frozenset((pinned.name,)), pinned)
            if waited is None:
                waited = await self._take_or_queue(state, candidates, record, deadline)
            if waited is False:
                raise self._queue_timeout()
            if isinstance(waited, BackendState):
                record.tried += (waited.name,)
                if preferred is not None:
                    record.affinity = "hit" if waited.name == preferred else "moved"
                return waited

    async def _take_or_queue(
        self, state: BackendState | None, candidates: list[BackendState], record: RequestRecord, deadline: float
    ) -> BackendState | bool:
        """Take the chosen backend's slot, or queue when every untried backend is merely busy."""
        if state is not None:
            self._balancer.start(state)
            return state
        untried = [c for c in candidates if c.name not in record.tried]
        if not untried:
            raise self._exhausted(candidates, record)
        refusal = self._balancer.refusal(untried)
        if refusal is not None:
            raise self._exhausted(candidates, record) if record.attempts else refusal
        # Every untried backend is healthy but at its max_concurrency: queue for a free slot.
        return await self._balancer.wait_for_slot(deadline, frozenset(s.name for s in untried))

    def _preferred_backend(self, chat: ChatRequest, record: RequestRecord) -> str | None:
        if self.affinity is None or chat.affinity_key is None:
            return None
        preferred = self.affinity.preferred(chat.affinity_key)
        if preferred is None:
            record.affinity = "new"
        elif preferred in record.tried:
            return None  # it already failed this request: no loyalty to a broken backend
        return preferred

    def _queue_timeout(self) -> AllBackendsThrottled:
        return AllBackendsThrottled(
            f"All backends are busy and no slot freed up within {self._balancer.queue_timeout:g}s.",
            retry_after=1.0,
        )

    def _exhausted(self, candidates: list[BackendState], record: RequestRecord) -> GatewayError:
        refusal = self._balancer.refusal(candidates)
        if isinstance(refusal, AllBackendsThrottled):
            return refusal
        if record.last_error is not None:
            return UpstreamUnavailable(
                f"No backend could answer after {record.attempts} attempt(s); last: {record.last_error.message}."
            )
        return refusal or UpstreamUnavailable("No backend could answer.")

    # -- one attempt -----------------------------------------------------------------------------------

    async def _attempt(
        self, request: web.Request, chat: ChatRequest, state: BackendState, record: RequestRecord
    ) -> web.StreamResponse:
        record.attempts += 1
        series = self._metrics.for_backend(state.name)
        backend = state.config
        sent = time.perf_counter()
        try:
            upstream = await self._upstream.chat_completion(backend, chat.body, record.request_id)
            try:
                record.ttfb = time.perf_counter() - sent
                series.ttfb.observe(record.ttfb)
                if chat.stream and upstream.content_type == "text/event-stream":
                    response = await self._relay_stream(request, upstream, state, record)
                else:
                    body = upstream.take_body()
                    if body is None:  # not all of it has arrived yet
                        body = await upstream.read()
                    record.usage = usage_from_body(body)
                    response = web.Response(
                        status=upstream.status, body=body, headers=self._headers(upstream.headers, state, record)
                    )
            finally:
                upstream.close()  # back to the pool if read to the end; otherwise the upstream request is aborted
        except UpstreamError as error:
            self._record_failure(state, error, record, sent)
            if error.retryable:
                raise _RetryableAttempt(error) from None
            assert isinstance(error, UpstreamStatusError)
            # The client's own mistake (400, 401, 404...): the backend is fine, the answer goes back as written.
            state.record_success()
            record.backend = state.name
            headers = self._headers(error.headers, state, record)
            return web.Response(status=error.status, body=error.body, headers=headers)
        finally:
            self._balancer.finish(state)

        record.backend = state.name
        if record.stream_error is None:
            state.record_success()
        if self.affinity is not None and chat.affinity_key is not None:
            self.affinity.remember(chat.affinity_key, state.name)
        if record.attempts > 1:
            # It failed over: the earlier attempts have their lines, and so does the one that answered. A
            # request served at the first try is told whole by its canonical line (one line is a tenth of
            # the gateway's own work per request).
            self._log_attempt(state, record, upstream.status, sent, outcome="ok")
        usage = record.usage
        if usage is None:
            series.answered(0, 0)
        else:
            series.answered(usage.prompt_tokens, usage.completion_tokens)
        return response

    async def _relay_stream(
        self, request: web.Request, upstream: UpstreamResponse, state: BackendState, record: RequestRecord
    ) -> web.StreamResponse:
        chunks = upstream.iter_chunks()
        try:
            return await self._relay_chunks(request, upstream, chunks, state, record)
        finally:
            await chunks.aclose()

    async def _relay_chunks(
        self,
        request: web.Request,
        upstream: UpstreamResponse,
        chunks: AsyncIterator[bytes],
        state: BackendState,
        record: RequestRecord,
    ) -> web.StreamResponse:
        sniffer = StreamUsageSniffer()
        # Wait for the first chunk before answering the client: until then, failover is still possible.
        first = b""
        async for first in chunks:
            if first:
                break
        headers = self._headers(upstream.headers, state, record)
        headers.update(SSE_HEADERS)
        response = web.StreamResponse(status=upstream.status, headers=headers)
        record.backend = state.name
        await response.prepare(request)
        try:
            if first:
                sniffer.feed(first)
                await response.write(first)
            async for chunk in chunks:
                sniffer.feed(chunk)
                await response.write(chunk)
        except UpstreamError as error:
            # Bytes already reached the client: no failover now. End the stream with an error the SDK raises.
            record.stream_error = error.message
            self._record_failure(state, error, record, time.perf_counter())
            try:
                await response.write(
                    sse_error_event(f"Upstream stream interrupted: {error.message}", "stream_interrupted")
                )
            except ConnectionError:
                record.client_gone = True
        except ConnectionError:
            # The client went away; leaving this block closes the upstream response, which frees its slot.
            record.client_gone = True
            return response
        record.usage = sniffer.usage
        try:
            await response.write_eof()
        except ConnectionError:
            record.client_gone = True
        return response

    def _headers(self, upstream_headers: CIMultiDictProxy[str], state: BackendState, record: RequestRecord
                 ) -> CIMultiDict[str]:
        """The upstream's end-to-end headers and ours (request id, and who served it), for our answer."""
        headers = forwardable_headers(upstream_headers)
        headers["x-request-id"] = record.request_id
        if self._expose_routing_headers:
            headers["x-gateway-backend"] = state.name
            headers["x-gateway-attempts"] = str(record.attempts)
        return headers

    # -- bookkeeping -----------------------------------------------------------------------------------

    def finish(self, record: RequestRecord, path: str, chat: ChatRequest | None, status: int) -> None:
        """The request is over: count it, and write its canonical log line."""
        duration = time.perf_counter() - record.started
        self._metrics.for_backend(record.backend or "none").request(status, duration)
        fields: dict[str, object] = {
            "request_id": record.request_id,
            "path": path,
            "model": chat.model if chat is not None else None,
            "stream": chat.stream if chat is not None else False,
            "status": status,
            "backend": record.backend,
            "attempts": record.attempts,
            "duration_ms": milliseconds(duration),
        }  # the canonical line, in this order; what is known only sometimes follows
        if record.ttfb is not None:
            fields["ttfb_ms"] = milliseconds(record.ttfb)
        if record.usage is not None:
            fields["prompt_tokens"] = record.usage.prompt_tokens
            fields["completion_tokens"] = record.usage.completion_tokens
        if record.affinity is not None:
            fields["affinity"] = record.affinity
            self._metrics.affinity_result(record.affinity)
        if record.skipped:
            fields["skipped"] = record.skipped
        if record.stream_error:
            fields["stream_error"] = record.stream_error
        if record.attempts > 1 or status >= 400:
            fields["tried"] = sorted(record.tried)
        self._write_request_line(fields)

    def _record_failure(self, state: BackendState, error: UpstreamError, record: RequestRecord, sent: float) -> None:
        now = self._clock.monotonic()
        cooldown = ejected = None
        if error.throttled and isinstance(error, UpstreamStatusError):
            asked = cooldown_from_headers(error.headers, self._clock.wall())
            cooldown = min(asked if asked is not None else self._cooldown_default, self._cooldown_max)
            state.record_throttled(now, cooldown)
        if error.counts_as_failure:
            ejected = state.record_failure(now, self._breaker)
        if error.retryable:
            record.last_error = error
        outcome = "throttled" if error.throttled else ("failed" if error.retryable else "client_error")
        series = self._metrics.for_backend(state.name)
        series.attempt(outcome)
        if error.retryable and record.stream_error is None:
            series.retries.inc()
        self._log_attempt(state, record, error.status, sent, outcome=outcome, error=error.message,
                          cooldown_s=cooldown, ejected_s=ejected)

    def _log_attempt(
        self, state: BackendState, record: RequestRecord, status: int | None, sent: float, *, outcome: str,
        error: str | None = None, cooldown_s: float | None = None, ejected_s: float | None = None,
    ) -> None:
        fields: dict[str, object] = {
            "request_id": record.request_id,
            "backend": state.name,
            "upstream": state.config.host,
            "attempt": record.attempts,
            "status": status,
            "outcome": outcome,
            "duration_ms": milliseconds(time.perf_counter() - sent),
        }
        if error is not None:
            fields["error"] = error
        if cooldown_s is not None:
            fields["cooldown_s"] = round(cooldown_s, 3)
        if ejected_s is not None:
            fields["ejected_s"] = round(ejected_s, 3)
        if outcome == "ok":
            self._log.info("upstream_attempt", **fields)
        else:
            self._log.warning("upstream_attempt", **fields)
