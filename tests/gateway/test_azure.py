"""Azure shapes on both sides: AzureOpenAI clients in front, Azure OpenAI deployments behind (key or Entra ID)."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import openai

from tests.gateway.conftest import CHAT


async def test_azure_client_through_the_deployment_route(upstreams, gateway):
    a = await upstreams(name="a", reply_text="hello azure")
    gw = await gateway([a])
    async with gw.azure_client() as client:
        raw = await client.chat.completions.with_raw_response.create(
            model="my-deployment", messages=CHAT["messages"]
        )
    assert raw.parse().choices[0].message.content == "hello azure"
    assert raw.headers["x-gateway-backend"] == "a"
    assert a.chat_requests[0].json["model"] == "my-deployment"


async def test_azure_client_streams(upstreams, gateway):
    a = await upstreams(name="a", reply_text="streamed to azure")
    gw = await gateway([a])
    async with gw.azure_client() as client:
        stream = await client.chat.completions.create(model="d", messages=CHAT["messages"], stream=True)
        text = "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])
    assert text == "streamed to azure"


async def test_openai_v1_route_for_azure_custom_apps(upstreams, gateway):
    a = await upstreams(name="a")
    gw = await gateway([a])
    async with openai.AsyncOpenAI(base_url=gw.url + "/openai/v1", api_key="x", max_retries=0) as client:
        completion = await client.chat.completions.create(**CHAT)
    assert completion.choices[0].message.content


async def test_sync_azure_client(upstreams, gateway):
    a = await upstreams(name="a", reply_text="sync azure")
    gw = await gateway([a])

    def run() -> str:
        with openai.AzureOpenAI(azure_endpoint=gw.url, api_key="x", api_version="2024-10-21", max_retries=0) as c:
            return c.chat.completions.create(model="d", messages=CHAT["messages"]).choices[0].message.content

    assert await asyncio.to_thread(run) == "sync azure"


async def test_azure_backend_with_api_key(upstreams, gateway):
    az = await upstreams(name="az", api_key="azure-key", deployment="gpt-4o-mini")
    gw = await gateway([{"name": "az", "url": az.base_url, "kind": "azure", "deployment": "gpt-4o-mini",
                         "api_key": "azure-key", "api_version": "2024-06-01"}])
    async with gw.client() as client:
        completion = await client.chat.completions.create(**CHAT)
    assert completion.choices[0].message.content
    seen = az.chat_requests[0]
    assert seen.deployment == "gpt-4o-mini"
    assert seen.query["api-version"] == "2024-06-01"
    assert seen.headers["api-key"] == "azure-key" and "authorization" not in seen.headers


@dataclass
class _AccessToken:
    token: str
    expires_on: int


class FakeCredential:
    def __init__(self, expires_on: float) -> None:
        self.calls = 0
        self.closed = False
        self.expires_on = expires_on

    async def get_token(self, *scopes: str) -> _AccessToken:
        assert scopes == ("https://cognitiveservices.azure.com/.default",)
        self.calls += 1
        await asyncio.sleep(0.01)  # a slow token endpoint: concurrent requests must share one fetch
        return _AccessToken(f"entra-token-{self.calls}", int(self.expires_on))

    async def close(self) -> None:
        self.closed = True


async def test_azure_backend_with_entra_id_token_cached_and_refreshed(upstreams, gateway, clock):
    az = await upstreams(name="az", api_key="entra-token-1")
    credential = FakeCredential(expires_on=clock.wall() + 3600)
    gw = await gateway([{"name": "az", "url": az.base_url, "kind": "azure", "deployment": "d"}],
                       azure_credential=credential)
    async with gw.client() as client:
        await asyncio.gather(*(client.chat.completions.create(**CHAT) for _ in range(5)))
        assert credential.calls == 1  # fetched once, not per request
        assert az.chat_requests[0].headers["authorization"] == "Bearer entra-token-1"
        az.api_key = "entra-token-2"
        credential.expires_on = clock.wall() + 7200
        clock.advance(3600 - 299)  # inside the refresh margin
        await client.chat.completions.create(**CHAT)
    assert credential.calls == 2
    assert az.chat_requests[-1].headers["authorization"] == "Bearer entra-token-2"
    await gw.close()
    assert credential.closed


class BrokenCredential:
    async def get_token(self, *scopes: str):
        raise RuntimeError("no managed identity here")

    async def close(self) -> None:
        pass


async def test_entra_failure_is_a_clean_gateway_error(upstreams, gateway):
    az = await upstreams(name="az")
    gw = await gateway([{"name": "az", "url": az.base_url, "kind": "azure", "deployment": "d"}],
                       azure_credential=BrokenCredential(), max_attempts=1)
    async with gw.client() as client:
        try:
            await client.chat.completions.create(**CHAT)
        except openai.InternalServerError as error:
            assert error.status_code == 502
            assert "Entra ID token" in error.message
        else:
            raise AssertionError("expected a 502")
    assert az.chat_count == 0
