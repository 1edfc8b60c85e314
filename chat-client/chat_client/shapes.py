"""How chats and messages look as JSON (the API, server-sent events, live updates)."""

from __future__ import annotations

from datetime import UTC, datetime

from chat_client.markdown import render_markdown
from chat_client.models import Chat, Message


def iso(moment: datetime) -> str:
    # SQLite hands back naive datetimes; every stored time is UTC.
    return (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).isoformat()


def chat_json(chat: Chat) -> dict[str, object]:
    return {
        "id": str(chat.id),
        "title": chat.title,
        "url": f"/chats/{chat.id}",
        "created_at": iso(chat.created_at),
        "updated_at": iso(chat.updated_at),
    }


def message_json(message: Message) -> dict[str, object]:
    return {
        "id": message.id,
        "role": message.role,
        "content": message.content,
        # An answer as sanitised HTML (see markdown.py); a person's own words are shown as typed.
        "html": render_markdown(message.content) if message.role == "assistant" else None,
        "position": message.position,
        "complete": message.complete,
        "stopped": bool(message.stopped),
        "created_at": iso(message.created_at),
    }
