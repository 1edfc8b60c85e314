"""Reading a client's request body, checked against the app's limit (``GATEWAY_MAX_BODY_BYTES``) as early as
possible: before reading when Content-Length already says too much, and as it trickles in otherwise.

Two calls, so that the usual case costs no coroutine: ``arrived_body`` takes a body that came in with the
headers (a chat request's usually does), and only when it did not does ``read_body`` wait for the rest.
"""

from __future__ import annotations

from aiohttp import web

from gateway.errors import PayloadTooLarge


def arrived_body(request: web.Request) -> bytes | None:
    """The whole body if it has all arrived, taken in one piece (without ``request.read()``'s loop); else None."""
    content = request.content
    if not content.is_eof():
        return None
    body = content.read_nowait()
    if len(body) > request.client_max_size:  # the app's, which is settings.max_body_bytes
        raise PayloadTooLarge.over(request.client_max_size)
    return body


async def read_body(request: web.Request) -> bytes:
    limit = request.client_max_size
    if request.content_length is not None and request.content_length > limit:
        raise PayloadTooLarge.over(limit)
    try:
        return await request.read()
    except web.HTTPRequestEntityTooLarge:
        raise PayloadTooLarge.over(limit) from None
