"""``GET /v1/models``: the models the backends serve, asked of them and cached briefly.

A backend's ``models`` setting, when given, is the answer for it; an Azure backend serves its deployment; the
others are asked (``{url}/models``). Unreachable backends are left out rather than failing the listing.
"""

from __future__ import annotations

import asyncio
from typing import Any

import orjson

from gateway.balancer import Balancer
from gateway.settings import BackendConfig, BackendKind
from gateway.upstream import UpstreamClient


class ModelsCatalog:
    def __init__(self, balancer: Balancer, upstream: UpstreamClient, ttl: float = 30.0) -> None:
        self._balancer = balancer
        self._upstream = upstream
        self._ttl = ttl
        self._cached: dict[str, Any] | None = None
        self._cached_at = 0.0

    async def listing(self) -> dict[str, Any]:
        now = self._balancer.now()
        if self._cached is None or now - self._cached_at > self._ttl:
            backends = [state.config for state in self._balancer.states]
            found = await asyncio.gather(*(self._models_of(backend) for backend in backends))
            owners: dict[str, list[str]] = {}
            for backend, models in zip(backends, found):
                for model in models:
                    owners.setdefault(model, []).append(backend.name)
            self._cached = {
                "object": "list",
                "data": [
                    {"id": model, "object": "model", "created": 0, "owned_by": ",".join(names)}
                    for model, names in owners.items()
                ],
            }
            self._cached_at = now
        return self._cached

    async def _models_of(self, backend: BackendConfig) -> list[str]:
        if backend.models is not None:
            return list(backend.models)
        if backend.kind is BackendKind.AZURE:
            return [backend.deployment or backend.name]
        status, body = await self._upstream.probe(backend.url + "/models", backend)
        if status != 200:
            return []
        try:
            data = orjson.loads(body).get("data", [])
            return [item["id"] for item in data if isinstance(item, dict) and isinstance(item.get("id"), str)]
        except (orjson.JSONDecodeError, AttributeError, TypeError):
            return []
