"""The JSON API the page uses; replies stream as server-sent events.

    GET  /api/chats                                    {"chats": [...]}, newest activity first
    POST /api/chats                                    {"title"?} -> 201 {"chat": ...}
    GET  /api/chats/{id}/messages                      {"chat": ..., "messages": [...]}, in order
    POST /api/chats/{id}/messages                      {"content"} -> text/event-stream
    POST /api/chats/{id}/messages/{message_id}/retry   -> text/event-stream (answer that message again)

Events of a stream, in order: `user` (the user's message, committed before the model is called), any
number of `token` ({"text"}), then exactly one of `done` ({"message"}: the stored reply) or `error`
({"code", "message", "retry_after", "partial", "retry_message_id"}). Problems found before the stream
starts (bad input, unknown chat, limits, CSRF) are plain JSON errors with a 4xx status.
"""

from __future__ import annotations

import asyncio
import logging
import uuid

from aiohttp import web

from chat_client import keys, sse
from chat_client.errors import ChatError, not_found
from chat_client.replies import Done, Failed, ReplyInProgress, Token
from chat_client.security import identity
from chat_client.store import ChatLimitReached, Pending, ReplyConflict
from chat_client.views import (
    chat_id_param,
    chat_json,
    chat_limit_error,
    clean_message,
    clean_title,
    json_body,
    message_id_param,
    message_json,
    own_chat_with_messages,
)

log = logging.getLogger(__name__)


async def list_chats(request: web.Request) -> web.Response:
    me = await identity(request)
    chats = await request.app[keys.store_key].list_chats(me.session_id)
    return web.json_response({"chats": [chat_json(chat) for chat in chats]})


async def create_chat(request: web.Request) -> web.Response:
    me = await identity(request)
    body = await json_body(request)
    title = clean_title(body.get("title"))
    limit = request.app[keys.settings_key].max_chats_per_session
    try:
        chat = await request.app[keys.store_key].create_chat(me.session_id, limit=limit, title=title)
    except ChatLimitReached as exc:
        raise chat_limit_error(exc.limit) from None
    return web.json_response({"chat": chat_json(chat)}, status=201)


async def list_messages(request: web.Request) -> web.Response:
    _, chat, messages = await own_chat_with_messages(request)
    return web.json_response({"chat": chat_json(chat), "messages": [message_json(m) for m in messages]})


async def post_message(request: web.Request) -> web.StreamResponse:
    me = await identity(request)
    chat_id = chat_id_param(request)
    body = await json_body(request)
    content = clean_message(body.get("content"), request.app[keys.settings_key].max_message_chars)
    pending = await request.app[keys.store_key].add_user_message(me.session_id, chat_id, content)
    if pending is None:
        raise not_found()
    return await _relay_reply(request, chat_id, pending)


async def retry_message(request: web.Request) -> web.StreamResponse:
    me = await identity(request)
    chat_id = chat_id_param(request)
    message_id = message_id_param(request)
    try:
        pending = await request.app[keys.store_key].pending_for_retry(me.session_id, chat_id, message_id)
    except ReplyConflict:
        raise ChatError(
            409, "already_answered", "This message already has a reply. Reload the page."
        ) from None
    if pending is None:
        raise not_found("Message")
    return await _relay_reply(request, chat_id, pending)


async def _relay_reply(request: web.Request, chat_id: uuid.UUID, pending: Pending) -> web.StreamResponse:
    """Start the reply's writer and forward its events to the browser for as long as the browser listens."""
    history = await request.app[keys.store_key].history(chat_id, pending.message.position)
    try:
        events = request.app[keys.replies_key].start(chat_id, pending.reply_position, history)
    except ReplyInProgress:
        raise ChatError(
            409, "reply_in_progress", "A reply to this message is being written. Reload in a moment."
        ) from None

    response = await sse.open_stream(request)
    user = {"message": message_json(pending.message), "chat_title": pending.chat_title}
    try:
        await sse.send(response, "user", user)
        while True:
            event = await events.get()
            if isinstance(event, Token):
                await sse.send(response, "token", {"text": event.text})
            elif isinstance(event, Done):
                await sse.send(response, "done", {"message": message_json(event.message)})
                break
            elif isinstance(event, Failed):
                await sse.send(
                    response,
                    "error",
                    {
                        "code": event.failure.code,
                        "message": event.failure.message,
                        "retry_after": event.failure.retry_after,
                        "partial": message_json(event.partial) if event.partial else None,
                        "retry_message_id": pending.message.id,
                    },
                )
                break
        await response.write_eof()
    except ConnectionResetError:
        # The browser left. The writer goes on and stores the reply; a reload will show it.
        log.info("chat %s: browser left during the reply; it is still being written and stored", chat_id)
    except asyncio.CancelledError:
        # The same, when the server cancels handlers of closed connections.
        log.info("chat %s: request cancelled during the reply; it is still being written and stored", chat_id)
        raise
    return response


async def healthz(request: web.Request) -> web.Response:
    """Liveness and readiness: the app answers and its database does."""
    try:
        async with asyncio.timeout(3):
            await request.app[keys.store_key].ping()
    except Exception as exc:
        log.warning("health check: database unavailable: %s", type(exc).__name__)
        return web.json_response({"status": "unavailable", "database": "unreachable"}, status=503)
    return web.json_response({"status": "ok"})
