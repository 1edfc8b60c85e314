"""Token usage as upstreams report it, read without slowing the pass-through.

Non-streamed answers carry ``usage`` in the body. Streams carry it in one late chunk (when the client asked for
``stream_options.include_usage``, or always with llama.cpp's server); the sniffer looks for it cheaply and only
parses the SSE line that contains it.
"""

from __future__ import annotations

from dataclasses import dataclass

import orjson

_MARKER = b'"usage"'
_MAX_TAIL = 64 * 1024


@dataclass(slots=True)
class Usage:
    prompt_tokens: int = 0
    completion_tokens: int = 0


def usage_from_body(body: bytes) -> Usage | None:
    """The counts in the answer's ``usage`` object, parsing only that object when it is flat (it is on the hot
    path: the whole answer is parsed only when ``usage`` nests details, as newer APIs' does)."""
    start = body.rfind(_MARKER)
    if start < 0:
        return None
    opening = body.find(b"{", start)
    closing = body.find(b"}", opening)
    if opening < 0 or closing < 0:
        return None
    try:
        if body.find(b"{", opening + 1, closing) < 0:
            return _usage_from_mapping(orjson.loads(body[opening : closing + 1]))
        return _usage_from_object(orjson.loads(body))
    except orjson.JSONDecodeError:
        return None


def _usage_from_object(payload: object) -> Usage | None:
    if not isinstance(payload, dict):
        return None
    return _usage_from_mapping(payload.get("usage"))


def _usage_from_mapping(usage: object) -> Usage | None:
    if not isinstance(usage, dict):
        return None
    prompt, completion = usage.get("prompt_tokens"), usage.get("completion_tokens")
    if not isinstance(prompt, int) or not isinstance(completion, int):
        return None
    return Usage(prompt, completion)


class StreamUsageSniffer:
    """Feed it the SSE bytes as they pass; ``usage`` holds the last usage seen."""

    __slots__ = ("_tail", "usage")

    def __init__(self) -> None:
        self.usage: Usage | None = None
        self._tail = b""

    def feed(self, chunk: bytes) -> None:
        data = self._tail + chunk if self._tail else chunk
        if _MARKER not in data:
            newline = data.rfind(b"\n")
            self._tail = data[newline + 1 :] if newline >= 0 else data[-_MAX_TAIL:]
            return
        *lines, self._tail = data.split(b"\n")
        self._tail = self._tail[-_MAX_TAIL:]
        for line in lines:
            if line.startswith(b"data:") and _MARKER in line:
                try:
                    found = _usage_from_object(orjson.loads(line[5:]))
                except orjson.JSONDecodeError:
                    continue
                if found is not None:
                    self.usage = found
