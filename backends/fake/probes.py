"""What load balancers and SDKs probe: GET /health (llama-server style) and the model list."""

from __future__ import annotations

from aiohttp import web

from .errors import error_for_status, loading_model_body
from .keys import UPSTREAM
from .responses import authorized, invalid_api_key, json_response


async def health(request: web.Request) -> web.Response:
    status = request.app[UPSTREAM].health_status
    if status == 200:
        return json_response({"status": "ok"})
    # 503 is what llama-server says while it loads the model; the gateway must not route there yet.
    return json_response(loading_model_body() if status == 503 else error_for_status(status), status=status)


async def models(request: web.Request) -> web.Response:
    upstream = request.app[UPSTREAM]
    if not authorized(request, upstream.api_key):
        return invalid_api_key()
    model = {"id": upstream.model, "object": "model", "created": 0, "owned_by": "fake"}
    return json_response({"object": "list", "data": [model]})
