"""Live updates of a chat: what happens in it, for every tab that has it open.

The reply writer and the handlers publish events here; `GET /api/chats/{id}/live` relays them to each open
tab as server-sent events. A reply still being written after a reload, or a message sent from another tab,
so appears without a manual reload.

Events carry the id of the tab that caused them (`origin`), so a tab is not told about its own send, which
it already shows from its own stream. A subscriber that falls behind by QUEUE_LIMIT events is dropped with
an `overflow` marker (its page reloads); a slow tab never holds up a reply.

In-process: with several replicas, a tab sees live what its own replica does (and the rest on reload).
"""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import dataclass

QUEUE_LIMIT = 1000


@dataclass(frozen=True)
class LiveEvent:
    name: str  # user, reply, token, message, failed, renamed, deleted, overflow
    data: dict[str, object]
    origin: str | None = None  # the tab that caused it


class ChatFeed:
    def __init__(self) -> None:
        self._subscribers: dict[uuid.UUID, set[asyncio.Queue[LiveEvent | None]]] = {}

    def subscribe(self, chat_id: uuid.UUID) -> asyncio.Queue[LiveEvent | None]:
        queue: asyncio.Queue[LiveEvent | None] = asyncio.Queue(QUEUE_LIMIT)
        self._subscribers.setdefault(chat_id, set()).add(queue)
        return queue

    def unsubscribe(self, chat_id: uuid.UUID, queue: asyncio.Queue[LiveEvent | None]) -> None:
        queues = self._subscribers.get(chat_id)
        if queues is not None:
            queues.discard(queue)
            if not queues:
                del self._subscribers[chat_id]

    def publish(self, chat_id: uuid.UUID, event: LiveEvent) -> None:
        for queue in list(self._subscribers.get(chat_id, ())):
            if queue.qsize() >= QUEUE_LIMIT - 1:
                queue.put_nowait(LiveEvent("overflow", {}))
                self.unsubscribe(chat_id, queue)
            else:
                queue.put_nowait(event)

    def close(self) -> None:
        """The app is stopping: end every live stream (None ends a subscriber's loop)."""
        for queues in self._subscribers.values():
            for queue in queues:
                if queue.full():
                    queue.get_nowait()
                queue.put_nowait(None)
        self._subscribers.clear()
