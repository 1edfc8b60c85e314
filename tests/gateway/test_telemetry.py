"""OpenTelemetry through a real gateway (gateway/telemetry.py): spans and metrics caught in memory.

A request continues the caller's traceparent; each upstream attempt is a CLIENT span with its backend and
outcome and the GenAI attributes; answers record gen_ai.client.token.usage and time to first token; without
Application Insights no telemetry object exists at all.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from backends.fake import Reply, throttled
from gateway import keys
from gateway.app import create_app
from gateway.settings import GatewaySettings
from gateway.telemetry import CONNECTION_STRING, Telemetry
from tests.gateway.conftest import CHAT

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT_SPAN_ID = "00f067aa0ba902b7"
TRACEPARENT = f"00-{TRACE_ID}-{PARENT_SPAN_ID}-01"


class Caught:
    def __init__(self) -> None:
        self.spans = InMemorySpanExporter()
        self.metrics = InMemoryMetricReader()
        tracer_provider = TracerProvider()
        tracer_provider.add_span_processor(SimpleSpanProcessor(self.spans))
        self.meter_provider = MeterProvider(metric_readers=[self.metrics])
        self.telemetry = Telemetry(tracer_provider.get_tracer("test"), self.meter_provider.get_meter("test"))

    def finished(self) -> list[ReadableSpan]:
        return list(self.spans.get_finished_spans())

    def server_span(self) -> ReadableSpan:
        (span,) = [s for s in self.finished() if s.kind is SpanKind.SERVER]
        return span

    def attempt_spans(self) -> list[ReadableSpan]:
        spans = [s for s in self.finished() if s.kind is SpanKind.CLIENT]
        return sorted(spans, key=lambda s: s.attributes["gateway.attempt"])

    def points(self, name: str) -> list[tuple[dict[str, Any], float, int]]:
        """(attributes, sum, count) of each data point of a histogram."""
        found = []
        data = self.metrics.get_metrics_data()
        for resource in data.resource_metrics if data else []:
            for scope in resource.scope_metrics:
                for metric in scope.metrics:
                    if metric.name == name:
                        found += [(dict(p.attributes), p.sum, p.count) for p in metric.data.data_points]
        return found


@pytest.fixture
def caught() -> Iterator[Caught]:
    caught = Caught()
    yield caught
    caught.meter_provider.shutdown()


async def test_a_request_continues_the_callers_trace_with_one_span_per_attempt(
    caught: Caught, upstreams: Callable[..., Any], gateway: Callable[..., Any]
) -> None:
    a = await upstreams(name="a", script=[Reply()])
    gw = await gateway([a], telemetry=caught.telemetry)
    async with gw.client(default_headers={"traceparent": TRACEPARENT}) as client:
        completion = await client.chat.completions.create(**CHAT)
    usage = completion.usage
    assert usage is not None and usage.prompt_tokens > 0 and usage.completion_tokens > 0

    server = caught.server_span()
    assert format(server.context.trace_id, "032x") == TRACE_ID
    assert server.parent is not None and format(server.parent.span_id, "016x") == PARENT_SPAN_ID
    assert server.name == "POST /v1/chat/completions"
    assert server.attributes["http.response.status_code"] == 200
    assert server.attributes["gateway.backend"] == "a" and server.attributes["gateway.attempts"] == 1
    (attempt,) = caught.attempt_spans()
    assert attempt.parent is not None and attempt.parent.span_id == server.context.span_id
    assert attempt.context.trace_id == server.context.trace_id
    assert attempt.name == f"chat {CHAT['model']}"
    assert {
        "gen_ai.operation.name": "chat",
        "gen_ai.provider.name": "openai",
        "gen_ai.request.model": CHAT["model"],
        "gateway.backend": "a",
        "gateway.outcome": "ok",
        "http.response.status_code": 200,
        "gen_ai.usage.input_tokens": usage.prompt_tokens,
        "gen_ai.usage.output_tokens": usage.completion_tokens,
    }.items() <= dict(attempt.attributes).items()
    assert server.start_time <= attempt.start_time <= attempt.end_time <= server.end_time

    tokens = {p[0]["gen_ai.token.type"]: p[1] for p in caught.points("gen_ai.client.token.usage")}
    assert tokens == {"input": usage.prompt_tokens, "output": usage.completion_tokens}
    ((attributes, seconds, count),) = caught.points("gen_ai.server.time_to_first_token")
    assert attributes["gateway.backend"] == "a" and count == 1 and seconds >= 0


async def test_a_failover_shows_each_backend_and_its_outcome(
    caught: Caught, upstreams: Callable[..., Any], gateway: Callable[..., Any]
) -> None:
    a = await upstreams(name="a", script=[Reply(status=500)])
    b = await upstreams(name="b", script=[throttled(30)])
    c = await upstreams(name="c", script=[Reply()])
    # Priorities make the order a, b, c: each is tried only when the ones before it cannot answer.
    backends = [{"name": u.name, "url": u.openai_url, "priority": p} for p, u in enumerate([a, b, c])]
    gw = await gateway(backends, max_attempts=3, telemetry=caught.telemetry)
    async with gw.client() as client:
        await client.chat.completions.create(**CHAT)

    attempts = caught.attempt_spans()
    outcomes = [(s.attributes["gateway.backend"], s.attributes["gateway.outcome"]) for s in attempts]
    assert outcomes == [("a", "failed"), ("b", "throttled"), ("c", "ok")]
    failed, throttled_span, ok = attempts
    assert failed.status.status_code is StatusCode.ERROR and failed.attributes["error.type"] == "failed"
    assert throttled_span.attributes["gateway.cooldown_s"] == 30
    assert ok.status.status_code is StatusCode.UNSET
    server = caught.server_span()
    assert server.parent is None, "no traceparent came in: a new trace"
    assert server.attributes["gateway.attempts"] == 3
    assert server.attributes["gateway.backend"] == ok.attributes["gateway.backend"]
    durations = caught.points("gen_ai.client.operation.duration")
    assert sorted(p[0].get("error.type", "") for p in durations) == ["", "failed", "throttled"]


async def test_a_request_no_backend_can_answer_is_an_error_span(
    caught: Caught, upstreams: Callable[..., Any], gateway: Callable[..., Any]
) -> None:
    a = await upstreams(name="a", script=[Reply(status=500)])
    gw = await gateway([a], max_attempts=1, telemetry=caught.telemetry)
    async with gw.client() as client:
        with pytest.raises(Exception):  # noqa: B017 - the SDK's 502 error; its type is not the point
            await client.chat.completions.create(**CHAT)
    server = caught.server_span()
    assert server.attributes["http.response.status_code"] == 502
    assert server.status.status_code is StatusCode.ERROR


def test_without_a_connection_string_there_is_no_telemetry(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(CONNECTION_STRING, raising=False)
    app = create_app(GatewaySettings(backends=[{"name": "a", "url": "http://127.0.0.1:9/v1"}]))
    assert app[keys.TELEMETRY] is None


async def test_the_chat_apps_call_and_the_gateways_spans_are_one_trace(
    caught: Caught, upstreams: Callable[..., Any], gateway: Callable[..., Any]
) -> None:
    """chat_client.telemetry's hooks on the openai client: a CLIENT span per call, its traceparent sent."""
    import openai
    from chat_client.telemetry import client_options
    from opentelemetry.sdk.trace import TracerProvider as SdkTracerProvider

    a = await upstreams(name="a", script=[Reply()])
    gw = await gateway([a], telemetry=caught.telemetry)
    chat_spans = InMemorySpanExporter()
    provider = SdkTracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(chat_spans))
    client = openai.AsyncAzureOpenAI(
        azure_endpoint=gw.url,
        api_key="k",
        api_version="2024-10-21",
        max_retries=0,
        **client_options(provider.get_tracer("chat")),
    )
    async with client:
        await client.chat.completions.create(model="smollm2", messages=CHAT["messages"])

    (call,) = chat_spans.get_finished_spans()
    assert call.kind is SpanKind.CLIENT and call.name == "chat smollm2"
    assert call.attributes["gen_ai.request.model"] == "smollm2"
    assert call.attributes["http.response.status_code"] == 200
    server = caught.server_span()
    assert server.context.trace_id == call.context.trace_id
    assert server.parent is not None and server.parent.span_id == call.context.span_id
    assert server.name == "POST /openai/deployments/smollm2/chat/completions"


def test_the_chat_client_is_left_alone_without_application_insights(monkeypatch: pytest.MonkeyPatch) -> None:
    from chat_client.telemetry import client_options, setup_telemetry

    monkeypatch.delenv(CONNECTION_STRING, raising=False)
    assert setup_telemetry() is False
    assert client_options() == {}


# ---- the routing workbook (infra/bicep/modules/monitoring.bicep) reads the lines the gateway writes --------


def workbook_queries() -> list[dict[str, str]]:
    from tests.deploy.bicep import BICEP_DIR, ns, scope_of

    scope = scope_of(
        BICEP_DIR / "modules" / "monitoring.bicep", name="log-x", workspace=ns(id="/workspaces/x")
    )
    workbook = scope["workbook"]
    assert workbook["version"] == "Notebook/1.0" and workbook["fallbackResourceIds"] == ["/workspaces/x"]
    return [item["content"] for item in workbook["items"] if item["type"] == 3]


async def test_the_workbook_reads_fields_the_gateway_writes_and_each_request_is_one_line(
    caught: Caught,
    upstreams: Callable[..., Any],
    gateway: Callable[..., Any],
    capfd: pytest.CaptureFixture[str],
) -> None:
    import re

    import orjson

    a = await upstreams(name="a", script=[Reply(status=500)])
    b = await upstreams(name="b", script=[throttled(5)])
    c = await upstreams(name="c", script=[Reply(), Reply()])
    backends = [{"name": u.name, "url": u.openai_url, "priority": p} for p, u in enumerate([a, b, c])]
    # One failure ejects a backend: the attempt line then says for how long (ejected_s).
    gw = await gateway(backends, max_attempts=3, eject_after_failures=1, telemetry=caught.telemetry)
    async with gw.client() as client:
        await client.chat.completions.create(**CHAT)  # a fails, b throttles, c answers
        await client.chat.completions.create(**CHAT)  # a and b cool down: c at once
    lines = [orjson.loads(line) for line in capfd.readouterr().out.splitlines() if line.startswith("{")]
    requests = [line for line in lines if line.get("event") == "request"]
    assert len(requests) == 2, "one routing line per request, telemetry or not"
    assert len(caught.finished()) == 2 + 3 + 1  # two request spans, four attempt spans

    written: dict[str, set[str]] = {}
    for line in lines:
        written.setdefault(line.get("event", ""), set()).update(line)
    queries = workbook_queries()
    assert len(queries) >= 5
    for query in (q["query"] for q in queries if q["query"].startswith("ContainerAppConsoleLogs_CL")):
        events = set(re.findall(r'event == "(\w+)"', query))
        fields = set(re.findall(r"line\.(\w+)", query)) - {"event"}
        assert events, query
        for event in events:
            assert fields <= written.get(event, set()), (
                f"{event} lines lack {fields - written.get(event, set())}"
            )
    spans = [q["query"] for q in queries if q["query"].startswith("AppDependencies")]
    attributes = set().union(*(s.attributes for s in caught.attempt_spans()))
    for query in spans:
        assert set(re.findall(r'Properties\["([\w.]+)"\]', query)) <= attributes
