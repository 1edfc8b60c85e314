"""The HTML pages: the start page (name, chat list) and a chat page. Streaming happens in static/chat.js."""

from __future__ import annotations

import aiohttp_jinja2
from aiohttp import web

from chat_client import keys
from chat_client.security import clean_name, identity, set_name
from chat_client.store import ChatLimitReached
from chat_client.views import chat_limit_error, conversation, enforce_limit, own_chat_with_messages


@aiohttp_jinja2.template("index.html")
async def index(request: web.Request) -> dict[str, object]:
    me = await identity(request)
    chats = await request.app[keys.store_key].list_chats(me.session_id)
    return {"me": me, "chats": chats, "current": None}


async def create_chat(request: web.Request) -> web.StreamResponse:
    """The start page's form: remember the name (first time), start a chat, open it."""
    me = await identity(request)
    form = await request.post()
    if "name" in form or me.name is None:
        await set_name(request, clean_name(form.get("name")))
    settings = request.app[keys.settings_key]
    enforce_limit(request, me, "chats")
    try:
        chat = await request.app[keys.store_key].create_chat(
            me.session_id, limit=settings.max_chats_per_session
        )
    except ChatLimitReached as exc:
        raise chat_limit_error(exc.limit) from None
    raise web.HTTPSeeOther(f"/chats/{chat.id}")


@aiohttp_jinja2.template("chat.html")
async def chat_page(request: web.Request) -> dict[str, object]:
    me, chat, messages = await own_chat_with_messages(request)
    replies = request.app[keys.replies_key]
    return {
        "me": me,
        "chat": chat,
        "current": chat.id,
        "chats": await request.app[keys.store_key].list_chats(me.session_id),
        "rows": conversation(messages, lambda position: replies.in_progress(chat.id, position)),
        "max_chars": request.app[keys.settings_key].max_message_chars,
    }
