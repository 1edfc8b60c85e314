"""Done when: an app written like Microsoft's quickstart (Responses API, Azure v1 base URL, bearer token
provider) streams replies through the gateway, unchanged but for its endpoint — from an Azure-shaped backend
that serves Responses itself, and from a chat-only backend the gateway translates for."""

from __future__ import annotations

import json
import time
from typing import Any, Self

import pytest
from azure.core.credentials import AccessToken

from tests.gateway.entra_helpers import LocalTenant, entra_settings
from tests.gateway.quickstart_app import create_app


class LocalCredential:
    """Stands in for ManagedIdentityCredential: tokens for the asked scope, signed by the test's tenant."""

    def __init__(self, tenant: LocalTenant, wall: Any) -> None:
        self.tenant, self.wall, self.scopes = tenant, wall, []

    async def get_token(self, *scopes: str, **kwargs: Any) -> AccessToken:
        self.scopes.append(scopes)
        return AccessToken(self.tenant.token(self.wall()), int(time.time()) + 3600)

    async def close(self) -> None:
        pass

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        pass


@pytest.fixture
async def tenant(aiohttp_server: Any) -> LocalTenant:
    local = LocalTenant()
    server = await aiohttp_server(local.app())
    local.url = str(server.make_url("")).rstrip("/")
    return local


@pytest.mark.parametrize("backend_kind", ["azure", "llamacpp"])
async def test_the_quickstart_app_streams_through_the_gateway(
    upstreams, gateway, tenant, clock, aiohttp_client, monkeypatch, backend_kind
):
    reply = "Hello from behind the gateway, streamed token by token."
    backend = await upstreams(name="backend", reply_text=reply, deployment="gpt-4o-mini", api_key="upstream-key")
    if backend_kind == "azure":
        config = {"name": "backend", "url": backend.base_url, "kind": "azure", "deployment": "gpt-4o-mini",
                  "api_key": "upstream-key"}
    else:
        config = {"name": "backend", "url": backend.openai_url, "kind": "llamacpp", "api_key": "upstream-key"}
    gw = await gateway([config], **entra_settings(tenant))

    monkeypatch.setenv("AZURE_OPENAI_ENDPOINT", gw.url)  # the one change: the gateway's address
    monkeypatch.setenv("AZURE_OPENAI_CHAT_DEPLOYMENT", "gpt-4o-mini")
    credential = LocalCredential(tenant, clock.wall)
    app = await aiohttp_client(create_app(credential))
    for turn in range(2):
        messages = [{"role": "user", "content": f"Say hello ({turn})"}]
        answer = await app.post("/chat/stream", json={"messages": messages})
        assert answer.status == 200
        lines = [json.loads(line) for line in (await answer.text()).splitlines()]
        assert "error" not in lines[-1], lines[-1]
        assert "".join(line["delta"]["content"] for line in lines) == reply
        assert len(lines) == len(reply.split())  # streamed: one delta per token, not one lump

    served = [r for r in backend.requests if r.kind in ("responses", "chat")]
    assert [r.kind for r in served] == ["responses" if backend_kind == "azure" else "chat"] * 2
    assert credential.scopes[0] == ("https://cognitiveservices.azure.com/.default",)
    # The app's Entra token stopped at the gateway; the backend got the gateway's own credential.
    # An Azure backend takes its key as api-key; any other as a bearer token.
    if backend_kind == "azure":
        assert [(r.headers.get("api-key"), r.headers.get("authorization")) for r in served] == [
            ("upstream-key", None)] * 2
    else:
        assert [(r.headers.get("api-key"), r.headers.get("authorization")) for r in served] == [
            (None, "Bearer upstream-key")] * 2
    if backend_kind == "azure":
        assert served[0].path == "/openai/v1/responses" and served[0].json["store"] is False
    else:
        assert served[0].json["messages"][0] == {"role": "system", "content": "You are a helpful assistant."}


async def test_without_a_valid_token_the_app_gets_nothing(upstreams, gateway, tenant, aiohttp_client, monkeypatch):
    backend = await upstreams(name="backend")
    gw = await gateway([{"name": "backend", "url": backend.openai_url}], **entra_settings(tenant))
    monkeypatch.setenv("AZURE_OPENAI_ENDPOINT", gw.url)
    monkeypatch.setenv("AZURE_OPENAI_CHAT_DEPLOYMENT", "gpt-4o-mini")
    expired = LocalCredential(tenant, lambda: 1_000_000_000.0)  # tokens from 2001
    app = await aiohttp_client(create_app(expired))
    answer = await app.post("/chat/stream", json={"messages": [{"role": "user", "content": "hi"}]})
    [line] = [json.loads(line) for line in (await answer.text()).splitlines()]
    assert "expired" in line["error"]
    assert backend.requests == []
