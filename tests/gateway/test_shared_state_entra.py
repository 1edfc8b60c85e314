"""Entra authentication to Redis (GATEWAY_STATE_AUTH=entra), against a real redis-server whose ACL user is the
identity's object id and whose password is its current token, as on Azure Managed Redis."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from redis.asyncio import Redis

from gateway.clock import ManualClock
from gateway.shared_state.connection import REDIS_SCOPE, redis_client, token_object_id
from tests.gateway.redis_server import RedisServer, redis_server

OID = "6f1c2d9e-0000-4000-8000-00000000abcd"


def jwt(claims: dict[str, object]) -> str:
    def part(data: dict[str, object]) -> str:
        return base64.urlsafe_b64encode(json.dumps(data).encode()).decode().rstrip("=")

    return f"{part({'alg': 'none'})}.{part(claims)}.signature"


@dataclass
class AccessToken:
    token: str
    expires_on: int


class FakeCredential:
    """azure-identity's async credential shape: each get_token hands out the next token, valid for an hour."""

    def __init__(self, clock: ManualClock) -> None:
        self.clock = clock
        self.scopes: list[str] = []
        self.closed = False

    async def get_token(self, scope: str) -> AccessToken:
        self.scopes.append(scope)
        token = jwt({"oid": OID, "n": len(self.scopes)})
        return AccessToken(token, int(self.clock.wall()) + 3600)

    async def close(self) -> None:
        self.closed = True


@pytest.fixture(scope="module")
def server() -> Iterator[RedisServer]:
    with redis_server() as running:
        yield running


async def allow(server: RedisServer, password: str) -> None:
    """The Redis side of an access policy: the identity may log in with this token (and no other)."""
    admin = Redis.from_url(server.url)
    await admin.execute_command("ACL", "SETUSER", OID, "on", "resetpass", f">{password}", "~*", "&*", "+@all")
    await admin.aclose()


async def auth_calls(server: RedisServer) -> int:
    admin = Redis.from_url(server.url)
    stats = await admin.info("commandstats")
    await admin.aclose()
    return int(stats.get("cmdstat_auth", {}).get("calls", 0))


def test_the_user_name_is_the_tokens_object_id():
    assert token_object_id(jwt({"oid": OID})) == OID
    with pytest.raises(ValueError, match="oid"):
        token_object_id("not-a-jwt")
    with pytest.raises(ValueError, match="oid"):
        token_object_id(jwt({"sub": "someone"}))


async def test_connects_with_a_token_and_reauthenticates_open_connections_before_it_expires(server):
    clock = ManualClock(wall_start=1_800_000_000.0)
    credential = FakeCredential(clock)
    await allow(server, jwt({"oid": OID, "n": 1}))
    async with redis_client(server.url, auth="entra", deadline=1.0, credential=credential, wall=clock.wall) as redis:
        assert await redis.execute_command("ACL", "WHOAMI") == OID.encode()
        provider = redis.connection_pool.connection_kwargs["credential_provider"]
        assert credential.scopes == [REDIS_SCOPE]

        clock.advance(3600 - 200)  # inside the refresh margin: the next token, and only it, is accepted now
        await allow(server, jwt({"oid": OID, "n": 2}))
        auths = await auth_calls(server)
        await provider.refresh(redis)
        assert len(credential.scopes) == 2
        assert await auth_calls(server) == auths + 1  # the pooled connection, AUTHed again with the new token
        assert await redis.execute_command("ACL", "WHOAMI") == OID.encode()
        await redis.connection_pool.disconnect()
        assert await redis.ping()  # a new connection logs in with the new token
    assert credential.closed


async def test_the_url_password_is_used_when_not_entra(server):
    admin = Redis.from_url(server.url)
    await admin.execute_command("ACL", "SETUSER", "gateway", "on", ">s3cret", "~*", "&*", "+@all")
    await admin.aclose()
    url = server.url.replace("redis://", "redis://gateway:s3cret@")
    async with redis_client(url, auth="url", deadline=1.0, wall=ManualClock().wall) as redis:
        assert await redis.execute_command("ACL", "WHOAMI") == b"gateway"
