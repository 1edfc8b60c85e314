"""The JSON API the page uses; replies stream as server-sent events.

    GET    /api/chats                                       {"chats": [...]}, newest activity first
    POST   /api/chats                                       {"title"?} -> 201 {"chat": ...}
    PATCH  /api/chats/{id}                                  {"title"} -> {"chat": ...} (rename)
    DELETE /api/chats/{id}                                  -> 204 (the chat and its messages are gone)
    GET    /api/chats/{id}/messages                         {"chat": ..., "messages": [...]}, in order
    GET    /api/chats/{id}/live?tab=…                       text/event-stream of what happens in the chat
    POST   /api/chats/{id}/messages                         {"content"} -> text/event-stream
    POST   /api/chats/{id}/messages/{message_id}/retry      -> text/event-stream (answer that message again)
    POST   /api/chats/{id}/messages/{message_id}/regenerate -> text/event-stream (replace the last answer)
    POST   /api/chats/{id}/messages/{message_id}/stop       -> {"stopped": bool} (stop the reply being written)

Events of a reply stream, in order: `user` (the user's message, committed before the model is called), any
number of `token` ({"text"}) with an `html` ({"html"}: the reply so far as sanitised Markdown, the
tokens after it to be appended as text) a few times a second, then exactly one of `done` ({"message"}: the stored reply) or `error`
({"code", "message", "retry_after", "partial", "retry_message_id"}). Problems found before the stream
starts (bad input, unknown chat, limits, CSRF) are plain JSON errors with a 4xx status; too many sends or
new chats get 429 with Retry-After.

Live events (live.py): `reply` ({"position", "text" so far, "question_id"}), `token` ({"position", "text"}),
`html` ({"position", "html"}),
`message` ({"message"}), `failed` (as `error`, with "position"), `user` ({"message", "chat_title"}),
`renamed` ({"title"}), `deleted`, `overflow` (reload). A tab sends its random id (X-Tab-Id on posts,
?tab= on the live stream) and is not told about what it caused itself.
"""

from __future__ import annotations

import asyncio
import logging
import uuid

from aiohttp import web

from chat_client import keys, sse
from chat_client.errors import ChatError, not_found
from chat_client.live import LiveEvent
from chat_client.replies import Done, Failed, Rendered, ReplyInProgress, Token
from chat_client.security import identity
from chat_client.store import ChatLimitReached, Pending, ReplyConflict
from chat_client.views import (
    chat_id_param,
    chat_json,
    chat_limit_error,
    clean_message,
    clean_title,
    enforce_limit,
    json_body,
    message_id_param,
    message_json,
    own_chat_with_messages,
    tab_id,
)

log = logging.getLogger(__name__)

# A comment line this often keeps idle live streams open through proxies and finds closed tabs.
HEARTBEAT_SECONDS = 20.0


async def list_chats(request: web.Request) -> web.Response:
    me = await identity(request)
    chats = await request.app[keys.store_key].list_chats(me.session_id)
    return web.json_response({"chats": [chat_json(chat) for chat in chats]})


async def create_chat(request: web.Request) -> web.Response:
    me = await identity(request)
    body = await json_body(request)
    title = clean_title(body.get("title"))
    enforce_limit(request, me, "chats")
    limit = request.app[keys.settings_key].max_chats_per_session
    try:
        chat = await request.app[keys.store_key].create_chat(me.session_id, limit=limit, title=title)
    except ChatLimitReached as exc:
        raise chat_limit_error(exc.limit) from None
    return web.json_response({"chat": chat_json(chat)}, status=201)


async def rename_chat(request: web.Request) -> web.Response:
    me = await identity(request)
    chat_id = chat_id_param(request)
    body = await json_body(request)
    title = clean_title(body.get("title"))
    if not title:
        raise ChatError(400, "title_empty", "Give the chat a name.")
    chat = await request.app[keys.store_key].rename_chat(me.session_id, chat_id, title)
    if chat is None:
        raise not_found()
    request.app[keys.feed_key].publish(chat_id, LiveEvent("renamed", {"title": title}, _origin(request)))
    return web.json_response({"chat": chat_json(chat)})


async def delete_chat(request: web.Request) -> web.Response:
    me = await identity(request)
    chat_id = chat_id_param(request)
    store = request.app[keys.store_key]
    if await store.get_chat(me.session_id, chat_id) is None:
        raise not_found()
    # Replies still being written would otherwise try to save into a chat that is gone.
    await request.app[keys.replies_key].discard_chat(chat_id)
    if not await store.delete_chat(me.session_id, chat_id):
        raise not_found()
    request.app[keys.feed_key].publish(chat_id, LiveEvent("deleted", {}, _origin(request)))
    return web.Response(status=204)


async def list_messages(request: web.Request) -> web.Response:
    _, chat, messages = await own_chat_with_messages(request)
    return web.json_response({"chat": chat_json(chat), "messages": [message_json(m) for m in messages]})


async def post_message(request: web.Request) -> web.StreamResponse:
    me = await identity(request)
    chat_id = chat_id_param(request)
    body = await json_body(request)
    content = clean_message(body.get("content"), request.app[keys.settings_key].max_message_chars)
    if await request.app[keys.store_key].get_chat(me.session_id, chat_id) is None:
        raise not_found()
    enforce_limit(request, me, "sends")
    pending = await request.app[keys.store_key].add_user_message(me.session_id, chat_id, content)
    if pending is None:
        raise not_found()
    request.app[keys.feed_key].publish(
        chat_id,
        LiveEvent(
            "user",
            {"message": message_json(pending.message), "chat_title": pending.chat_title},
            _origin(request),
        ),
    )
    return await _relay_reply(request, chat_id, pending)


async def retry_message(request: web.Request) -> web.StreamResponse:
    return await _answer_again(request, regenerate=False)


async def regenerate_message(request: web.Request) -> web.StreamResponse:
    return await _answer_again(request, regenerate=True)


async def stop_reply(request: web.Request) -> web.Response:
    """Stop the reply to user message `message_id`; its text so far is kept, marked stopped."""
    me = await identity(request)
    chat_id = chat_id_param(request)
    message_id = message_id_param(request)
    store = request.app[keys.store_key]
    messages = await store.list_messages(me.session_id, chat_id)
    if messages is None:
        raise not_found()
    question = next((m for m in messages if m.id == message_id and m.role == "user"), None)
    if question is None:
        raise not_found("Message")
    stopped = request.app[keys.replies_key].stop(chat_id, question.position + 1)
    return web.json_response({"stopped": stopped})


async def _answer_again(request: web.Request, *, regenerate: bool) -> web.StreamResponse:
    me = await identity(request)
    chat_id = chat_id_param(request)
    message_id = message_id_param(request)
    if await request.app[keys.store_key].get_chat(me.session_id, chat_id) is None:
        raise not_found()
    enforce_limit(request, me, "sends")
    try:
        pending = await request.app[keys.store_key].pending_for_retry(
            me.session_id, chat_id, message_id, regenerate=regenerate
        )
    except ReplyConflict:
        if regenerate:
            raise ChatError(409, "not_last", "Only the last answer of a chat can be regenerated.") from None
        raise ChatError(
            409, "already_answered", "This message already has a reply. Reload the page."
        ) from None
    if pending is None:
        raise not_found("Message")
    return await _relay_reply(request, chat_id, pending, replace=regenerate)


def _origin(request: web.Request) -> str | None:
    return tab_id(request.headers.get("X-Tab-Id"))


async def _relay_reply(
    request: web.Request, chat_id: uuid.UUID, pending: Pending, *, replace: bool = False
) -> web.StreamResponse:
    """Start the reply's writer and forward its events to the browser for as long as the browser listens."""
    history = await request.app[keys.store_key].history(chat_id, pending.message.position)
    try:
        events = request.app[keys.replies_key].start(
            chat_id,
            pending.reply_position,
            history,
            question_id=pending.message.id,
            origin=_origin(request),
            replace=replace,
        )
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
            elif isinstance(event, Rendered):
                await sse.send(response, "html", {"html": event.html})
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


async def live(request: web.Request) -> web.StreamResponse:
    """What happens in this chat from now on, starting with the replies being written and their text so far."""
    me = await identity(request)
    chat_id = chat_id_param(request)
    if await request.app[keys.store_key].get_chat(me.session_id, chat_id) is None:
        raise not_found()
    tab = tab_id(request.query.get("tab"))
    feed = request.app[keys.feed_key]
    # Subscribe, then snapshot, with no await between: no token falls between the two.
    queue = feed.subscribe(chat_id)
    writing = request.app[keys.replies_key].writing(chat_id)
    try:
        response = await sse.open_stream(request)
        await sse.send(response, "hello", {})
        for reply in writing:
            data = {"position": reply.position, "text": reply.text, "question_id": reply.question_id}
            await sse.send(response, "reply", data)
        while True:
            try:
                async with asyncio.timeout(HEARTBEAT_SECONDS):
                    event = await queue.get()
            except TimeoutError:
                await response.write(b": heartbeat\n\n")
                continue
            if event is None:
                break
            if event.origin is not None and event.origin == tab:
                continue
            await sse.send(response, event.name, event.data)
            if event.name in ("deleted", "overflow"):
                break
        await response.write_eof()
    except ConnectionResetError:
        pass
    finally:
        feed.unsubscribe(chat_id, queue)
    return response


async def healthz(request: web.Request) -> web.Response:
    """Liveness and readiness: the app answers and its database does."""
    try:
        async with asyncio.timeout(3):
            await request.app[keys.store_key].ping()
    except Exception as exc:  # noqa: BLE001 -- whatever the driver raises, the answer is "not ready"
        log.warning("health check: database unavailable: %s", type(exc).__name__)
        return web.json_response({"status": "unavailable", "database": "unreachable"}, status=503)
    return web.json_response({"status": "ok"})
