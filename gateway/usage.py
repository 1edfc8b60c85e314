"""Token usage as upstreams report it, read without slowing the pass-through.

Non-streamed answers carry ``usage`` in the body. Streams carry it in one late chunk (when the client asked for
``stream_options.include_usage``, or always with llama.cpp's server); the sniffer looks for it cheaply and only
parses the SSE line that contains it.

How much of the prompt the backend found in its cache (``cached_tokens``): OpenAI-style in
``usage.prompt_tokens_details.cached_tokens`` (llama-server, Azure OpenAI's prompt caching), or in llama-server's
``timings`` (``cache_n`` reused, ``prompt_n`` evaluated), which is all a llama-server stream carries when the
client did not ask for usage. That share is what conversation affinity is for, measured rather than assumed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TypeGuard

import orjson

# Searched with ``find``, never ``in``: ``needle in some_bytes`` first tries the needle as an integer and builds a
# TypeError message (CPython's bytes_contains), which costs more than the search itself on every answer.
_MARKER = b'"usage"'
_TIMINGS = b'"timings"'
_MAX_TAIL = 64 * 1024


@dataclass(slots=True)
class Usage:
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_tokens: int | None = None  # prompt tokens not evaluated again (found cached); None: not reported

    @property
    def prompt_reuse(self) -> float | None:
        """The share of the prompt the backend found in its cache, when it says."""
        if self.cached_tokens is None or self.prompt_tokens <= 0:
            return None
        return min(1.0, self.cached_tokens / self.prompt_tokens)


def usage_from_body(body: bytes) -> Usage | None:
    """The counts in the answer's ``usage`` object, parsing only that object when it is flat (it is on the hot
    path: the whole answer is parsed only when ``usage`` nests details, as newer APIs' does, or when llama-server
    ``timings`` come with it)."""
    start = body.rfind(_MARKER)
    # llama-server writes its timings after the usage: only that end of the answer is searched for them (the
    # whole of it, when there is no usage), not every byte of the text before.
    timings = body.find(_TIMINGS, max(start, 0)) >= 0
    if start < 0 and not timings:
        return None
    opening = body.find(b"{", start)
    closing = body.find(b"}", opening)
    if (opening < 0 or closing < 0) and not timings:
        return None
    try:
        if not timings and body.find(b"{", opening + 1, closing) < 0:
            return _usage_from_mapping(orjson.loads(body[opening : closing + 1]))
        return _usage_from_object(orjson.loads(body))
    except orjson.JSONDecodeError:
        return None


def _usage_from_object(payload: object) -> Usage | None:
    if not isinstance(payload, dict):
        return None
    found = payload.get("usage")
    if found is None and isinstance(payload.get("response"), dict):
        found = payload["response"].get("usage")  # a Responses stream's response.completed event
    usage = _usage_from_mapping(found)
    timings = payload.get("timings")
    if not isinstance(timings, dict):
        return usage
    cache_n, prompt_n, predicted_n = (timings.get(k) for k in ("cache_n", "prompt_n", "predicted_n"))
    if not (_is_count(cache_n) and _is_count(prompt_n)):
        return usage
    if usage is None:
        return Usage(cache_n + prompt_n, predicted_n if _is_count(predicted_n) else 0, cache_n)
    if usage.cached_tokens is None:
        usage.cached_tokens = cache_n
    return usage


def _usage_from_mapping(usage: object) -> Usage | None:
    if not isinstance(usage, dict):
        return None
    prompt = usage.get("prompt_tokens")
    if prompt is None:
        prompt = usage.get("input_tokens")  # the Responses API counts input/output
    completion = usage.get("completion_tokens")
    if completion is None:
        completion = usage.get("output_tokens")
        if completion is None and "total_tokens" in usage:
            completion = 0  # embeddings: prompt and total only
    if not isinstance(prompt, int) or not isinstance(completion, int):
        return None
    details = usage.get("prompt_tokens_details")
    if details is None:  # (most answers: no details, and no call below)
        return Usage(prompt, completion)
    cached = details.get("cached_tokens") if isinstance(details, dict) else None
    return Usage(prompt, completion, cached if _is_count(cached) else None)


def _is_count(value: object) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


class StreamUsageSniffer:
    """Feed it the SSE bytes as they pass; ``usage`` holds the last usage seen."""

    __slots__ = ("_tail", "usage")

    def __init__(self) -> None:
        self.usage: Usage | None = None
        self._tail = b""

    def feed(self, chunk: bytes) -> None:
        data = self._tail + chunk if self._tail else chunk
        if data.find(_MARKER) < 0 and data.find(_TIMINGS) < 0:
            newline = data.rfind(b"\n")
            self._tail = data[newline + 1 :] if newline >= 0 else data[-_MAX_TAIL:]
            return
        *lines, self._tail = data.split(b"\n")
        self._tail = self._tail[-_MAX_TAIL:]
        for line in lines:
            if line.startswith(b"data:") and (line.find(_MARKER) >= 0 or line.find(_TIMINGS) >= 0):
                try:
                    found = _usage_from_object(orjson.loads(line[5:]))
                except orjson.JSONDecodeError:
                    continue
                if found is not None:
                    self.usage = found
