"""/_fake/*: lets another process (the benchmark) script a running fake and read its counters.

Unauthenticated on purpose: the fake only ever listens where its owner put it, usually loopback.
"""

from __future__ import annotations

import orjson
from aiohttp import web

from .keys import UPSTREAM
from .responses import error_response, json_response
from .script import Reply

PREFIX = "/_fake/"


async def set_script(request: web.Request) -> web.Response:
    """Body: `{"script": [reply, ...], "default": reply}`, each reply a status code or Reply fields."""
    upstream = request.app[UPSTREAM]
    try:
        data = orjson.loads(await request.read())
        if not isinstance(data, dict) or not set(data) <= {"script", "default"}:
            raise ValueError('expected an object with "script" and/or "default"')
        script = data.get("script", [])
        if not isinstance(script, list):
            raise TypeError('"script" must be a list')
        replies = [Reply.from_json(item) for item in script]
        default = Reply.from_json(data["default"]) if "default" in data else None
    except (orjson.JSONDecodeError, ValueError, TypeError) as exc:
        return error_response(400, f"Bad script: {exc}", "invalid_request_error", None)
    upstream.set_script(replies, default=default)
    return json_response({"script_length": len(upstream.script), "default": upstream.default.to_json()})


async def stats(request: web.Request) -> web.Response:
    return json_response(request.app[UPSTREAM].stats())


async def reset(request: web.Request) -> web.Response:
    upstream = request.app[UPSTREAM]
    upstream.reset()
    return json_response(upstream.stats())
