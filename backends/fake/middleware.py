"""Records every request the fake answers (control endpoints excepted) and how its answer ended."""

from __future__ import annotations

import asyncio

import orjson
from aiohttp import web
from aiohttp.typedefs import Handler

from .control import PREFIX as CONTROL_PREFIX
from .errors import error_for_status
from .keys import RECORD, UPSTREAM
from .recording import RecordedRequest


@web.middleware
async def record_requests(request: web.Request, handler: Handler) -> web.StreamResponse:
    if request.path.startswith(CONTROL_PREFIX):
        return await handler(request)
    upstream = request.app[UPSTREAM]
    name = request.match_info.route.name
    record = RecordedRequest(
        method=request.method,
        path=request.path,
        query=dict(request.query),
        headers={key.lower(): value for key, value in request.headers.items()},
        arrived_at=upstream.clock(),
        # Route names are "<kind>" or "<kind>.<variant>"; unnamed means aiohttp's 404/405.
        kind=name.partition(".")[0] if name else "other",
    )
    request[RECORD] = record
    upstream.begin(record)
    try:
        try:
            response = await handler(request)
        except web.HTTPException as exc:
            if exc.status < 400:
                raise
            # Unknown path or method: answer OpenAI-shaped, as the real APIs do.
            response = _openai_error(request, exc)
        _settle(request, record, response)
        return response
    except asyncio.CancelledError:
        # aiohttp cancels the handler when the client disconnects (handler_cancellation).
        record.cancelled = True
        raise
    finally:
        upstream.finish(record)


def _openai_error(request: web.Request, exc: web.HTTPException) -> web.Response:
    body = error_for_status(exc.status)
    if exc.status == 404:
        body["error"].update(message=f"Invalid URL ({request.method} {request.path})", code=None)
    allow = {"Allow": exc.headers["Allow"]} if "Allow" in exc.headers else None
    return web.Response(body=orjson.dumps(body), status=exc.status, headers=allow,
                        content_type="application/json")


def _settle(request: web.Request, record: RecordedRequest, response: web.StreamResponse) -> None:
    """Status and completion of a response the handler returned without writing it itself."""
    if response.prepared or record.dropped or record.cancelled:
        return  # streamed, cut or abandoned: the handler recorded how it ended
    transport = request.transport
    if transport is None or transport.is_closing():
        # Without handler cancellation the departure of the client only shows here.
        record.cancelled = True
        return
    record.status = response.status
    record.completed = True
