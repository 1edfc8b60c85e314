"""OpenAI-shaped error bodies: `{"error": {"message", "type", "param", "code"}}`.

Pure data, no I/O, so scripted replies and handlers render errors the same way.
"""

from __future__ import annotations

from http import HTTPStatus
from typing import Any

# The `type` the real services put next to each status; clients branch on it.
_TYPE_BY_STATUS = {
    400: "invalid_request_error",
    401: "invalid_request_error",
    403: "permission_error",
    404: "invalid_request_error",
    408: "timeout_error",
    409: "conflict_error",
    422: "invalid_request_error",
    429: "rate_limit_exceeded",
}


def error_body(message: str, type: str, code: str | None, param: str | None = None) -> dict[str, Any]:
    return {"error": {"message": message, "type": type, "param": param, "code": code}}


def error_for_status(status: int) -> dict[str, Any]:
    """The body a real upstream would plausibly send with `status` when nothing more specific is scripted."""
    try:
        phrase = HTTPStatus(status).phrase
    except ValueError:
        phrase = "Error"
    type_ = _TYPE_BY_STATUS.get(status, "server_error" if status >= 500 else "invalid_request_error")
    return error_body(phrase, type_, str(status))


def loading_model_body() -> dict[str, Any]:
    """What llama-server's /health says while the model is still loading."""
    return {"error": {"code": 503, "message": "Loading model", "type": "unavailable_error"}}
