"""Inbound Entra ID tokens, checked against a JWKS served on loopback with keys made in the test."""

from __future__ import annotations

from typing import Any

import openai
import pytest

from tests.gateway.conftest import CHAT
from tests.gateway.entra_helpers import APP_ID, LocalTenant, entra_settings, new_key


@pytest.fixture
async def tenant(aiohttp_server: Any) -> LocalTenant:
    local = LocalTenant()
    server = await aiohttp_server(local.app())
    local.url = str(server.make_url("")).rstrip("/")
    return local


async def test_a_valid_token_is_accepted(upstreams, gateway, tenant, clock):
    a = await upstreams(name="a", reply_text="hello entra")
    gw = await gateway([a], **entra_settings(tenant))
    async with gw.client(api_key=tenant.token(clock.wall())) as client:
        completion = await client.chat.completions.create(**CHAT)
    assert completion.choices[0].message.content == "hello entra"
    # The client's token is the gateway's business, never passed on to a backend.
    assert all("eyJ" not in value for value in a.chat_requests[0].headers.values())


async def test_keys_and_tokens_both_work_when_both_are_configured(upstreams, gateway, tenant, clock):
    a = await upstreams(name="a")
    gw = await gateway([a], api_keys=("static-key",), **entra_settings(tenant))
    for key in ("static-key", tenant.token(clock.wall())):
        async with gw.client(api_key=key) as client:
            assert (await client.chat.completions.create(**CHAT)).choices
    async with gw.client(api_key="wrong") as client:
        with pytest.raises(openai.AuthenticationError):
            await client.chat.completions.create(**CHAT)


def refusals(tenant: LocalTenant, now: float) -> dict[str, tuple[str, str]]:
    """name → (token, what the 401 must say)."""
    return {
        "expired": (tenant.token(now - 3600 - 61), "expired"),
        "not yet valid": (tenant.token(now, nbf=int(now) + 120), "not valid yet"),
        "wrong audience": (tenant.token(now, aud="https://management.azure.com"), "audience"),
        "wrong issuer": (tenant.token(now, iss="https://sts.windows.net/another-tenant/"), "issuer"),
        "bad signature": (tenant.token(now, key=new_key()), "signature"),
        "unknown kid": (tenant.token(now, kid="k9", key=new_key()), "key the tenant does not publish"),
        "no expiry": (tenant.token(now, exp=None), "not valid"),
        "not a jwt": ("eyJhbGciOi.garbage.x", "well-formed"),
    }


CASES = ["expired", "not yet valid", "wrong audience", "wrong issuer", "bad signature", "unknown kid", "no expiry",
         "not a jwt"]


@pytest.mark.parametrize("case", CASES)
async def test_bad_tokens_are_refused_with_an_openai_shaped_401(upstreams, gateway, tenant, clock, case):
    a = await upstreams(name="a")
    gw = await gateway([a], **entra_settings(tenant))
    token, reason = refusals(tenant, clock.wall())[case]
    async with gw.client(api_key=token) as client:
        with pytest.raises(openai.AuthenticationError) as caught:
            await client.chat.completions.create(**CHAT)
    assert caught.value.status_code == 401
    assert caught.value.body["code"] == "invalid_token"
    assert reason in caught.value.body["message"]
    assert a.chat_count == 0


async def test_leeway_tolerates_a_little_clock_skew(upstreams, gateway, tenant, clock):
    a = await upstreams(name="a")
    gw = await gateway([a], **entra_settings(tenant, entra_leeway=60))
    token = tenant.token(clock.wall() - 3600 - 30)  # expired 30 s ago
    async with gw.client(api_key=token) as client:
        assert (await client.chat.completions.create(**CHAT)).choices


async def test_allow_list_of_applications(upstreams, gateway, tenant, clock):
    a = await upstreams(name="a")
    gw = await gateway([a], **entra_settings(tenant, entra_allowed_clients=("someone-else", APP_ID)))
    async with gw.client(api_key=tenant.token(clock.wall())) as client:
        assert (await client.chat.completions.create(**CHAT)).choices
    stranger = tenant.token(clock.wall(), appid="cccccccc-0000-0000-0000-000000000003", oid="x")
    async with gw.client(api_key=stranger) as client:
        with pytest.raises(openai.AuthenticationError, match="not allowed"):
            await client.chat.completions.create(**CHAT)


async def test_keys_are_cached_and_refreshed_on_an_unknown_kid_at_most_once_per_interval(
    upstreams, gateway, tenant, clock
):
    a = await upstreams(name="a")
    gw = await gateway([a], **entra_settings(tenant, entra_jwks_refresh=300))
    async with gw.client(api_key=tenant.token(clock.wall())) as client:
        for _ in range(3):
            await client.chat.completions.create(**CHAT)
    assert tenant.fetches == 1
    # The tenant rotates in a new key: the first token signed with it is refused until the interval has
    # passed (a flood of made-up kids must not become a flood of JWKS fetches), then accepted.
    clock.advance(10)
    tenant.keys["k2"] = new_key()
    rotated = tenant.token(clock.wall(), kid="k2")
    async with gw.client(api_key=rotated) as client:
        for _ in range(3):
            with pytest.raises(openai.AuthenticationError):
                await client.chat.completions.create(**CHAT)
        assert tenant.fetches == 1
        clock.advance(300)
        assert (await client.chat.completions.create(**CHAT)).choices
    assert tenant.fetches == 2


async def test_an_unreachable_jwks_is_a_503_not_a_refusal(upstreams, gateway, tenant, clock):
    a = await upstreams(name="a")
    tenant.status = 500
    gw = await gateway([a], **entra_settings(tenant))
    async with gw.client(api_key=tenant.token(clock.wall())) as client:
        with pytest.raises(openai.InternalServerError) as caught:
            await client.chat.completions.create(**CHAT)
    assert caught.value.status_code == 503 and caught.value.body["code"] == "signing_keys_unavailable"


async def test_entra_only_gateway_refuses_anything_else(upstreams, gateway, tenant):
    a = await upstreams(name="a")
    gw = await gateway([a], **entra_settings(tenant))
    async with gw.client(api_key="just-a-key") as client:
        with pytest.raises(openai.AuthenticationError, match="Entra ID token"):
            await client.chat.completions.create(**CHAT)


async def test_an_async_token_provider_like_azure_identitys(upstreams, gateway, tenant, clock):
    a = await upstreams(name="a")
    gw = await gateway([a], **entra_settings(tenant))
    calls = 0

    async def token_provider() -> str:
        nonlocal calls
        calls += 1
        return tenant.token(clock.wall())

    async with openai.AsyncOpenAI(base_url=gw.url + "/openai/v1/", api_key=token_provider, max_retries=0) as c:
        assert (await c.chat.completions.create(**CHAT)).choices
    assert calls >= 1


def test_settings_read_entra_lists_from_the_environment(monkeypatch):
    from gateway.entra import policy_from_settings
    from gateway.settings import load_settings

    monkeypatch.setenv("GATEWAY_BACKENDS", "http://127.0.0.1:9/v1")
    monkeypatch.setenv("GATEWAY_ENTRA_TENANT_ID", "tid")
    monkeypatch.setenv("GATEWAY_ENTRA_ALLOWED_CLIENTS", "app-1, app-2")
    policy = policy_from_settings(load_settings())
    assert policy is not None
    assert policy.allowed_clients == {"app-1", "app-2"}
    assert policy.issuers == ("https://sts.windows.net/tid/", "https://login.microsoftonline.com/tid/v2.0")
    assert policy.jwks_url == "https://login.microsoftonline.com/tid/discovery/v2.0/keys"
    assert "https://cognitiveservices.azure.com" in policy.audiences


def test_an_issuer_without_a_tenant_needs_a_jwks_url(monkeypatch):
    from gateway.settings import ConfigError, load_settings

    monkeypatch.setenv("GATEWAY_BACKENDS", "http://127.0.0.1:9/v1")
    monkeypatch.setenv("GATEWAY_ENTRA_ISSUERS", "https://issuer.example/")
    with pytest.raises(ConfigError, match="GATEWAY_ENTRA_JWKS_URL"):
        load_settings()


async def test_a_remembered_token_still_expires(upstreams, gateway, tenant, clock):
    a = await upstreams(name="a")
    gw = await gateway([a], **entra_settings(tenant, entra_leeway=0))
    async with gw.client(api_key=tenant.token(clock.wall())) as client:
        for _ in range(3):
            assert (await client.chat.completions.create(**CHAT)).choices
        clock.advance(3601)
        with pytest.raises(openai.AuthenticationError, match="expired"):
            await client.chat.completions.create(**CHAT)
