"""JSON responses and the OpenAI-shaped errors the handlers return."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson
from aiohttp import web

from .errors import error_body


def json_response(payload: Any, status: int = 200, headers: Mapping[str, str] | None = None) -> web.Response:
    return web.Response(body=orjson.dumps(payload), status=status, headers=headers,
                        content_type="application/json")


def error_response(status: int, message: str, type: str, code: str | None,
                   param: str | None = None) -> web.Response:
    return json_response(error_body(message, type, code, param), status=status)


def invalid_api_key() -> web.Response:
    return error_response(401, "Incorrect API key provided.", "invalid_request_error", "invalid_api_key")


def authorized(request: web.Request, api_key: str | None) -> bool:
    """OpenAI clients send `Authorization: Bearer <key>`, Azure clients send `api-key: <key>`."""
    if api_key is None:
        return True
    headers = request.headers
    return headers.get("api-key") == api_key or headers.get("Authorization") == f"Bearer {api_key}"
