"""Every error the gateway itself answers with, and the one place they are rendered.

The body is OpenAI-shaped, ``{"error": {"message", "type", "code"}}``, and the status is the one the official
SDK maps to the right exception class (400 BadRequestError, 401 AuthenticationError, 404 NotFoundError,
413 → APIStatusError, 429 RateLimitError, 5xx InternalServerError).

    GatewayError
    ├── BadRequest              400  malformed JSON, missing or invalid fields
    ├── Unauthorized            401  missing or wrong inbound API key
    ├── ModelNotFound           404  no backend serves the requested model
    ├── PayloadTooLarge         413  body over GATEWAY_MAX_BODY_BYTES
    ├── AllBackendsThrottled    429  every candidate is cooling down or busy; carries Retry-After
    ├── UpstreamUnavailable     502  backends were tried and none answered usefully
    ├── NoBackendAvailable      503  no backend can take traffic at all (ejected / unhealthy)
    └── ShuttingDown            503  the gateway is stopping and its grace ran out first; carries Retry-After

Errors *from* upstreams are translated in ``gateway.upstream``; a non-retryable upstream answer (say a 400
for a bad parameter) is passed through to the client as the upstream wrote it.
"""

from __future__ import annotations

import math

import orjson
from aiohttp import web


class GatewayError(Exception):
    status = 500
    error_type = "server_error"
    code = "internal_error"

    def __init__(self, message: str, *, code: str | None = None, param: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        if code is not None:
            self.code = code

    def headers(self) -> dict[str, str]:
        return {}


class BadRequest(GatewayError):
    status = 400
    error_type = "invalid_request_error"
    code = "invalid_request"


class Unauthorized(GatewayError):
    status = 401
    error_type = "invalid_request_error"
    code = "invalid_api_key"


class ModelNotFound(GatewayError):
    status = 404
    error_type = "invalid_request_error"
    code = "model_not_found"


class PayloadTooLarge(GatewayError):
    status = 413
    error_type = "invalid_request_error"
    code = "request_too_large"

    @classmethod
    def over(cls, limit: int) -> PayloadTooLarge:
        return cls(f"The request body is larger than {limit} bytes.")


class AllBackendsThrottled(GatewayError):
    status = 429
    error_type = "rate_limit_error"
    code = "all_backends_throttled"

    def __init__(self, message: str, *, retry_after: float) -> None:
        super().__init__(message)
        self.retry_after = max(retry_after, 0.0)

    def headers(self) -> dict[str, str]:
        # Retry-After only takes whole seconds; retry-after-ms lets the openai SDK wait exactly as long.
        return {
            "Retry-After": str(max(1, math.ceil(self.retry_after))),
            "retry-after-ms": str(max(1, math.ceil(self.retry_after * 1000))),
        }


class UpstreamUnavailable(GatewayError):
    status = 502
    error_type = "server_error"
    code = "upstream_unavailable"


class NoBackendAvailable(GatewayError):
    status = 503
    error_type = "server_error"
    code = "no_backend_available"


class ShuttingDown(GatewayError):
    status = 503
    error_type = "server_error"
    code = "gateway_shutting_down"

    def __init__(self) -> None:
        super().__init__("The gateway is shutting down and could not answer in time; retry (another replica "
                         "will take it).")

    def headers(self) -> dict[str, str]:
        return {"Retry-After": "1"}


def error_body(message: str, error_type: str, code: str, param: str | None = None) -> bytes:
    return orjson.dumps({"error": {"message": message, "type": error_type, "param": param, "code": code}})


def error_response(error: GatewayError, extra_headers: dict[str, str] | None = None) -> web.Response:
    headers = error.headers()
    if extra_headers:
        headers.update(extra_headers)
    return web.Response(
        status=error.status,
        body=error_body(error.message, error.error_type, error.code, error.param),
        content_type="application/json",
        headers=headers,
    )


def sse_error_event(message: str, code: str) -> bytes:
    """An error event for a stream that already started: the openai SDK raises APIError when it reads one."""
    return b"data: " + error_body(message, "server_error", code) + b"\n\n"
