"""Serving the app: aiohttp's runner, with requests it cannot even parse answered like every other error.

A request aiohttp's HTTP parser rejects (Content-Length together with Transfer-Encoding, a malformed header,
a bad method) never reaches a handler: aiohttp answers it from ``RequestHandler.handle_error``, by default in
``text/plain`` and with a multi-line traceback in the log — one per request, from any unauthenticated client.
Here it is answered with the OpenAI-shaped JSON 400 and told in one JSON log line, no traceback.

aiohttp has no public hook for that answer, so the runner builds its ``Server`` (the protocol factory) from a
subclass whose connections override ``handle_error``; everything else is aiohttp's own.
"""

from __future__ import annotations

import asyncio
from typing import Any

from aiohttp import web
from aiohttp.web_protocol import RequestHandler
from aiohttp.web_request import BaseRequest

from gateway.errors import error_body
from gateway.logs import get_logger


class _JsonErrorConnection(RequestHandler):
    __slots__ = ()

    def handle_error(
        self,
        request: BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        if request.writer.output_size > 0:
            raise ConnectionError("the response was already started; cannot send an error response")
        if status >= 500:
            # A bug of ours, not the client's: say nothing of it to the client; log it (one JSON line, whose
            # "exception" field holds the traceback).
            get_logger().error("server_error", status=status, remote=request.remote, exc_info=exc)
            text, error_type, code = "The gateway failed to handle this request.", "server_error", "internal_error"
        else:
            reason = getattr(exc, "message", None) or message or "malformed HTTP request"
            get_logger().info("bad_http_request", status=status, error=str(reason)[:200], remote=request.remote)
            text, error_type, code = f"Malformed HTTP request: {reason}", "invalid_request_error", "bad_http_request"
        response = web.Response(
            status=status, body=error_body(text, error_type, code), content_type="application/json"
        )
        response.force_close()
        return response


class _Server(web.Server):
    def __call__(self) -> RequestHandler:
        return _JsonErrorConnection(self, loop=self._loop, **self._kwargs)


class GatewayRunner(web.AppRunner):
    """``web.AppRunner`` whose connections answer unparseable requests in JSON."""

    def __init__(self, app: web.Application, **kwargs: Any) -> None:
        super().__init__(app, **kwargs)
        self._handler_kwargs = {k: v for k, v in kwargs.items() if k not in ("handle_signals", "shutdown_timeout")}

    async def _make_server(self) -> web.Server:
        made = await super()._make_server()  # runs the app's start-up, as aiohttp's runner does
        return _Server(made.request_handler, request_factory=made.request_factory, **self._handler_kwargs)


async def serve_until_stopped(
    app: web.Application, *, host: str, port: int, reuse_port: bool = False, backlog: int = 128
) -> None:
    """Serve ``app`` until SIGINT/SIGTERM (``web.GracefulExit``), then shut it down as ``web.run_app`` does."""
    runner = GatewayRunner(
        app,
        handle_signals=True,
        access_log=None,
        keepalive_timeout=75.0,  # web.run_app's: an idle client connection is closed after 75 s
        handler_cancellation=True,  # a client that disconnects cancels its upstream request too
    )
    await runner.setup()
    try:
        await web.TCPSite(runner, host, port, reuse_port=reuse_port, backlog=backlog).start()
        await asyncio.Event().wait()
    finally:
        await runner.cleanup()
