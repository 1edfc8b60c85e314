"""HTTP handlers. Each reads what it needs from the app and hands real work to the module that owns it."""

from __future__ import annotations

import orjson
from aiohttp import web

from gateway import keys
from gateway.chat_request import ChatRequest, parse_chat_request


async def chat_completions(request: web.Request) -> web.StreamResponse:
    proxy = request.app[keys.PROXY]
    affinity = proxy.affinity is not None

    def parse(raw: bytes, request: web.Request) -> ChatRequest:
        return parse_chat_request(raw, deployment=request.match_info.get("deployment"), affinity=affinity)

    return await proxy.serve(request, request[keys.REQUEST_ID], parse)


async def list_models(request: web.Request) -> web.Response:
    listing = await request.app[keys.MODELS_CATALOG].listing()
    return web.Response(body=orjson.dumps(listing), content_type="application/json")


async def healthz(request: web.Request) -> web.Response:
    return web.Response(body=b'{"status":"ok"}', content_type="application/json")


async def readyz(request: web.Request) -> web.Response:
    ready, backends = await request.app[keys.READINESS].report()
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


__all__ = ["chat_completions", "healthz", "list_models", "metrics", "no_route", "readyz"]
