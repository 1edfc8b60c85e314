"""Every error the app answers with is rendered here, in one place.

Handlers raise `ChatError`; `error_middleware` turns it (and aiohttp's own 404/405/413…, and anything
unexpected) into JSON `{"error": {"message", "code"}}` under /api/ and a small HTML page elsewhere.
"""

from __future__ import annotations

import logging

import aiohttp_jinja2
from aiohttp import web
from aiohttp.typedefs import Handler

log = logging.getLogger(__name__)


class ChatError(Exception):
    def __init__(self, status: int, code: str, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = headers or {}


def not_found(what: str = "Chat") -> ChatError:
    return ChatError(404, "not_found", f"{what} not found.")


HTTP_CODES = {
    400: "bad_request",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    413: "too_large",
    415: "unsupported_media_type",
    429: "rate_limited",
}


def wants_json(request: web.Request) -> bool:
    return request.path.startswith("/api/") or request.path == "/healthz"


def render(request: web.Request, error: ChatError) -> web.Response:
    if wants_json(request):
        return web.json_response(
            {"error": {"message": error.message, "code": error.code}},
            status=error.status,
            headers=error.headers,
        )
    response = aiohttp_jinja2.render_template(
        "error.html", request, {"status": error.status, "message": error.message}, status=error.status
    )
    response.headers.update(error.headers)
    return response


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except ChatError as exc:
        return render(request, exc)
    except web.HTTPException as exc:
        if exc.status < 400:  # redirects
            raise
        code = HTTP_CODES.get(exc.status, "http_error")
        return render(request, ChatError(exc.status, code, exc.reason + "."))
    except Exception:
        log.exception("unhandled error in %s %s", request.method, request.path)
        return render(request, ChatError(500, "internal", "Something went wrong on our side."))
