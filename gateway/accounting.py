"""What happened to one client request, told once: its canonical log line and its metrics.

``RequestRecord`` collects the facts as the request goes (attempts, backend, timings, usage); ``Accounting``
turns them into the one ``request`` line per client request, one ``upstream_attempt`` line per failed attempt
(and for the attempt that answered after a failover), and the Prometheus counters. A request served at the
first try is told whole by its canonical line: one line is a tenth of the gateway's own work per request.
Lines carry routing facts only (ids, backend names, hosts without userinfo, status, timings, token counts):
never keys, credentials or message contents. With telemetry (gateway/telemetry.py, Application Insights) the
same facts also become a trace per request and a span per attempt; without it, each hook is one None test.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from aiohttp import web

from gateway.logs import bound_logger, event_writer, milliseconds
from gateway.metrics import GatewayMetrics
from gateway.outcome import Verdict
from gateway.settings import BackendConfig
from gateway.upstream import UpstreamError
from gateway.usage import Usage

if TYPE_CHECKING:
    from gateway.telemetry import Telemetry


class RequestRecord:
    """What happened to one client request: the canonical log line and the metrics are built from it.

    A plain class whose defaults live on the class: a request sets only the facts it has, and creating the
    record costs three assignments instead of one per field (a slotted dataclass assigns all seventeen).
    """

    model: str | None = None
    stream: bool = False
    attempts: int = 0
    backend: str | None = None
    tried: tuple[str, ...] = ()  # backends in the order they were tried
    skipped: dict[str, str] | None = None
    last_error: UpstreamError | None = None
    throttled_attempts: int = 0  # attempts answered 429/503-busy: if all were, the client gets 429, not 502
    ttfb: float | None = None
    usage: Usage | None = None
    stream_error: str | None = None
    client_gone: bool = False
    affinity: str | None = None  # "new", "hit" or "moved" when affinity routing is on
    span: Any = None  # the request's span when telemetry is on

    def __init__(self, request_id: str, started: float, path: str = "") -> None:
        self.request_id = request_id
        self.started = started
        self.path = path


class Accounting:
    def __init__(self, metrics: GatewayMetrics, telemetry: Telemetry | None = None) -> None:
        self._metrics = metrics
        self._series = metrics.series
        self._telemetry = telemetry
        self.traced = telemetry is not None  # whether ``began`` has anything to do
        self._log = bound_logger()
        self._write_request_line = event_writer("request")

    def began(self, record: RequestRecord, request: web.Request) -> None:
        """A client request came in (its span continues the caller's traceparent)."""
        if self._telemetry is not None:
            record.span = self._telemetry.request_started(request.method, record.path, request.headers,
                                                          record.started)

    def answered(self, record: RequestRecord, backend: BackendConfig, sent: float, status: int) -> None:
        """An attempt succeeded: count the tokens its backend reported (0, 0 when it reported none)."""
        usage = record.usage
        series = self._series[record.backend or backend.name]  # (its name, without reading the pydantic model)
        if record.ttfb is not None:
            series.ttfb.observe(record.ttfb)
        if usage is None:
            series.answered(0, 0)
        else:
            series.answered(usage.prompt_tokens, usage.completion_tokens, usage.cached_tokens)
        if self._telemetry is not None:
            self._telemetry.attempt_ended(
                record.span, backend, record.model, record.attempts, sent, "ok", status,
                ttfb=record.ttfb, usage=usage,
            )

    def attempt(
        self,
        record: RequestRecord,
        backend: BackendConfig,
        sent: float,
        verdict: Verdict,
        *,
        status: int | None,
        error: UpstreamError | None = None,
        ejected_s: float | None = None,
    ) -> None:
        """One upstream attempt's line, and its count when it failed (a failover is counted as a retry)."""
        if error is not None:
            series = self._series[backend.name]
            if record.ttfb is not None:  # it failed after its headers came (a body or a stream cut short)
                series.ttfb.observe(record.ttfb)
            series.attempt(verdict.outcome)
            if verdict.retry and record.stream_error is None:
                series.retries.inc()
        fields: dict[str, object] = {
            "request_id": record.request_id,
            "backend": backend.name,
            "upstream": backend.host,
            "attempt": record.attempts,
            "status": status,
            "outcome": verdict.outcome,
            "duration_ms": milliseconds(time.perf_counter() - sent),
        }
        if error is not None:
            fields["error"] = error.message
        if verdict.cooldown is not None:
            fields["cooldown_s"] = round(verdict.cooldown, 3)
        if ejected_s is not None:
            fields["ejected_s"] = round(ejected_s, 3)
        if verdict.outcome == "ok":
            self._log.info("upstream_attempt", **fields)
        else:
            self._log.warning("upstream_attempt", **fields)
            if self._telemetry is not None:  # an answer's span is told by answered()
                self._telemetry.attempt_ended(
                    record.span, backend, record.model, record.attempts, sent, verdict.outcome, status,
                    error=error.message if error is not None else verdict.outcome,
                    cooldown_s=verdict.cooldown, ejected_s=ejected_s,
                )

    def finish(self, record: RequestRecord, status: int) -> None:
        """The request is over: count it, and write its canonical log line."""
        duration = time.perf_counter() - record.started
        self._series[record.backend or "none"].request(status, duration)
        fields: dict[str, object] = {
            "request_id": record.request_id,
            "path": record.path,
            "model": record.model,
            "stream": record.stream,
            "status": status,
            "backend": record.backend,
            "attempts": record.attempts,
            # logs.milliseconds, written out: two calls on every request's line are worth saving
            "duration_ms": int(duration * 100_000 + 0.5) / 100,
        }  # the canonical line, in this order; what is known only sometimes follows
        if record.ttfb is not None:
            fields["ttfb_ms"] = int(record.ttfb * 100_000 + 0.5) / 100
        usage = record.usage
        if usage is not None:
            fields["prompt_tokens"] = usage.prompt_tokens
            fields["completion_tokens"] = usage.completion_tokens
            if usage.cached_tokens is not None and (reuse := usage.prompt_reuse) is not None:
                # how much of the prompt the backend's cache held: affinity, measured
                fields["cached_tokens"] = usage.cached_tokens
                fields["prompt_reuse"] = round(reuse, 3)
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
        if self._telemetry is not None and record.span is not None:
            self._telemetry.request_finished(
                record.span, status, record.backend, record.attempts, record.model, record.usage
            )
