"""The PostgreSQL password as a Microsoft Entra ID token, for Azure Database for PostgreSQL without passwords.

With DATABASE_AZURE_AUTH=true the chat app signs in as its managed identity (AZURE_CLIENT_ID picks it):
DATABASE_URL names the user (the identity's name, as the server's Entra administrator knows it) and carries
no password; asyncpg calls `EntraPassword()` for every new connection, which returns a token for the OSS
RDBMS resource. azure-identity caches the token and renews it before it expires, so the call is cheap on a
warm pool, and a pooled connection outlives its token (the server checks the token only at sign-in).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any, Protocol

from sqlalchemy.ext.asyncio import AsyncEngine

from chat_client.database import create_engine
from chat_client.settings import ChatSettings

# The resource every Azure Database for PostgreSQL server accepts tokens for.
POSTGRES_SCOPE = "https://ossrdbms-aad.database.windows.net/.default"


class _Token(Protocol):
    @property
    def token(self) -> str: ...


class TokenCredential(Protocol):
    """What azure-identity's async credentials offer (and a test's stand-in)."""

    async def get_token(self, *scopes: str, **kwargs: Any) -> _Token: ...


class EntraPassword:
    """A password callable for asyncpg: a fresh (or cached) token at every connection."""

    def __init__(self, credential: TokenCredential) -> None:
        self._credential = credential

    async def __call__(self) -> str:
        return (await self._credential.get_token(POSTGRES_SCOPE)).token


@asynccontextmanager
async def open_engine(
    settings: ChatSettings, credential: TokenCredential | None = None
) -> AsyncIterator[AsyncEngine]:
    """The app's engine for its settings, disposed (and its credential closed) on exit. `credential`: a
    test's stand-in for the managed identity."""
    if not settings.database_azure_auth:
        engine = create_engine(settings.resolved_database_url)
        try:
            yield engine
        finally:
            await engine.dispose()
        return
    if credential is not None:
        engine = create_engine(settings.resolved_database_url, password=EntraPassword(credential))
        try:
            yield engine
        finally:
            await engine.dispose()
        return
    from azure.identity.aio import DefaultAzureCredential

    default = DefaultAzureCredential(managed_identity_client_id=settings.azure_client_id)
    try:
        async with open_engine(settings, default) as engine:
            yield engine
    finally:
        await default.close()
