"""The one middleware: request id, inbound API key, and rendering of every error the gateway raises."""

from __future__ import annotations

import hmac
import os
from collections.abc import Awaitable, Callable

from aiohttp import web

from gateway import keys
from gateway.errors import GatewayError, PayloadTooLarge, Unauthorized, error_body, error_response
from gateway.logs import get_logger

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

# Probes and scrapes stay open so orchestrators and Prometheus need no key.
_OPEN_PATHS = frozenset({"/healthz", "/readyz", "/metrics"})


def new_request_id() -> str:
    # 32 random hex digits: a valid UUID (llama-cpp-python's server answers any other X-Request-ID with an
    # empty 400), without the uuid module's object overhead on every request.
    return os.urandom(16).hex()


def _presented_key(request: web.Request) -> str | None:
    authorization = request.headers.get("Authorization")
    if authorization is not None:
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() == "bearer" and token:
            return token.strip()
    return request.headers.get("api-key")


def key_is_valid(presented: str | None, accepted: tuple[bytes, ...]) -> bool:
    """Compare against every accepted key, always, so timing reveals neither the key nor which one matched."""
    candidate = (presented or "").encode()
    valid = False
    for key in accepted:
        valid |= hmac.compare_digest(candidate, key)
    return valid and presented is not None


def make_middleware(api_keys: tuple[str, ...]) -> Callable[[web.Request, Handler], Awaitable[web.StreamResponse]]:
    accepted = tuple(key.encode() for key in api_keys)
    log = get_logger()

    @web.middleware
    async def gateway_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        request_id = request.headers.get("x-request-id") or new_request_id()
        request[keys.REQUEST_ID] = request_id
        try:
            if accepted and request.path not in _OPEN_PATHS and not key_is_valid(_presented_key(request), accepted):
                raise Unauthorized("Incorrect or missing API key: send 'Authorization: Bearer <key>' or 'api-key'.")
            response = await handler(request)
        except GatewayError as error:
            response = error_response(error)
            log.info("request", request_id=request_id, method=request.method, path=request.path,
                     status=error.status, error=error.code)
        except web.HTTPRequestEntityTooLarge as exc:
            response = error_response(PayloadTooLarge.over(exc.max_size))
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

    return gateway_middleware
