"""OpenTelemetry for the chat app, exported to Application Insights when APPLICATIONINSIGHTS_CONNECTION_STRING
is set; without it nothing is imported, built or hooked.

`setup_telemetry()` starts the Azure Monitor distro (exporters, resource "chat") once per process.
`client_options()` gives the openai client an HTTP client whose hooks make one CLIENT span per call to the
gateway ("chat <deployment>": gen_ai.operation.name, gen_ai.request.model, server.address, status) and send
its `traceparent`, so the gateway's request and attempt spans join the chat's trace. The hooks are ours
because the SDK's transport here is httpx2, which neither the distro's httpx instrumentation nor
OpenTelemetry's OpenAI instrumentation know. The span ends when the answer's headers arrive: for a streamed
reply that is the time to its first byte; the gateway's spans and metrics time the rest and count tokens.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from typing import Any

CONNECTION_STRING = "APPLICATIONINSIGHTS_CONNECTION_STRING"
SERVICE_NAME = "chat"
_DEPLOYMENT = re.compile(r"/deployments/([^/]+)/")
_SPAN = "otel_span"  # where a request carries its span to the response hook (httpx Request.extensions)


def setup_telemetry() -> bool:
    """Start exporting, once per process, before the app is built. Returns whether telemetry is on."""
    connection_string = os.environ.get(CONNECTION_STRING)
    if not connection_string:
        return False
    from azure.monitor.opentelemetry import configure_azure_monitor
    from opentelemetry.sdk.resources import Resource

    configure_azure_monitor(
        connection_string=connection_string,
        resource=Resource.create({"service.name": SERVICE_NAME}),
        instrumentation_options={
            name: {"enabled": False}
            for name in ("django", "fastapi", "flask", "psycopg2", "requests", "urllib")
        },
    )
    return True


def client_options(tracer: Any = None) -> dict[str, Any]:
    """Extra arguments for the openai client: {} without telemetry. `tracer`: a test's own."""
    if tracer is None:
        if not os.environ.get(CONNECTION_STRING):
            return {}
        from opentelemetry import trace

        tracer = trace.get_tracer("chat_client")
    import openai
    from opentelemetry import propagate, trace
    from opentelemetry.trace import SpanKind, StatusCode

    async def on_request(request: Any) -> None:
        deployment = _DEPLOYMENT.search(request.url.path)
        attributes = {"gen_ai.operation.name": "chat", "server.address": request.url.host}
        if deployment:
            attributes["gen_ai.request.model"] = deployment.group(1)
        span = tracer.start_span(
            f"chat {deployment.group(1)}" if deployment else "chat",
            kind=SpanKind.CLIENT,
            attributes=attributes,
        )
        request.extensions[_SPAN] = span
        propagate.inject(request.headers, context=trace.set_span_in_context(span))

    async def on_response(response: Any) -> None:
        span = response.request.extensions.pop(_SPAN, None)
        if span is None:
            return
        span.set_attribute("http.response.status_code", response.status_code)
        if response.status_code >= 400:
            span.set_status(StatusCode.ERROR)
            span.set_attribute("error.type", str(response.status_code))
        span.end()

    hooks: dict[str, list[Callable[..., Any]]] = {"request": [on_request], "response": [on_response]}
    return {"http_client": openai.DefaultAsyncHttpxClient(event_hooks=hooks)}
