"""Wiring: settings -> web.Application -> cleanup contexts -> routes -> middlewares."""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import aiohttp_jinja2
import aiohttp_session
import jinja2
from aiohttp import web
from markupsafe import Markup

from chat_client import keys
from chat_client.database import describe, migrate
from chat_client.entra_password import open_engine
from chat_client.errors import error_middleware
from chat_client.live import ChatFeed
from chat_client.llm import open_chat_model
from chat_client.markdown import render_markdown
from chat_client.ratelimit import Limit, Limits, SlidingWindow
from chat_client.replies import ReplyWriter
from chat_client.routes import setup_routes
from chat_client.security import SessionStorage, add_security_headers, csrf_guard
from chat_client.settings import ChatSettings
from chat_client.store import ChatStore

log = logging.getLogger(__name__)

TEMPLATES = Path(__file__).parent / "templates"


def create_app(settings: ChatSettings, *, clock: Callable[[], float] = time.monotonic) -> web.Application:
    """`clock` times the rate limits (tests pass their own)."""
    storage = SessionStorage(settings.session_key_bytes(), max_age=settings.session_days * 86400)
    app = web.Application(
        # Outermost first: the session wraps everything so that error pages can still set the cookie.
        middlewares=[aiohttp_session.session_middleware(storage), error_middleware, csrf_guard],
    )
    app[keys.settings_key] = settings
    app[keys.feed_key] = ChatFeed()
    app[keys.limits_key] = _limits(settings, clock)
    environment = aiohttp_jinja2.setup(
        app,
        loader=jinja2.FileSystemLoader(TEMPLATES),
        autoescape=True,  # every {{ value }} is HTML-escaped: a message with <script> shows as text.
        undefined=jinja2.StrictUndefined,
    )
    # The one exception to escaping: answers rendered as Markdown and sanitised (markdown.py).
    environment.filters["markdown"] = lambda text: Markup(render_markdown(text))
    # Order matters: cleanup runs in reverse, so replies stop before the model client and the database close.
    app.cleanup_ctx.append(_database)
    app.cleanup_ctx.append(_chat_model)
    app.cleanup_ctx.append(_reply_writer)
    app.on_response_prepare.append(add_security_headers)
    app.on_shutdown.append(_end_live_streams)
    setup_routes(app)
    return app


def _limits(settings: ChatSettings, clock: Callable[[], float]) -> Limits:
    minute = 60.0
    return Limits(
        sends=Limit(
            "messages",
            SlidingWindow(settings.sends_per_minute, minute),
            SlidingWindow(settings.sends_per_minute_per_address, minute),
        ),
        chats=Limit(
            "new chats",
            SlidingWindow(settings.chats_per_minute, minute),
            SlidingWindow(settings.chats_per_minute_per_address, minute),
        ),
        clock=clock,
    )


async def _end_live_streams(app: web.Application) -> None:
    # Live streams never end on their own; the server would wait for them until its shutdown timeout.
    app[keys.feed_key].close()


async def _database(app: web.Application) -> AsyncIterator[None]:
    settings = app[keys.settings_key]
    url = settings.resolved_database_url
    if settings.database_url is None:
        log.warning(
            "DATABASE_URL is not set: using the embedded SQLite file %s (fine for a demo; "
            "docker-compose and Azure use PostgreSQL)",
            Path(url.split("///", 1)[1]).resolve(),
        )
    else:
        log.info("database: %s", describe(url))
    async with open_engine(settings) as engine:
        await migrate(engine)
        app[keys.store_key] = ChatStore(engine)
        yield


async def _chat_model(app: web.Application) -> AsyncIterator[None]:
    async with open_chat_model(app[keys.settings_key]) as model:
        app[keys.model_key] = model
        yield


async def _reply_writer(app: web.Application) -> AsyncIterator[None]:
    settings = app[keys.settings_key]
    writer = ReplyWriter(
        app[keys.store_key],
        app[keys.model_key],
        system_prompt=settings.system_prompt,
        context_tokens=settings.context_tokens,
        feed=app[keys.feed_key],
    )
    app[keys.replies_key] = writer
    yield
    await writer.close()
