"""Entra ID tokens for Azure OpenAI backends configured without an ``api_key``.

The token is fetched once and reused until shortly before it expires, never per request; one refresh runs at
a time even when many requests need a token at once. azure-identity's DefaultAzureCredential picks the managed
identity inside Azure (``AZURE_CLIENT_ID`` selects a user-assigned one) and developer credentials locally.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

COGNITIVE_SERVICES_SCOPE = "https://cognitiveservices.azure.com/.default"


class EntraTokenProvider:
    def __init__(
        self,
        credential: Any,
        *,
        wall: Callable[[], float],
        scope: str = COGNITIVE_SERVICES_SCOPE,
        refresh_margin: float = 300.0,
    ) -> None:
        self._credential = credential
        self._wall = wall
        self._scope = scope
        self._refresh_margin = refresh_margin
        self._token: str | None = None
        self._expires_on = 0.0
        self._lock = asyncio.Lock()
        self.fetches = 0

    async def __call__(self) -> str:
        if self._token is not None and self._wall() < self._expires_on - self._refresh_margin:
            return self._token
        async with self._lock:
            if self._token is None or self._wall() >= self._expires_on - self._refresh_margin:
                access = await self._credential.get_token(self._scope)
                self.fetches += 1
                self._token, self._expires_on = access.token, float(access.expires_on)
        return self._token

    async def close(self) -> None:
        close = getattr(self._credential, "close", None)
        if close is not None:
            await close()


def default_credential() -> Any:
    """DefaultAzureCredential (async); a clear error if the optional dependency is missing."""
    try:
        from azure.identity.aio import DefaultAzureCredential
    except ImportError as exc:  # pragma: no cover - depends on the install
        raise RuntimeError(
            "an azure backend has no api_key, so the gateway needs azure-identity for Entra ID tokens: "
            "pip install 'llm-gateway[azure]'"
        ) from exc
    return DefaultAzureCredential()
