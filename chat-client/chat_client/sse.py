"""Server-sent events: the wire format of streamed replies."""

from __future__ import annotations

import json

from aiohttp import web


async def open_stream(request: web.Request) -> web.StreamResponse:
    response = web.StreamResponse(
        headers={
            "Content-Type": "text/event-stream; charset=utf-8",
            "Cache-Control": "no-cache, no-store, no-transform",
            # Proxies (nginx, some ingresses) would otherwise buffer the whole reply.
            "X-Accel-Buffering": "no",
        }
    )
    await response.prepare(request)
    return response


def encode(event: str, data: object) -> bytes:
    # json.dumps never emits a raw newline, so one `data:` line per event is always well formed.
    return f"event: {event}\ndata: {json.dumps(data, ensure_ascii=False)}\n\n".encode()


async def send(response: web.StreamResponse, event: str, data: object) -> None:
    await response.write(encode(event, data))
