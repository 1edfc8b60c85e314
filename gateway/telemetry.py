"""OpenTelemetry: a trace per client request, a span per upstream attempt, the GenAI metrics; or nothing.

Exported to Application Insights when APPLICATIONINSIGHTS_CONNECTION_STRING is set (the azure-monitor-
opentelemetry distro). Without it nothing is imported or built: ``telemetry_from_environment()`` returns None
and each of Accounting's hooks costs one ``is not None`` test, so the request path is what it was.

Accounting tells this module what it already knows, at the moments it already knows it:

    request_started   span "<METHOD> <path>" (SERVER), child of the caller's ``traceparent`` when sent
    attempt_ended     span "chat <model>" (CLIENT) per upstream attempt, from when it was sent to its end:
                        gen_ai.operation.name, gen_ai.provider.name, gen_ai.request.model, server.address,
                        gateway.backend, gateway.attempt, gateway.outcome (ok, throttled, failed, ...),
                        http.response.status_code, error.type, gateway.cooldown_s, gateway.ejected_s,
                        gen_ai.usage.input_tokens / output_tokens
                      and for an answer: gen_ai.client.token.usage ({token}, input and output),
                        gen_ai.server.time_to_first_token (s: until the upstream's first byte),
                        gen_ai.client.operation.duration (s)
    request_finished  the request span's status, backend, attempts and usage; the span ends

Spans are created when their facts are complete, with the start time they had (OpenTelemetry takes explicit
timestamps), so nothing is held open across awaits but the request span.
"""

from __future__ import annotations

import os
import time
from typing import Any

from opentelemetry import propagate, trace
from opentelemetry.metrics import Meter
from opentelemetry.trace import Span, SpanKind, StatusCode, Tracer

from gateway.settings import APPINSIGHTS_CONNECTION_STRING, BackendConfig, BackendKind
from gateway.usage import Usage

CONNECTION_STRING = APPINSIGHTS_CONNECTION_STRING
SERVICE_NAME = "llm-gateway"
# gen_ai.provider.name: the semantic conventions' value where there is one.
PROVIDERS = {BackendKind.AZURE: "azure.ai.openai", BackendKind.OPENAI: "openai", BackendKind.LLAMACPP: "llama.cpp"}
# The buckets the GenAI semantic conventions advise for these two histograms.
TOKEN_BUCKETS = [1, 4, 16, 64, 256, 1024, 4096, 16384, 65536, 262144, 1048576, 4194304, 16777216, 67108864]
SECONDS_BUCKETS = [0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48, 40.96, 81.92]


def wall_ns(perf: float) -> int:
    """A time.perf_counter() reading as nanoseconds since the epoch (span timestamps are wall-clock)."""
    return time.time_ns() - int((time.perf_counter() - perf) * 1e9)


class Telemetry:
    def __init__(self, tracer: Tracer, meter: Meter) -> None:
        self._tracer = tracer
        self._tokens = meter.create_histogram(
            "gen_ai.client.token.usage", unit="{token}", description="Tokens per upstream answer",
            explicit_bucket_boundaries_advisory=TOKEN_BUCKETS,
        )
        self._ttft = meter.create_histogram(
            "gen_ai.server.time_to_first_token", unit="s", description="Time to the upstream's first byte",
            explicit_bucket_boundaries_advisory=SECONDS_BUCKETS,
        )
        self._duration = meter.create_histogram(
            "gen_ai.client.operation.duration", unit="s", description="Duration of an upstream attempt",
            explicit_bucket_boundaries_advisory=SECONDS_BUCKETS,
        )

    def request_started(self, method: str, path: str, headers: Any, started: float) -> Span:
        return self._tracer.start_span(
            f"{method} {path}",
            context=propagate.extract(headers),
            kind=SpanKind.SERVER,
            start_time=wall_ns(started),
            attributes={"http.request.method": method, "url.path": path},
        )

    def attempt_ended(
        self,
        span: Span,
        backend: BackendConfig,
        model: str | None,
        attempt: int,
        sent: float,
        outcome: str,
        status: int | None,
        *,
        ttfb: float | None = None,
        usage: Usage | None = None,
        error: str | None = None,
        cooldown_s: float | None = None,
        ejected_s: float | None = None,
    ) -> None:
        provider = PROVIDERS.get(backend.kind, str(backend.kind))
        common = {"gen_ai.operation.name": "chat", "gen_ai.provider.name": provider, "server.address": backend.host}
        if model:
            common["gen_ai.request.model"] = model
        attributes: dict[str, Any] = {
            **common,
            "gen_ai.system": provider,  # the attribute's name before semantic conventions 1.37
            "gateway.backend": backend.name,
            "gateway.attempt": attempt,
            "gateway.outcome": outcome,
        }
        if status is not None:
            attributes["http.response.status_code"] = status
        if cooldown_s is not None:
            attributes["gateway.cooldown_s"] = cooldown_s
        if ejected_s is not None:
            attributes["gateway.ejected_s"] = ejected_s
        if usage is not None:
            attributes["gen_ai.usage.input_tokens"] = usage.prompt_tokens
            attributes["gen_ai.usage.output_tokens"] = usage.completion_tokens
        if error is not None:
            attributes["error.type"] = outcome
        child = self._tracer.start_span(
            f"chat {model}" if model else "chat",
            context=trace.set_span_in_context(span),
            kind=SpanKind.CLIENT,
            start_time=wall_ns(sent),
            attributes=attributes,
        )
        if error is not None:
            child.set_status(StatusCode.ERROR, error)
        child.end()
        metric = {**common, "gateway.backend": backend.name}
        self._duration.record(time.perf_counter() - sent, {**metric, **({"error.type": outcome} if error else {})})
        if error is None:
            if ttfb is not None:
                self._ttft.record(ttfb, metric)
            if usage is not None:
                self._tokens.record(usage.prompt_tokens, {**metric, "gen_ai.token.type": "input"})
                self._tokens.record(usage.completion_tokens, {**metric, "gen_ai.token.type": "output"})

    def request_finished(
        self, span: Span, status: int, backend: str | None, attempts: int, model: str | None, usage: Usage | None
    ) -> None:
        span.set_attribute("http.response.status_code", status)
        span.set_attribute("gateway.attempts", attempts)
        if backend is not None:
            span.set_attribute("gateway.backend", backend)
        if model:
            span.set_attribute("gen_ai.request.model", model)
        if usage is not None:
            span.set_attribute("gen_ai.usage.input_tokens", usage.prompt_tokens)
            span.set_attribute("gen_ai.usage.output_tokens", usage.completion_tokens)
        if status >= 500:
            span.set_status(StatusCode.ERROR)
            span.set_attribute("error.type", str(status))
        span.end()


def telemetry_from_environment() -> Telemetry | None:
    """Application Insights when its connection string is set; None (no telemetry, no cost) otherwise."""
    connection_string = os.environ.get(CONNECTION_STRING)
    if not connection_string:
        return None
    from azure.monitor.opentelemetry import configure_azure_monitor
    from opentelemetry import metrics
    from opentelemetry.sdk.resources import Resource

    configure_azure_monitor(
        connection_string=connection_string,
        resource=Resource.create({"service.name": SERVICE_NAME}),
        # Our spans are our own (above); the distro's library instrumentations have nothing to see here.
        instrumentation_options={
            name: {"enabled": False}
            for name in ("django", "fastapi", "flask", "psycopg2", "requests", "urllib", "urllib3")
        },
    )
    return Telemetry(trace.get_tracer("gateway"), metrics.get_meter("gateway"))
