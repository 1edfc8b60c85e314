"""Stopping without cutting anyone short, and without a cut passing for an end: the shutdown's state.

On SIGTERM/SIGINT (``gateway.server``) the gateway stops listening, closes idle connections and lets the
requests in flight finish for ``GATEWAY_SHUTDOWN_GRACE`` seconds; ``/readyz`` answers 503 "draining" from the
signal on. When the grace is over, the requests still running are cancelled, and the two places that answer a
client read ``expired`` to tell that cancellation from a client that went away:

- a stream already started ends with an SSE error event (code ``gateway_shutting_down``), which the openai SDK
  raises: a bare end would be read as a whole answer (the README's "truncation is an error");
- a request with nothing sent yet is answered 503 with Retry-After (``errors.ShuttingDown``): another replica
  can take it.
"""

from __future__ import annotations

from aiohttp import web

from gateway.settings import BackendConfig
from gateway.upstream import UpstreamError


class Drain:
    """The shutdown's two moments, set by the server, read where a request ends."""

    __slots__ = ("draining", "expired")

    def __init__(self) -> None:
        self.draining = False  # the signal came: no new connections, /readyz 503
        self.expired = False  # the grace is over: what still runs is being cancelled


DRAIN = web.AppKey("drain", Drain)  # (re-exported by gateway.keys; defined here so the relay can read it)


class CutByShutdown(UpstreamError):
    """A stream the gateway ended itself, its grace over. Told as the attempt's error so that the attempt is
    logged and counted as cut (outcome ``gateway_shutdown``), not as an answer; the backend is not to blame:
    no retry, no cooldown, and the breaker is not moved."""

    retryable = False
    counts_as_failure = False

    def __init__(self, backend: BackendConfig) -> None:
        super().__init__(backend, "the gateway is shutting down: its grace period for requests in flight is over")
