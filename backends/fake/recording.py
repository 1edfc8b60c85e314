"""What the fake saw: one record per request, plus counters that survive trimming of the records."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any


@dataclass
class RecordedRequest:
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]  # names lower-cased
    arrived_at: float  # by the upstream's clock
    kind: str  # "chat", "responses", "embeddings", "completions", "models", "health" or "other" (unknown path)
    json: Any = None  # the parsed body of an API request
    deployment: str | None = None  # Azure-style paths only
    stream: bool = False
    status: int | None = None  # None: no HTTP response was sent (dropped connection)
    chunks_sent: int = 0  # SSE events written
    completed: bool = False  # the whole response was handed to the socket
    cancelled: bool = False  # the client went away before the response was complete
    dropped: bool = False  # the fake itself cut the connection (drop_connection / fail_after_chunks)
    finished_at: float | None = None


@dataclass
class ChatStats:
    """Counters over chat completion requests, kept apart from the (possibly trimmed) records."""

    chat_requests: int = 0
    by_status: Counter[int] = field(default_factory=Counter)
    completed: int = 0
    cancelled: int = 0
    dropped: int = 0

    def arrived(self) -> None:
        self.chat_requests += 1

    def finished(self, record: RecordedRequest) -> None:
        if record.status is not None:
            self.by_status[record.status] += 1
        self.completed += record.completed
        self.cancelled += record.cancelled
        self.dropped += record.dropped

    def to_json(self) -> dict[str, Any]:
        return {
            "chat_requests": self.chat_requests,
            "by_status": {str(status): n for status, n in sorted(self.by_status.items())},
            "completed": self.completed,
            "cancelled": self.cancelled,
            "dropped": self.dropped,
        }
