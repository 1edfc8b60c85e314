"""POST .../completions: the legacy text completions API, streamed or not, scripted like chat."""

from __future__ import annotations

import itertools
import time
from typing import Any

import orjson
from aiohttp import web

from .chat import open_request, play_turn, send, send_events
from .responses import error_response
from .streaming import DONE, sse, token_pieces
from .tokens import completion_tokens, max_tokens_of

_ids = itertools.count(1)


def _prompt_chars(prompt: object) -> int | None:
    if isinstance(prompt, str):
        return len(prompt)
    if isinstance(prompt, list) and prompt:
        if all(isinstance(p, str) for p in prompt):
            return sum(len(p) for p in prompt)
        if all(isinstance(p, int) for p in prompt):
            return 4 * len(prompt)
        if all(isinstance(p, list) for p in prompt):
            return 4 * sum(len(p) for p in prompt)
    return None


async def completions(request: web.Request) -> web.StreamResponse:
    opened = await open_request(request)
    if isinstance(opened, web.StreamResponse):
        return opened
    upstream, record, body = opened
    chars = _prompt_chars(body.get("prompt"))
    if chars is None:
        return error_response(400, "'prompt' must be a string, an array of strings, or token arrays.",
                              "invalid_request_error", "invalid_value", param="prompt")
    record.stream = body.get("stream") is True
    tokens, finish_reason = completion_tokens(upstream.reply_text, max_tokens_of(body))
    prompt_tokens = max(1, (chars + 3) // 4)
    played = await play_turn(request, upstream, record, prompt_tokens + len(tokens))
    if isinstance(played, web.StreamResponse):
        return played
    reply, headers = played
    model = body["model"] if isinstance(body.get("model"), str) else upstream.model
    head = {"id": f"cmpl-fake-{upstream.name}-{next(_ids)}", "object": "text_completion",
            "created": int(time.time()), "model": model}
    usage = {"prompt_tokens": prompt_tokens, "completion_tokens": len(tokens),
             "total_tokens": prompt_tokens + len(tokens)}

    def choice(text: str, finish: str | None) -> list[dict[str, Any]]:
        return [{"text": text, "index": 0, "logprobs": None, "finish_reason": finish}]

    if not record.stream:
        payload = {**head, "choices": choice(" ".join(tokens), finish_reason), "usage": usage}
        return await send(request, record, reply, 200, headers, orjson.dumps(payload), "application/json")
    pieces = token_pieces(tokens)
    events = [sse({**head, "choices": choice(piece, None)}) for piece in pieces]
    events.append(sse({**head, "choices": choice("", finish_reason)}))
    options = body.get("stream_options")
    if isinstance(options, dict) and options.get("include_usage") is True:
        events.append(sse({**head, "choices": [], "usage": usage}))
    events.append(DONE)
    return await send_events(request, record, reply, headers, events, timed=max(1, len(pieces)),
                             token_delay=upstream.token_delay)
