"""How chats and messages look from outside: JSON shapes, URL parameters and input checks."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from aiohttp import web

from chat_client import keys
from chat_client.errors import ChatError, not_found
from chat_client.models import TITLE_MAX, Chat, Message
from chat_client.ratelimit import client_address, retry_after_seconds
from chat_client.security import Identity, identity
from chat_client.shapes import chat_json, message_json

__all__ = ["chat_json", "message_json"]  # re-exported: handlers import all view helpers from here


async def own_chat_with_messages(request: web.Request) -> tuple[Identity, Chat, Sequence[Message]]:
    """The chat named in the URL with its messages, if it belongs to this session; else a 404, never data."""
    me = await identity(request)
    store = request.app[keys.store_key]
    chat_id = chat_id_param(request)
    chat = await store.get_chat(me.session_id, chat_id)
    messages = await store.list_messages(me.session_id, chat_id)
    if chat is None or messages is None:
        raise not_found()
    return me, chat, messages


def chat_id_param(request: web.Request) -> uuid.UUID:
    try:
        return uuid.UUID(request.match_info["chat_id"])
    except ValueError:
        raise not_found() from None


def message_id_param(request: web.Request) -> int:
    raw = request.match_info["message_id"]
    if not raw.isdigit() or len(raw) > 18:
        raise not_found("Message")
    return int(raw)


async def json_body(request: web.Request) -> dict[str, object]:
    """The request's JSON object; an empty body counts as {}."""
    if not request.can_read_body:
        return {}
    if request.content_type != "application/json":
        raise ChatError(415, "unsupported_media_type", "Send JSON with Content-Type: application/json.")
    try:
        body = await request.json()
    except ValueError:
        raise ChatError(400, "invalid_json", "The request body is not valid JSON.") from None
    if not isinstance(body, dict):
        raise ChatError(400, "invalid_json", "The request body must be a JSON object.")
    return body


def clean_message(raw: object, limit: int) -> str:
    if not isinstance(raw, str):
        raise ChatError(400, "invalid_message", "`content` must be a string.")
    content = raw.replace("\x00", "")  # PostgreSQL text cannot hold NUL.
    if not content.strip():
        raise ChatError(400, "message_empty", "Type a message first.")
    # len() counts code points, and so does the page ([...text].length): an emoji is one character on both.
    if len(content) > limit:
        raise ChatError(
            400,
            "message_too_long",
            f"Your message is {len(content):,} characters long; the limit is {limit:,}. "
            "Shorten it and send again.",
        )
    return content


def enforce_limit(request: web.Request, me: Identity, action: str) -> None:
    """Count one send ("sends") or new chat ("chats"), or refuse it with a 429 that says when to retry."""
    limits = request.app[keys.limits_key]
    limit = limits.sends if action == "sends" else limits.chats
    address = client_address(request, request.app[keys.settings_key].trusted_proxy_hops)
    wait = limit.check(me.session_id, address, limits.clock())
    if wait > 0:
        seconds = retry_after_seconds(wait)
        raise ChatError(
            429,
            "rate_limited",
            f"Too many {limit.what} in a short time. Wait {seconds} s and try again.",
            headers={"Retry-After": str(seconds)},
        )


def tab_id(raw: str | None) -> str | None:
    """The page's random tab id (see live.py); anything else is ignored."""
    if raw and len(raw) <= 64 and raw.replace("-", "").replace("_", "").isalnum() and raw.isascii():
        return raw
    return None


def clean_title(raw: object) -> str:
    if raw is None:
        return ""
    if not isinstance(raw, str):
        raise ChatError(400, "invalid_title", "`title` must be a string.")
    title = " ".join(raw.replace("\x00", "").split())
    if len(title) > TITLE_MAX:
        raise ChatError(400, "title_too_long", f"A chat title can be at most {TITLE_MAX} characters.")
    return title


def chat_limit_error(limit: int) -> ChatError:
    return ChatError(
        409,
        "chat_limit",
        f"You have reached the limit of {limit:,} chats. Delete a chat you no longer need (the ✕ next to "
        "it in the list) to start a new one, or continue one of your existing chats.",
    )


@dataclass(frozen=True)
class Row:
    """One line of a chat page: a stored message, or the empty place of a reply that isn't there."""

    message: Message | None
    placeholder: str | None = None  # "writing" (a reply is being written) or "missing" (it failed)
    retry_for: int | None = None  # the user message a Retry button would answer again
    position: int | None = None  # of the missing reply (live updates find its row by position)


def conversation(messages: Sequence[Message], writing: Callable[[int], bool]) -> list[Row]:
    """The rows of a chat page. `writing(position)` tells whether a reply at that position is in progress."""
    by_position = {message.position: message for message in messages}
    rows: list[Row] = []
    for message in messages:
        if message.role == "assistant" and not message.complete:
            question = by_position.get(message.position - 1)
            retry = question.id if question is not None and not writing(message.position) else None
            rows.append(Row(message, retry_for=retry))
            continue
        rows.append(Row(message))
        if message.role == "user" and message.position + 1 not in by_position:
            if writing(message.position + 1):
                rows.append(
                    Row(None, placeholder="writing", retry_for=message.id, position=message.position + 1)
                )
            else:
                rows.append(
                    Row(None, placeholder="missing", retry_for=message.id, position=message.position + 1)
                )
    return rows
