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

from gateway.entra import EntraVerifier
from gateway.errors import GatewayError, PayloadTooLarge, Unauthorized, error_body, error_response
from gateway.logs import bound_logger

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
# What the guard wraps: a handler given the request's id as an argument (not through the request's mapping,
# whose item access is a Python call each way).
View = Callable[[web.Request, str], Awaitable[web.StreamResponse]]


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

    def __init__(self, api_keys: tuple[str, ...], entra: EntraVerifier | None = None) -> None:
        self._accepted = tuple(key.encode() for key in api_keys)
        self._entra = entra  # inbound Entra ID tokens, accepted besides the keys
        # Request ids need to be unique, not secret: 64 random bits per process and a counter, instead of a
        # system call per request.
        self._id_prefix = f"{random.SystemRandom().getrandbits(64):016x}"
        self._id_counter = itertools.count(random.SystemRandom().getrandbits(32))
        self._log = bound_logger()

    def new_request_id(self) -> str:
        # 32 hex digits: a valid UUID (llama-cpp-python's server answers any other X-Request-ID with an
        # empty 400).
        return "%s%016x" % (self._id_prefix, next(self._id_counter))  # noqa: UP031 (twice as fast as f"{:016x}")

    def __call__(self, view: View, *, public: bool = False, tagged: bool = False) -> Handler:
        """``public``: no key needed (probes and scrapes, so orchestrators and Prometheus need none).
        ``tagged``: the view puts ``x-request-id`` on its answers itself (the proxy does, as a stream's headers
        go out before the guard sees the response), so the guard need not look at them again."""
        accepted = () if public else self._accepted
        checked = not public and bool(self._accepted or self._entra)
        log = self._log

        async def guarded(request: web.Request) -> web.StreamResponse:
            request_id = request.headers.get("x-request-id")
            if request_id is None or not _is_acceptable_request_id(request_id):
                request_id = self.new_request_id()
            try:
                if checked:
                    presented = _presented_key(request)
                    if not key_is_valid(presented, accepted):
                        await self._check_token(presented)
                response = await view(request, request_id)
                if tagged:
                    return response
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

        guarded.__name__ = guarded.__qualname__ = f"guarded_{view.__name__}"
        return guarded

    async def _check_token(self, presented: str | None) -> None:
        """Not one of the keys: an Entra ID token, if those are accepted, or a 401."""
        if self._entra is not None and presented is not None and self._entra.looks_like_jwt(presented):
            await self._entra.verify(presented)  # raises InvalidToken (401) saying why not
            return
        if self._entra is not None and not self._accepted:
            raise Unauthorized("Missing Entra ID token: send 'Authorization: Bearer <access token>'.")
        raise Unauthorized("Incorrect or missing API key: send 'Authorization: Bearer <key>' or 'api-key'.")
