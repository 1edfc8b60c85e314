"""Conversation affinity: send the next turn of a chat to the backend that already holds its prefix.

On a CPU, processing the prompt — the whole chat history, every turn — dominates latency, and llama.cpp keeps
the KV cache of what it saw (llama-cpp-python also keeps a RAM cache of several conversations). A conversation
is identified by its opening: every message up to and including the first user message. Later turns repeat
that opening verbatim, so they hash to the same key wherever they come from, with no cookie or session id.

The table only remembers where a conversation went last; the balancer decides whether to honour it (the
backend must be healthy, and not so much busier than the others that waiting costs more than re-reading).
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from typing import Protocol

import orjson


def conversation_key(model: str | None, messages: list[object]) -> bytes | None:
    """A short stable hash of the conversation's opening, or None when there is no user message yet."""
    for index, message in enumerate(messages):
        if isinstance(message, dict) and message.get("role") == "user":
            opening = orjson.dumps([model, messages[: index + 1]], option=orjson.OPT_SORT_KEYS)
            return hashlib.blake2b(opening, digest_size=12).digest()
    return None


class AffinityStore(Protocol):
    """Where conversations went last: this process's table, or a shared one across replicas."""

    def preferred(self, key: bytes) -> str | None: ...

    def remember(self, key: bytes, backend: str) -> None: ...


class AffinityTable:
    """conversation key → backend name, least recently used evicted past ``capacity``."""

    def __init__(self, capacity: int = 10_000) -> None:
        self._capacity = capacity
        self._entries: OrderedDict[bytes, str] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def preferred(self, key: bytes) -> str | None:
        backend = self._entries.get(key)
        if backend is not None:
            self._entries.move_to_end(key)
        return backend

    def remember(self, key: bytes, backend: str) -> None:
        self._entries[key] = backend
        self._entries.move_to_end(key)
        if len(self._entries) > self._capacity:
            self._entries.popitem(last=False)

