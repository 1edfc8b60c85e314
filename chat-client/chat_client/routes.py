"""The whole URL table."""

from pathlib import Path

from aiohttp import web

from chat_client import api, pages

STATIC = Path(__file__).parent / "static"


def setup_routes(app: web.Application) -> None:
    app.router.add_get("/", pages.index, name="index")
    app.router.add_post("/chats", pages.create_chat, name="create_chat")
    app.router.add_get("/chats/{chat_id}", pages.chat_page, name="chat")

    app.router.add_get("/api/chats", api.list_chats)
    app.router.add_post("/api/chats", api.create_chat)
    app.router.add_patch("/api/chats/{chat_id}", api.rename_chat)
    app.router.add_delete("/api/chats/{chat_id}", api.delete_chat)
    app.router.add_get("/api/chats/{chat_id}/messages", api.list_messages)
    app.router.add_get("/api/chats/{chat_id}/live", api.live)
    app.router.add_post("/api/chats/{chat_id}/messages", api.post_message)
    app.router.add_post("/api/chats/{chat_id}/messages/{message_id}/retry", api.retry_message)
    app.router.add_post("/api/chats/{chat_id}/messages/{message_id}/regenerate", api.regenerate_message)
    app.router.add_post("/api/chats/{chat_id}/messages/{message_id}/stop", api.stop_reply)

    app.router.add_get("/healthz", api.healthz)
    app.router.add_static("/static/", STATIC, name="static")
