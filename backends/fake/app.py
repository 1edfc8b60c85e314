"""Wiring only: upstream → web.Application → middleware → routes."""

from __future__ import annotations

from typing import TYPE_CHECKING

from aiohttp import web

from .completion import CompletionRenderer
from .keys import RENDERER, UPSTREAM
from .middleware import record_requests
from .routes import setup_routes

if TYPE_CHECKING:
    from .upstream import FakeUpstream


def make_app(upstream: FakeUpstream) -> web.Application:
    app = web.Application(middlewares=[record_requests])
    app[UPSTREAM] = upstream
    app[RENDERER] = CompletionRenderer(upstream.name)

    async def tag_response(request: web.Request, response: web.StreamResponse) -> None:
        # Every answer says which fake sent it, so tests of a balancer can see who served a request.
        response.headers["x-fake-upstream"] = upstream.name

    app.on_response_prepare.append(tag_response)
    setup_routes(app)
    return app
