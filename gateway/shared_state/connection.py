"""A Redis client for ``GATEWAY_STATE_URL``: the password from the URL, or an Entra ID token.

Azure Managed Redis and Azure Cache for Redis accept a Microsoft Entra token of an identity given an access
policy, with the identity's object id as the user name: no access key exists to leak or rotate. Tokens last
about an hour; ``EntraRedisCredentials`` fetches one before the last one ends and re-authenticates the pooled
connections with it (``AUTH``), so no connection is ever dropped for an expired token.

The client never retries by itself and never waits long: a command that fails is failed over to the local
view by the caller (fail open), which is faster than any retry.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
from collections.abc import AsyncIterator, Callable
from typing import Any

import orjson
from redis.asyncio import Redis
from redis.auth.token import SimpleToken
from redis.backoff import NoBackoff
from redis.credentials import CredentialProvider
from redis.retry import Retry

from gateway.logs import get_logger

# The scope of Azure Managed Redis and Azure Cache for Redis data-plane tokens.
REDIS_SCOPE = "https://redis.azure.com/.default"


def token_object_id(token: str) -> str:
    """The ``oid`` claim of a JWT (the identity's object id: Redis's user name for Entra authentication).

    Read, not verified: the token comes straight from Entra to us, and Redis verifies it.
    """
    try:
        payload = token.split(".")[1]
        claims = orjson.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
        return str(claims["oid"])
    except (IndexError, ValueError, KeyError, TypeError, orjson.JSONDecodeError) as exc:
        raise ValueError("the Entra token for Redis has no readable 'oid' claim") from exc


class EntraRedisCredentials(CredentialProvider):
    """(object id, token) for new connections; ``refresh_forever`` keeps the token fresh for all of them."""

    def __init__(self, credential: Any, *, wall: Callable[[], float], refresh_margin: float = 300.0) -> None:
        self._credential = credential
        self._wall = wall
        self._margin = refresh_margin
        self._username = ""
        self._token = ""
        self._expires_on = 0.0
        self._lock = asyncio.Lock()

    def get_credentials(self) -> tuple[str, str]:  # pragma: no cover - the asyncio client uses the async form
        return self._username, self._token

    async def get_credentials_async(self) -> tuple[str, str]:
        if self._wall() >= self._expires_on - self._margin:
            await self.fetch()
        return self._username, self._token

    async def fetch(self) -> None:
        async with self._lock:
            if self._wall() < self._expires_on - self._margin:
                return  # another caller fetched it meanwhile
            access = await self._credential.get_token(REDIS_SCOPE)
            self._username, self._token = token_object_id(access.token), access.token
            self._expires_on = float(access.expires_on)

    def seconds_until_refresh(self) -> float:
        return max(self._expires_on - self._margin - self._wall(), 1.0)

    async def refresh(self, redis: Redis) -> None:
        """Fetch the next token and AUTH every pooled connection with it (idle ones now, busy ones when done)."""
        await self.fetch()
        token = SimpleToken(self._token, self._expires_on * 1000, self._wall() * 1000, {"oid": self._username})
        await redis.connection_pool.re_auth_callback(token)

    async def refresh_forever(self, redis: Redis) -> None:
        """Before each token ends, ``refresh``."""
        while True:
            await asyncio.sleep(self.seconds_until_refresh())
            try:
                await self.refresh(redis)
            except Exception as exc:  # noqa: BLE001 - a failed refresh is retried; requests fail open meanwhile
                get_logger().warning("shared_state_token_refresh_failed", error=f"{type(exc).__name__}: {exc}")
                await asyncio.sleep(30.0)

    async def close(self) -> None:
        close = getattr(self._credential, "close", None)
        if close is not None:
            await close()


@contextlib.asynccontextmanager
async def redis_client(url: str, *, auth: str, deadline: float, credential: Any = None,
                       wall: Callable[[], float]) -> AsyncIterator[Redis]:
    """The client for the app's lifetime (one connection pool), with its token refresher if Entra is used."""
    options: dict[str, Any] = {
        # A connect or a command slower than this is given up: the request it serves fails open.
        "socket_connect_timeout": max(deadline, 0.5),
        "socket_timeout": 5.0,
        "retry": Retry(NoBackoff(), 0),
        "retry_on_error": [],
        "health_check_interval": 0,
    }
    entra = None
    if auth == "entra":
        if credential is None:
            from gateway.azure_auth import default_credential

            credential = default_credential()
        entra = EntraRedisCredentials(credential, wall=wall)
        options["credential_provider"] = entra
    redis = Redis.from_url(url, **options)
    refresher = asyncio.create_task(entra.refresh_forever(redis)) if entra is not None else None
    try:
        yield redis
    finally:
        if refresher is not None:
            refresher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await refresher
        await redis.aclose()
        if entra is not None:
            await entra.close()
