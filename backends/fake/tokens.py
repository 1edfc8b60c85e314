"""Token accounting good enough for a fake: words out, characters/4 in."""

from __future__ import annotations

import itertools
import math
from typing import Any

DEFAULT_REPLY_TEXT = "Hello! I am a fake upstream, answering your request with a short reply."

_FILLER = [
    "the", "quick", "brown", "fox", "jumps", "over", "the", "lazy", "dog",
    "while", "a", "fake", "model", "keeps", "talking",
]


def reply_text_of_length(n: int) -> str:
    """A reply of exactly `n` whitespace-separated tokens (for benchmarks that need a given length)."""
    return " ".join(itertools.islice(itertools.cycle(_FILLER), n))


def completion_tokens(reply_text: str, max_tokens: int | None) -> tuple[list[str], str]:
    """The tokens to send and the finish_reason: "length" when `max_tokens` cut the reply short."""
    tokens = reply_text.split()
    if max_tokens is not None and max_tokens < len(tokens):
        return tokens[:max_tokens], "length"
    return tokens, "stop"


def max_tokens_of(body: dict[str, Any]) -> int | None:
    # Newer clients send max_completion_tokens; max_tokens is the older name of the same cap.
    for key in ("max_completion_tokens", "max_tokens"):
        value = body.get(key)
        if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
            return value
    return None


def estimate_prompt_tokens(messages: list[Any]) -> int:
    """About one token per four characters of message text, like the usual rule of thumb."""
    chars = 0
    for message in messages:
        if not isinstance(message, dict):
            continue
        content = message.get("content")
        if isinstance(content, str):
            chars += len(content)
        elif isinstance(content, list):
            # Multi-part content: only text parts count.
            chars += sum(len(p.get("text", "")) for p in content if isinstance(p, dict))
    return max(1, math.ceil(chars / 4))
