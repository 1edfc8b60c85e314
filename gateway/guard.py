"""What every handler runs inside: request id, inbound API key, and rendering of every error the gateway
raises.

A wrapper put around each handler when the routes are registered, not an aiohttp middleware: with any
middleware at all aiohttp runs two layers per request (ours, and its own that tracks the current app, both
looked up through an lru_cache), which cost 5% of the gateway's CPU per proxied request.
"""

from __future__ import annotations

import hmac
import itertools
import random
import re
from collections.abc import Awaitable, Callable

from aiohttp import web

from gateway import keys
from gateway.errors import GatewayError, PayloadTooLarge, Unauthorized, error_body, error_response
from gateway.logs import bound_logger

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _presented_key(request: web.Request) -> str | None:
    authorization = request.headers.get("Authorization")
    if authorization is not None:
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() == "bearer" and token:
            return token.strip()
    return request.headers.get("api-key")


# A client's own request id is echoed, logged and forwarded upstream: only a short one of plain characters
# (UUIDs, ULIDs, OpenTelemetry-style ids), so it can neither bloat every line nor smuggle anything into a header
# or a log. Anything else is replaced by one of ours.
_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")


def _is_acceptable_request_id(value: str) -> bool:
    return _REQUEST_ID.fullmatch(value) is not None


def key_is_valid(presented: str | None, accepted: tuple[bytes, ...]) -> bool:
    """Compare against every accepted key, always, so timing reveals neither the key nor which one matched."""
    candidate = (presented or "").encode()
    valid = False
    for key in accepted:
        valid |= hmac.compare_digest(candidate, key)
    return valid and presented is not None


class Guard:
    """``guard(handler)`` is ``handler`` with a request id, the API key check, and errors rendered as JSON.

    Built by each worker process for its own app, so each has its own request-id generator.
    """

    def __init__(self, api_keys: tuple[str, ...]) -> None:
        self._accepted = tuple(key.encode() for key in api_keys)
        # Request ids need to be unique, not secret: 64 random bits per process and a counter, instead of a
        # system call per request.
        self._id_prefix = f"{random.SystemRandom().getrandbits(64):016x}"
        self._id_counter = itertools.count(random.SystemRandom().getrandbits(32))
        self._log = bound_logger()

    def new_request_id(self) -> str:
        # 32 hex digits: a valid UUID (llama-cpp-python's server answers any other X-Request-ID with an
        # empty 400).
        return "%s%016x" % (self._id_prefix, next(self._id_counter))  # noqa: UP031 (twice as fast as f"{:016x}")

    def __call__(self, handler: Handler, *, public: bool = False) -> Handler:
        """``public``: no key needed (probes and scrapes, so orchestrators and Prometheus need none)."""
        accepted = () if public else self._accepted
        log = self._log

        async def guarded(request: web.Request) -> web.StreamResponse:
            request_id = request.headers.get("x-request-id")
            if request_id is None or not _is_acceptable_request_id(request_id):
                request_id = self.new_request_id()
            request[keys.REQUEST_ID] = request_id
            try:
                if accepted and not key_is_valid(_presented_key(request), accepted):
                    raise Unauthorized(
                        "Incorrect or missing API key: send 'Authorization: Bearer <key>' or 'api-key'."
                    )
                response = await handler(request)
            except GatewayError as error:
                response = error_response(error)
                log.info("request", request_id=request_id, method=request.method, path=request.path,
                         status=error.status, error=error.code)
            except web.HTTPRequestEntityTooLarge:
                response = error_response(PayloadTooLarge.over(request.client_max_size))
            except web.HTTPException as exc:
                if exc.status < 400:
                    raise
                # Unknown paths and wrong methods get the same JSON error shape as everything else.
                response = web.Response(
                    status=exc.status,
                    body=error_body(exc.reason, "invalid_request_error", f"http_{exc.status}"),
                    content_type="application/json",
                    headers={k: v for k, v in exc.headers.items() if k.lower() == "allow"},
                )
            if not response.prepared:
                response.headers["x-request-id"] = request_id
            return response

        guarded.__name__ = guarded.__qualname__ = f"guarded_{handler.__name__}"
        return guarded
