"""POST .../chat/completions: validate like the real services, then play the next scripted Reply."""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING, Any

import orjson
from aiohttp import web

from .errors import error_for_status
from .keys import RECORD, RENDERER, UPSTREAM
from .llama_server import prompt_text, timings
from .recording import RecordedRequest
from .responses import authorized, error_response, invalid_api_key
from .script import Reply, token_budget_exceeded
from .streaming import stream_events
from .tokens import completion_tokens, estimate_prompt_tokens, max_tokens_of

if TYPE_CHECKING:
    from .upstream import FakeUpstream


async def chat_completions(request: web.Request) -> web.StreamResponse:
    upstream = request.app[UPSTREAM]
    record = request[RECORD]
    if not authorized(request, upstream.api_key):
        return invalid_api_key()

    deployment = request.match_info.get("deployment")
    if deployment is not None:
        record.deployment = deployment
        # Azure answers a missing api-version with a bare 404, not with a validation error.
        if "api-version" not in request.query:
            return error_response(404, "Resource not found", "invalid_request_error", "404")
        if upstream.deployment is not None and deployment != upstream.deployment:
            return error_response(
                404,
                "The API deployment for this resource does not exist.",
                "invalid_request_error",
                "DeploymentNotFound",
            )

    try:
        body = orjson.loads(await request.read())
    except orjson.JSONDecodeError:
        return error_response(400, "We could not parse the JSON body of your request.",
                              "invalid_request_error", None)
    if not isinstance(body, dict):
        return error_response(400, "The request body must be a JSON object.", "invalid_request_error", None)
    record.json = body
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        return error_response(400, "Missing required parameter: 'messages'.", "invalid_request_error",
                              "missing_required_parameter", param="messages")
    record.stream = body.get("stream") is True

    tokens, finish_reason = completion_tokens(upstream.reply_text, max_tokens_of(body))
    prompt_tokens = estimate_prompt_tokens(messages)
    reply, headers = _choose_reply(upstream, prompt_tokens + len(tokens))

    pause = upstream.latency + reply.delay
    if pause > 0:
        await asyncio.sleep(pause)

    if reply.drop_connection:
        _abort(request, record)
        # Never written: the socket is gone. aiohttp notices that quietly.
        return web.Response()
    headers.update(reply.headers)
    if not reply.is_normal_completion:
        return await _scripted(request, record, reply, headers)

    renderer = request.app[RENDERER]
    completion_id, created = renderer.next_id(), int(time.time())
    model = body["model"] if isinstance(body.get("model"), str) else upstream.model
    usage: dict[str, Any] = {"prompt_tokens": prompt_tokens, "completion_tokens": len(tokens),
                             "total_tokens": prompt_tokens + len(tokens)}
    llama_fields = _llama_server_fields(upstream, messages, prompt_tokens, tokens, usage)
    if record.stream:
        options = body.get("stream_options")
        include_usage = isinstance(options, dict) and options.get("include_usage") is True
        events = stream_events(completion_id=completion_id, created=created, model=model, tokens=tokens,
                               finish_reason=finish_reason, usage=usage if include_usage else None,
                               last_extra=llama_fields)
        return await _stream(request, record, reply, headers, events, timed=max(1, len(tokens)),
                             token_delay=upstream.token_delay)
    payload = renderer.render(completion_id=completion_id, created=created, model=model,
                              text=" ".join(tokens), finish_reason=finish_reason,
                              prompt_tokens=prompt_tokens, completion_tokens=len(tokens))
    if llama_fields is not None:
        payload = orjson.dumps({**orjson.loads(payload), "usage": usage, **llama_fields})
    return await _send(request, record, reply, 200, headers, payload, "application/json")


def _llama_server_fields(upstream: FakeUpstream, messages: list[Any], prompt_tokens: int, tokens: list[str],
                         usage: dict[str, Any]) -> dict[str, Any] | None:
    """As llama-server: how much of the prompt its cache held (`timings`, and `cached_tokens` in `usage`)."""
    if not upstream.llama_server:
        return None
    prompt = prompt_text(messages)
    cache_n = upstream.prompt_cache.reused_tokens(prompt, prompt_tokens)
    upstream.prompt_cache.remember(prompt, " ".join(tokens))
    usage["prompt_tokens_details"] = {"cached_tokens": cache_n}
    return {"timings": timings(cache_n, prompt_tokens, len(tokens))}


def _choose_reply(upstream: FakeUpstream, cost: int) -> tuple[Reply, dict[str, str]]:
    """The TPM budget is checked first, like Azure's front door: a throttled request consumes no script."""
    budget = upstream.token_budget()
    if budget is None:
        return upstream.next_reply(), {}
    now = upstream.clock()
    wait = budget.wait_time(now, cost)
    if wait > 0:
        return token_budget_exceeded(wait, budget.remaining(now)), {}
    reply = upstream.next_reply()
    if reply.is_normal_completion:
        budget.spend(now, cost)
    return reply, {"x-ratelimit-remaining-tokens": str(budget.remaining(now))}


async def _scripted(request: web.Request, record: RecordedRequest, reply: Reply,
                    headers: dict[str, str]) -> web.StreamResponse:
    body = error_for_status(reply.status) if reply.body is None else reply.body
    if isinstance(body, str):
        content_type = "text/plain; charset=utf-8"
        payload = body.encode()
    else:
        content_type = "application/json"
        payload = orjson.dumps(body)
    return await _send(request, record, reply, reply.status, headers, payload, content_type)


async def _send(request: web.Request, record: RecordedRequest, reply: Reply, status: int,
                headers: dict[str, str], payload: bytes, content_type: str) -> web.StreamResponse:
    if not any(name.lower() == "content-type" for name in headers):
        headers["Content-Type"] = content_type
    if reply.fail_after_chunks is None:
        return web.Response(body=payload, status=status, headers=headers)
    # Headers and half of the body, then the connection dies: a truncated response.
    response = web.StreamResponse(status=status, headers=headers)
    response.content_length = len(payload)
    record.status = status
    try:
        await response.prepare(request)
        await response.write(payload[: len(payload) // 2])
    except ConnectionError:
        record.cancelled = True
        return response
    _abort(request, record)
    return response


async def _stream(request: web.Request, record: RecordedRequest, reply: Reply, headers: dict[str, str],
                  events: list[bytes], *, timed: int, token_delay: float) -> web.StreamResponse:
    """Write SSE events one by one; `timed` events after the first are each preceded by `token_delay`."""
    headers.update({"Content-Type": "text/event-stream; charset=utf-8", "Cache-Control": "no-cache"})
    response = web.StreamResponse(status=200, headers=headers)
    record.status = 200
    try:
        await response.prepare(request)
        for index, event in enumerate(events):
            if reply.fail_after_chunks is not None and index >= reply.fail_after_chunks:
                _abort(request, record)
                return response
            if token_delay > 0 and 0 < index <= timed:
                await asyncio.sleep(token_delay)
            await response.write(event)
            record.chunks_sent += 1
        await response.write_eof()
    except ConnectionError:
        # A write failed: the client went away mid-stream.
        record.cancelled = True
        return response
    record.completed = True
    return response


def _abort(request: web.Request, record: RecordedRequest) -> None:
    record.dropped = True
    if request.transport is not None:
        request.transport.abort()
