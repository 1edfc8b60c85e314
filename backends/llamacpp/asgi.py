"""ASGI wrappers that make llama-cpp-python's server behave well behind a load balancer.

Plain ASGI, no import of llama_cpp: each wrapper takes the app it wraps and handles one thing before it.
"""

from __future__ import annotations

import json
import uuid

# What load balancers probe: the model list (OpenAI API) and llama.cpp's own server's /health.
MODELS_PATH = "/v1/models"
HEALTH_PATH = "/health"
PROBE_PATHS = frozenset({MODELS_PATH, HEALTH_PATH})


async def _send_json(send, status: int, payload: dict, *, head: bool = False) -> None:
    body = json.dumps(payload).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": b"" if head else body})


class InstantProbes:
    """ASGI wrapper that answers GET /v1/models and GET /health without waiting for the model.

    llama-cpp-python serves /v1/models behind the same lock as generation, so a health probe sent during
    a long completion would hang until it ends, and a load balancer would take a busy backend for a dead
    one; it has no /health at all, which llama.cpp's own server has. The served model is fixed for the
    life of the process, so both answers can be given at once; the wrapped app exists only once the model
    has loaded, so a reply still means "ready".
    """

    def __init__(self, app, alias: str) -> None:
        self._app = app
        self._answers = {
            MODELS_PATH: {
                "object": "list",
                "data": [{"id": alias, "object": "model", "owned_by": "llama.cpp"}],
            },
            HEALTH_PATH: {"status": "ok"},
        }

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] == "http" and scope["method"] in ("GET", "HEAD") and scope["path"] in self._answers:
            await _send_json(send, 200, self._answers[scope["path"]], head=scope["method"] == "HEAD")
            return
        await self._app(scope, receive, send)


class AnyRequestId:
    """ASGI wrapper that drops an X-Request-ID header that is not a UUID.

    llama-cpp-python's request-id middleware answers any other value with an empty 400, and gateways send
    ids of their own shapes (ours: 24 hex digits). Without the header it makes up a UUID of its own.
    """

    def __init__(self, app) -> None:
        self._app = app

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] == "http":
            headers = [(k, v) for k, v in scope["headers"] if k != b"x-request-id" or _is_uuid(v)]
            if len(headers) != len(scope["headers"]):
                scope = {**scope, "headers": headers}
        await self._app(scope, receive, send)


def _is_uuid(value: bytes) -> bool:
    try:
        uuid.UUID(value.decode("latin-1"))
    except ValueError:
        return False
    return True


class CompletionRequests:
    """ASGI wrapper for the completion endpoints: names the served model where a request names none, and
    answers a body that is not a JSON object with a 400.

    llama-cpp-python answers a request without "model" with the model's file path as its "model", in every
    chunk: a path on our disk sent to clients. And it answers a body that is not a JSON object with a 500,
    which a load balancer counts against the backend although the client is at fault.
    """

    PATHS = frozenset({"/v1/chat/completions", "/v1/completions"})

    def __init__(self, app, alias: str) -> None:
        self._app = app
        self._alias = alias

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http" or scope["method"] != "POST" or scope["path"] not in self.PATHS:
            await self._app(scope, receive, send)
            return
        body = await _read_body(receive)
        if body is None:
            return  # the client left before it finished sending: nothing to answer
        try:
            request = json.loads(body)
        except ValueError as e:
            await _send_invalid_request(send, f"The request body is not valid JSON: {e}")
            return
        if not isinstance(request, dict):
            await _send_invalid_request(send, "The request body must be a JSON object.")
            return
        if not request.get("model"):
            body = json.dumps({**request, "model": self._alias}).encode()
        headers = [(k, v) for k, v in scope["headers"] if k != b"content-length"]
        headers.append((b"content-length", str(len(body)).encode()))
        await self._app({**scope, "headers": headers}, _replay(body, receive), send)


async def _read_body(receive) -> bytes | None:
    """The whole request body, or None when the client disconnects first."""
    chunks = []
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return None
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            return b"".join(chunks)


def _replay(body: bytes, receive):
    """A `receive` that hands the app `body` first, then the real events (the app watches for disconnects)."""
    pending = [{"type": "http.request", "body": body, "more_body": False}]

    async def replayed():
        return pending.pop() if pending else await receive()

    return replayed


async def _send_invalid_request(send, message: str) -> None:
    error = {"message": message, "type": "invalid_request_error", "param": None, "code": None}
    await _send_json(send, 400, {"error": error})
