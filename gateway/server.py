"""Serving the app: aiohttp's runner, with requests it cannot even parse answered like every other error.

A request aiohttp's HTTP parser rejects (Content-Length together with Transfer-Encoding, a malformed header,
a bad method) never reaches a handler: aiohttp answers it from ``RequestHandler.handle_error``, by default in
``text/plain`` and with a multi-line traceback in the log — one per request, from any unauthenticated client.
Here it is answered with the OpenAI-shaped JSON 400 and told in one JSON log line, no traceback.

aiohttp has no public hook for that answer, so the runner builds its ``Server`` (the protocol factory) from a
subclass whose connections override ``handle_error``; everything else is aiohttp's own.

Stopping (SIGTERM/SIGINT) drains (``gateway.drain``): from the signal /readyz answers 503; aiohttp's runner then
stops listening, closes idle connections and waits for the requests in flight. aiohttp's own wait does not fit
as it is: after its timeout it cancels a handler and closes its connection in the same step, so a stream would
end bare, and a clean end is what the openai SDK takes for a whole answer. So its timeout is set past the grace,
and at the grace's end the server cancels what still runs itself, leaving each handler ``_LAST_WORDS`` to end
its answer properly (an SSE error event, a 503) before its connection is closed regardless.
"""

from __future__ import annotations

import asyncio
import signal
from typing import Any

from aiohttp import web
from aiohttp.web_protocol import RequestHandler
from aiohttp.web_request import BaseRequest

from gateway.drain import DRAIN
from gateway.errors import error_body
from gateway.logs import get_logger

# How long a request cancelled at the grace's end has to write its last bytes: a client that does not read them
# cannot hold the process up longer than this.
_LAST_WORDS = 1.0


class _JsonErrorConnection(RequestHandler):
    __slots__ = ()

    def end_request(self) -> bool:
        """Cancel the request in progress, if there is one (the grace is over); whether there was."""
        task = self._task_handler  # aiohttp's task for this connection, which awaits the request's handler
        if not self._request_in_progress or task is None or task.done():
            return False
        task.cancel()
        return True

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
    app: web.Application,
    *,
    host: str,
    port: int,
    grace: float,
    reuse_port: bool = False,
    backlog: int = 128,
) -> None:
    """Serve ``app`` until SIGINT/SIGTERM, then drain for up to ``grace`` seconds and shut it down."""
    runner = GatewayRunner(
        app,
        handle_signals=False,  # ours below: aiohttp's would stop the loop and cancel every request at once
        shutdown_timeout=grace + 2 * _LAST_WORDS,  # aiohttp's wait must outlast ours (see the docstring)
        access_log=None,
        keepalive_timeout=75.0,  # web.run_app's: an idle client connection is closed after 75 s
        handler_cancellation=True,  # a client that disconnects cancels its upstream request too
    )
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):  # first: a signal during start-up is a drain of nothing
        loop.add_signal_handler(signum, stop.set)
    timers: list[asyncio.TimerHandle] = []
    try:
        await runner.setup()
        await web.TCPSite(runner, host, port, reuse_port=reuse_port, backlog=backlog).start()
        await stop.wait()
        app[DRAIN].draining = True
        server = runner.server
        assert server is not None
        get_logger().info("gateway_draining", grace_s=grace, connections=len(server.connections))
        timers.append(loop.call_later(grace, _grace_over, app, server))
        timers.append(loop.call_later(grace + _LAST_WORDS, _close_connections, server))
    finally:
        try:
            await runner.cleanup()  # stops listening, closes idle connections, waits for the requests in flight
        finally:
            for timer in timers:
                timer.cancel()
            for signum in (signal.SIGINT, signal.SIGTERM):
                loop.remove_signal_handler(signum)


def _grace_over(app: web.Application, server: web.Server) -> None:
    app[DRAIN].expired = True  # read by the relay and the proxy as they are cancelled
    ended = sum(conn.end_request() for conn in server.connections if isinstance(conn, _JsonErrorConnection))
    get_logger().warning("gateway_grace_over", ended_requests=ended)


def _close_connections(server: web.Server) -> None:
    for conn in server.connections:
        conn.force_close()
