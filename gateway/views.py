"""HTTP handlers. Each reads what it needs from the app and hands real work to the module that owns it."""

from __future__ import annotations

import orjson
from aiohttp import web

from gateway import keys
from gateway.affinity import conversation_key
from gateway.chat_request import ChatRequest, parse_chat_request
from gateway.completions_request import CompletionsRequest, parse_completions_request
from gateway.embeddings_request import EmbeddingsRequest, parse_embeddings_request
from gateway.errors import ModelNotFound
from gateway.responses import parse_responses_request
from gateway.responses.translation import ResponsesCall


async def chat_completions(request: web.Request, request_id: str) -> web.StreamResponse:
    return await request.app[keys.PROXY].serve(request, request_id, _parse_chat)


async def responses(request: web.Request, request_id: str) -> web.StreamResponse:
    return await request.app[keys.PROXY].serve(request, request_id, _parse_responses)


async def embeddings(request: web.Request, request_id: str) -> web.StreamResponse:
    return await request.app[keys.PROXY].serve(request, request_id, _parse_embeddings)


async def completions(request: web.Request, request_id: str) -> web.StreamResponse:
    return await request.app[keys.PROXY].serve(request, request_id, _parse_completions)


# The endpoints' parsers (gateway.proxy.Parse): module functions, not closures made on every request.


def _parse_chat(raw: bytes, request: web.Request, affinity: bool) -> ChatRequest:
    return parse_chat_request(raw, deployment=request.match_info.get("deployment"), affinity=affinity)


def _parse_responses(raw: bytes, request: web.Request, affinity: bool) -> ResponsesCall:
    parsed = parse_responses_request(raw, deployment=request.match_info.get("deployment"))
    key = conversation_key(parsed.model, parsed.messages) if affinity and parsed.messages else None
    return ResponsesCall(parsed, request.app[keys.RESPONSE_OWNERS], key)


def _parse_embeddings(raw: bytes, request: web.Request, affinity: bool) -> EmbeddingsRequest:
    return parse_embeddings_request(raw, deployment=request.match_info.get("deployment"))


def _parse_completions(raw: bytes, request: web.Request, affinity: bool) -> CompletionsRequest:
    return parse_completions_request(raw, deployment=request.match_info.get("deployment"))


async def list_models(request: web.Request, request_id: str) -> web.Response:
    listing = await request.app[keys.MODELS_CATALOG].listing()
    return web.Response(body=orjson.dumps(listing), content_type="application/json")


async def retrieve_model(request: web.Request, request_id: str) -> web.Response:
    wanted = request.match_info["model"]
    listing = await request.app[keys.MODELS_CATALOG].listing()
    for model in listing["data"]:
        if model["id"] == wanted:
            return web.Response(body=orjson.dumps(model), content_type="application/json")
    raise ModelNotFound(f"The model {wanted!r} does not exist or no backend serves it.")


async def healthz(request: web.Request, request_id: str) -> web.Response:
    return web.Response(body=b'{"status":"ok"}', content_type="application/json")


async def readyz(request: web.Request, request_id: str) -> web.Response:
    drain = request.app[keys.DRAIN]
    if drain.draining:  # stopping: a load balancer should send no more
        return _draining()
    ready, backends = await request.app[keys.READINESS].report()
    if drain.draining:  # the signal came while the backends were being asked
        return _draining()
    body = orjson.dumps({"status": "ready" if ready else "unavailable", "backends": backends})
    return web.Response(status=200 if ready else 503, body=body, content_type="application/json")


def _draining() -> web.Response:
    return web.Response(status=503, body=b'{"status":"draining"}', content_type="application/json")


async def metrics(request: web.Request, request_id: str) -> web.Response:
    # Rendering walks every series; off the event loop's hot path is not needed at this size.
    body = request.app[keys.METRICS].render()
    return web.Response(body=body, headers={"Content-Type": "text/plain; version=0.0.4; charset=utf-8"})


async def no_route(request: web.Request, request_id: str) -> web.Response:
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


__all__ = [
    "chat_completions", "completions", "embeddings", "healthz", "list_models", "metrics", "no_route", "readyz",
    "responses", "retrieve_model",
]
