"""Limits on cost: how many sends and new chats a browser session and a client address may make per window.

Each send is a model call and each chat a database row; without limits one script (or one person with a
fresh cookie per request) could spend both without end. A sliding window per key: at most `limit` events in
any `window` seconds. Time is injected (`now`), so tests move a clock instead of sleeping.

Counts live in this process. With several replicas each counts on its own, so the effective limit is
`limit` times the number of replicas; good enough to stop a storm, not a billing system.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from aiohttp import web

# Keys whose windows are empty are forgotten once there are this many, so memory stays bounded.
SWEEP_AT = 10_000


class SlidingWindow:
    def __init__(self, limit: int, window: float) -> None:
        self.limit = limit
        self.window = window
        self._events: dict[str, deque[float]] = {}

    def wait(self, key: str, now: float) -> float:
        """Seconds until `key` may act again; 0 when it may act now."""
        events = self._events.get(key)
        if not events:
            return 0.0
        while events and events[0] <= now - self.window:
            events.popleft()
        if len(events) < self.limit:
            return 0.0
        return events[0] + self.window - now

    def record(self, key: str, now: float) -> None:
        if len(self._events) >= SWEEP_AT:
            self._events = {k: v for k, v in self._events.items() if v and v[-1] > now - self.window}
        self._events.setdefault(key, deque()).append(now)


@dataclass(frozen=True)
class Limit:
    """One action (send, new chat) limited per session and per client address."""

    what: str  # for the message: "messages", "new chats"
    per_session: SlidingWindow
    per_address: SlidingWindow

    def check(self, session_id: str, address: str, now: float) -> float:
        """Count the action and return 0, or return the seconds to wait (nothing counted)."""
        wait = max(self.per_session.wait(session_id, now), self.per_address.wait(address, now))
        if wait > 0:
            return wait
        self.per_session.record(session_id, now)
        self.per_address.record(address, now)
        return 0.0


@dataclass(frozen=True)
class Limits:
    sends: Limit
    chats: Limit
    clock: Callable[[], float]


def client_address(request: web.Request, trusted_hops: int) -> str:
    """The client's address: the socket's peer, or, behind `trusted_hops` proxies, the address the outermost
    trusted proxy saw (the `trusted_hops`-th entry from the right of X-Forwarded-For).

    Entries further left are written by the client itself and could be anything, so they are never used.
    """
    peer = request.remote or "unknown"
    if trusted_hops == 0:
        return peer
    chain = [part.strip() for part in request.headers.get("X-Forwarded-For", "").split(",") if part.strip()]
    if len(chain) < trusted_hops:
        return chain[0] if chain else peer
    return chain[-trusted_hops]


def retry_after_seconds(wait: float) -> int:
    return max(1, math.ceil(wait))
