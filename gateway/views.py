"""HTTP handlers. Each reads what it needs from the app and hands real work to the module that owns it."""

from __future__ import annotations

import time

import orjson
from aiohttp import web

from gateway import keys
from gateway.chat_request import parse_chat_request
from gateway.errors import GatewayError, PayloadTooLarge, error_response
from gateway.proxy import RequestRecord


def body_if_arrived(request: web.Request, limit: int) -> bytes | None:
    """The whole body if it came in with the headers, as a chat request's usually does: taken in one piece,
    without a coroutine or request.read()'s read loop. None when some of it is still to come."""
    content = request.content
    if not content.is_eof():
        return None
    body = content.read_nowait()
    if len(body) > limit:
        raise PayloadTooLarge.over(limit)
    return body


async def read_body(request: web.Request, limit: int) -> bytes:
    """The body as it trickles in, checked against ``limit`` as early as possible."""
    if request.content_length is not None and request.content_length > limit:
        raise PayloadTooLarge.over(limit)
    try:
        return await request.read()
    except web.HTTPRequestEntityTooLarge:
        raise PayloadTooLarge.over(limit) from None


async def chat_completions(request: web.Request) -> web.StreamResponse:
    proxy = request.app[keys.PROXY]
    record = RequestRecord(request[keys.REQUEST_ID], time.perf_counter())
    status = 499  # nginx's "client closed request", if we are cancelled before answering
    chat = None
    try:
        limit = request.client_max_size  # the app's, which is settings.max_body_bytes
        chat = parse_chat_request(
            body_if_arrived(request, limit) or await read_body(request, limit),
            deployment=request.match_info.get("deployment"),
            affinity=proxy.affinity is not None,
        )
        response = await proxy.handle(request, chat, record)
        status = 499 if record.client_gone else response.status
        return response
    except GatewayError as error:
        status = error.status
        response = error_response(error)
        response.headers["x-request-id"] = record.request_id
        return response
    finally:
        proxy.finish(record, request.path, chat, status)


async def list_models(request: web.Request) -> web.Response:
    listing = await request.app[keys.MODELS_CATALOG].listing()
    return web.Response(body=orjson.dumps(listing), content_type="application/json")


async def healthz(request: web.Request) -> web.Response:
    return web.Response(body=b'{"status":"ok"}', content_type="application/json")


async def readyz(request: web.Request) -> web.Response:
    balancer = request.app[keys.BALANCER]
    now = balancer.now()
    backends = {state.name: state.condition(now).value for state in balancer.states}
    ready = balancer.any_ready()
    body = orjson.dumps({"status": "ready" if ready else "unavailable", "backends": backends})
    return web.Response(status=200 if ready else 503, body=body, content_type="application/json")


async def metrics(request: web.Request) -> web.Response:
    # Rendering walks every series; off the event loop's hot path is not needed at this size.
    body = request.app[keys.METRICS].render()
    return web.Response(body=body, headers={"Content-Type": "text/plain; version=0.0.4; charset=utf-8"})


async def no_route(request: web.Request) -> web.Response:
    """Whatever no other route matched: 405 (with Allow) when the path exists for other methods, else 404."""
    allowed: set[str] = set()
    fallback = request.match_info.route.resource
    for resource in request.app.router.resources():
        if resource is not fallback:
            _, methods = await resource.resolve(request)
            allowed |= methods
    if allowed:
        raise web.HTTPMethodNotAllowed(request.method, allowed)
    raise web.HTTPNotFound()


__all__ = ["chat_completions", "list_models", "healthz", "readyz", "metrics", "no_route"]
