"""Reading a client's request body, checked against the app's limit (``GATEWAY_MAX_BODY_BYTES``) as early as
possible: before reading when Content-Length already says too much, and as it trickles in otherwise."""

from __future__ import annotations

from aiohttp import web

from gateway.errors import PayloadTooLarge


async def read_body(request: web.Request) -> bytes:
    limit = request.client_max_size  # the app's, which is settings.max_body_bytes
    content = request.content
    if content.is_eof():
        # The whole body came in with the headers, as a chat request's usually does: taken in one piece,
        # without request.read()'s read loop.
        body = content.read_nowait()
        if len(body) > limit:
            raise PayloadTooLarge.over(limit)
        return body
    if request.content_length is not None and request.content_length > limit:
        raise PayloadTooLarge.over(limit)
    try:
        return await request.read()
    except web.HTTPRequestEntityTooLarge:
        raise PayloadTooLarge.over(limit) from None
