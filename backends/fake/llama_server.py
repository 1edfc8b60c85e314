"""The fake posing as llama.cpp's own server (llama-server): what a gateway reads from one.

- GET /props: `total_slots` (its `--parallel`), 503 while "loading" like /health;
- GET /slots: one entry per slot, `is_processing` for the ones answering now;
- GET /metrics: `llamacpp:requests_processing` and `llamacpp:requests_deferred` (Prometheus text);
- every completion carries `timings` (`cache_n`: prompt tokens reused from a slot's cache, `prompt_n`:
  tokens evaluated) and `usage.prompt_tokens_details.cached_tokens`, computed by `PromptCache`, which
  remembers the last conversations like llama-server's slots do: a follow-up turn sent to the same fake
  reuses its history, the same turn sent to another fake reuses nothing.

These paths answer 404 unless the fake was made with `llama_server=True`, as an OpenAI upstream would.
"""

from __future__ import annotations

import os
from collections import deque
from typing import TYPE_CHECKING, Any

from aiohttp import web

from .errors import error_for_status, loading_model_body
from .keys import UPSTREAM
from .responses import json_response

if TYPE_CHECKING:
    from .upstream import FakeUpstream


class PromptCache:
    """The texts of the last `size` conversations served (prompt and reply), as a slot's KV cache holds them."""

    def __init__(self, size: int) -> None:
        self._texts: deque[str] = deque(maxlen=max(1, size))

    def reused_tokens(self, prompt: str, prompt_tokens: int) -> int:
        """Tokens (characters/4, as the fake counts) of the longest cached prefix of `prompt`.

        Never all of them: llama.cpp always evaluates at least the last prompt token again.
        """
        longest = max((len(os.path.commonprefix((prompt, text))) for text in self._texts), default=0)
        return min(longest // 4, prompt_tokens - 1)

    def remember(self, prompt: str, reply: str) -> None:
        self._texts.append(prompt + reply)


def prompt_text(messages: list[Any]) -> str:
    """The conversation as one string, the way a chat template lays it out: one turn after another."""
    parts = []
    for message in messages:
        if isinstance(message, dict) and isinstance(message.get("content"), str):
            parts.append(f"<{message.get('role')}>{message['content']}")
    return "".join(parts) + "<assistant>"


def timings(cache_n: int, prompt_tokens: int, predicted_n: int) -> dict[str, Any]:
    return {"cache_n": cache_n, "prompt_n": prompt_tokens - cache_n, "prompt_ms": 1.0,
            "predicted_n": predicted_n, "predicted_ms": 1.0}


def _not_here(upstream: FakeUpstream) -> web.Response | None:
    """404 when not posing as llama-server; llama-server's own 503 while loading; else None."""
    if not upstream.llama_server:
        return json_response(error_for_status(404), status=404)
    if upstream.health_status == 503:
        return json_response(loading_model_body(), status=503)
    return None


def _busy(upstream: FakeUpstream) -> tuple[int, int]:
    """(slots processing, requests deferred): chats beyond the slots wait, plus those scripted as waiting."""
    processing = min(upstream.in_flight, upstream.total_slots)
    return processing, upstream.in_flight - processing + upstream.requests_deferred


async def props(request: web.Request) -> web.Response:
    upstream = request.app[UPSTREAM]
    refusal = _not_here(upstream)
    if refusal is not None:
        return refusal
    return json_response({
        "total_slots": upstream.total_slots,
        "model_path": f"/models/{upstream.model}.gguf",
        "default_generation_settings": {"n_ctx": 2048},
        "build_info": "fake",
    })


async def slots(request: web.Request) -> web.Response:
    upstream = request.app[UPSTREAM]
    refusal = _not_here(upstream)
    if refusal is not None:
        return refusal
    processing, _ = _busy(upstream)
    return json_response([{"id": i, "n_ctx": 2048, "is_processing": i < processing}
                          for i in range(upstream.total_slots)])


async def metrics(request: web.Request) -> web.Response:
    upstream = request.app[UPSTREAM]
    refusal = _not_here(upstream)
    if refusal is not None:
        return refusal
    if not upstream.metrics_endpoint:
        return json_response({"error": {"code": 501, "message": "This server does not support metrics endpoint.",
                                        "type": "not_supported_error"}}, status=501)
    processing, deferred = _busy(upstream)
    text = (
        "# HELP llamacpp:requests_processing Number of requests processing.\n"
        "# TYPE llamacpp:requests_processing gauge\n"
        f"llamacpp:requests_processing {processing}\n"
        "# HELP llamacpp:requests_deferred Number of requests deferred.\n"
        "# TYPE llamacpp:requests_deferred gauge\n"
        f"llamacpp:requests_deferred {deferred}\n"
    )
    return web.Response(text=text, content_type="text/plain")
