"""Server-sent events of a streamed chat completion, shaped like OpenAI's.

One `chat.completion.chunk` per token (the first also carries the role), a chunk with the
finish_reason, an optional usage chunk, then `data: [DONE]`.
"""

from __future__ import annotations

from typing import Any

import orjson

DONE = b"data: [DONE]\n\n"


def sse(payload: dict[str, Any]) -> bytes:
    return b"data: " + orjson.dumps(payload) + b"\n\n"


def token_pieces(tokens: list[str]) -> list[str]:
    # Leading spaces on all but the first piece, so that concatenating the deltas gives the text back.
    return [token if i == 0 else " " + token for i, token in enumerate(tokens)]


def stream_events(
    *,
    completion_id: str,
    created: int,
    model: str,
    tokens: list[str],
    finish_reason: str,
    usage: dict[str, Any] | None,
    last_extra: dict[str, Any] | None = None,
) -> list[bytes]:
    """All events of one stream, in order. `usage` is None unless the client asked for it; `last_extra`
    is merged into the last event before [DONE] (llama-server puts its `timings` there)."""

    def chunk(delta: dict[str, Any], finish: str | None, extra: dict[str, Any] | None = None) -> bytes:
        return sse(
            {
                "id": completion_id,
                "object": "chat.completion.chunk",
                "created": created,
                "model": model,
                "system_fingerprint": None,
                "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}],
                **(extra or {}),
            }
        )

    # An empty reply still announces the assistant's role, as the real service does.
    pieces = token_pieces(tokens) or [""]
    events = [chunk({"role": "assistant", "content": pieces[0]}, None)]
    events += [chunk({"content": piece}, None) for piece in pieces[1:]]
    events.append(chunk({}, finish_reason, None if usage is not None else last_extra))
    if usage is not None:
        events.append(
            sse(
                {
                    "id": completion_id,
                    "object": "chat.completion.chunk",
                    "created": created,
                    "model": model,
                    "system_fingerprint": None,
                    "choices": [],
                    "usage": usage,
                    **(last_extra or {}),
                }
            )
        )
    events.append(DONE)
    return events
