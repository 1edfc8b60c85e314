"""POST .../responses: the Responses API served natively, scripted like chat completions.

Written apart from the gateway's own translation (``gateway.responses``), so a test that compares the two
compares independent implementations of the same published shapes.
"""

from __future__ import annotations

import itertools
import time
from typing import Any

import orjson
from aiohttp import web

from .chat import open_request, play_turn, send, send_events
from .responses import error_response
from .streaming import token_pieces
from .tokens import completion_tokens

_ids = itertools.count(1)


def _input_text(value: object) -> str | None:
    """All the text of ``input`` (for the token estimate), or None when it is not a valid input."""
    if isinstance(value, str):
        return value
    if not isinstance(value, list) or not value:
        return None
    texts = []
    for item in value:
        if not isinstance(item, dict):
            return None
        content = item.get("content", item.get("output", ""))
        if isinstance(content, str):
            texts.append(content)
        elif isinstance(content, list):
            texts += [part.get("text", "") for part in content if isinstance(part, dict)]
    return "".join(texts)


async def responses(request: web.Request) -> web.StreamResponse:
    opened = await open_request(request)
    if isinstance(opened, web.StreamResponse):
        return opened
    upstream, record, body = opened
    text = _input_text(body.get("input"))
    if text is None:
        return error_response(400, "Invalid 'input': expected a string or an array of input items.",
                              "invalid_request_error", "invalid_value", param="input")
    if body.get("previous_response_id") is not None and not str(body["previous_response_id"]).startswith("resp_"):
        return error_response(404, f"Previous response with id '{body['previous_response_id']}' not found.",
                              "invalid_request_error", "previous_response_not_found", param="previous_response_id")
    record.stream = body.get("stream") is True
    cap = body.get("max_output_tokens")
    tokens, finish_reason = completion_tokens(upstream.reply_text, cap if isinstance(cap, int) else None)
    input_tokens = max(1, (len(text) + 3) // 4)
    played = await play_turn(request, upstream, record, input_tokens + len(tokens))
    if isinstance(played, web.StreamResponse):
        return played
    reply, headers = played

    serial = next(_ids)
    complete = finish_reason == "stop"
    model = body["model"] if isinstance(body.get("model"), str) else upstream.model
    response: dict[str, Any] = {
        "id": f"resp_fake{upstream.name}{serial}", "object": "response", "created_at": int(time.time()),
        "status": "in_progress", "error": None, "incomplete_details": None,
        "instructions": body.get("instructions"), "max_output_tokens": cap, "model": model, "output": [],
        "parallel_tool_calls": True, "previous_response_id": body.get("previous_response_id"),
        "store": body.get("store", True), "temperature": body.get("temperature"), "tool_choice": "auto",
        "tools": body.get("tools") or [], "top_p": body.get("top_p"), "usage": None, "metadata": {},
        "text": {"format": {"type": "text"}},
    }
    item_id = f"msg_fake{upstream.name}{serial}"
    full_text = " ".join(tokens)
    part = {"type": "output_text", "text": full_text, "annotations": [], "logprobs": []}
    item = {"id": item_id, "type": "message", "role": "assistant",
            "status": "completed" if complete else "incomplete", "content": [part]}
    usage = {"input_tokens": input_tokens, "input_tokens_details": {"cached_tokens": 0, "cache_write_tokens": 0},
             "output_tokens": len(tokens), "output_tokens_details": {"reasoning_tokens": 0},
             "total_tokens": input_tokens + len(tokens)}
    final = {**response, "status": "completed" if complete else "incomplete", "output": [item], "usage": usage,
             "incomplete_details": None if complete else {"reason": "max_output_tokens"}}
    if not record.stream:
        return await send(request, record, reply, 200, headers, orjson.dumps(final), "application/json")

    sequence = itertools.count()

    def event(kind: str, **fields: Any) -> bytes:
        payload = {"type": kind, "sequence_number": next(sequence), **fields}
        return b"event: " + kind.encode() + b"\ndata: " + orjson.dumps(payload) + b"\n\n"

    at = {"item_id": item_id, "output_index": 0, "content_index": 0}
    pieces = token_pieces(tokens)
    events = [
        event("response.created", response=response),
        event("response.in_progress", response=response),
        event("response.output_item.added", output_index=0,
              item={**item, "status": "in_progress", "content": []}),
        event("response.content_part.added", part={**part, "text": ""}, **at),
        *(event("response.output_text.delta", delta=piece, logprobs=[], **at) for piece in pieces),
        event("response.output_text.done", text=full_text, logprobs=[], **at),
        event("response.content_part.done", part=part, **at),
        event("response.output_item.done", output_index=0, item=item),
        event("response.completed" if complete else "response.incomplete", response=final),
    ]
    return await send_events(request, record, reply, headers, events, timed=len(pieces),
                             token_delay=upstream.token_delay)
