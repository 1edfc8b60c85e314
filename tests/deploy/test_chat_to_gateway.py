"""The chat app's AZURE_OPENAI_CUSTOM_URL, as compose and Bicep set it, leads the openai SDK to a route the
gateway serves: the SDK is pointed at a recording server with the same path, and the path it requested is
resolved against the gateway's own URL table."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

import pytest
from aiohttp import web
from aiohttp.test_utils import make_mocked_request

from gateway.guard import Guard
from gateway.routes import NO_ROUTE, setup_routes
from tests.deploy import bicep
from tests.deploy.compose import interpolate, load_compose, read_env_file

COMPLETION = {
    "id": "chatcmpl-1",
    "object": "chat.completion",
    "created": 0,
    "model": "smollm2-135m-instruct",
    "choices": [{"index": 0, "message": {"role": "assistant", "content": "hi"}, "finish_reason": "stop"}],
}


def compose_chat_env() -> dict[str, str]:
    env = {**read_env_file(), "POSTGRES_PASSWORD": "p", "CHAT_SESSION_KEY": "k", "LLM_GATEWAY_API_KEY": "g"}
    return interpolate(load_compose(), env)["services"]["chat"]["environment"]


def bicep_chat_env() -> dict[str, Any]:
    gateway_uri = "https://ca-gateway-abc.internal.example.azurecontainerapps.io"
    env = bicep.app_env("chat", gateway=bicep.ns(outputs=bicep.ns(uri=gateway_uri)))
    return {item["name"]: item["value"] for item in env if "value" in item}


@pytest.mark.parametrize("source", ["compose", "bicep"])
async def test_custom_url_reaches_the_gateway_chat_route(source: str, aiohttp_server: Any) -> None:
    from chat_client.settings import ChatSettings
    from openai import AsyncAzureOpenAI

    env = compose_chat_env() if source == "compose" else bicep_chat_env()
    assert env["OPENAI_HOST"] == "azure_custom"
    requested: list[str] = []

    async def record(request: web.Request) -> web.Response:
        requested.append(request.path)
        return web.json_response(COMPLETION)

    recorder = web.Application()
    recorder.router.add_route("*", "/{tail:.*}", record)
    server = await aiohttp_server(recorder)
    path = urlsplit(env["AZURE_OPENAI_CUSTOM_URL"]).path
    api_version = ChatSettings.model_fields["azure_openai_api_version"].default
    client = AsyncAzureOpenAI(
        base_url=f"http://127.0.0.1:{server.port}{path}", api_key="k", api_version=api_version, max_retries=0
    )
    try:
        await client.chat.completions.create(
            model=env["AZURE_OPENAI_CHAT_DEPLOYMENT"], messages=[{"role": "user", "content": "hi"}]
        )
    finally:
        await client.close()

    gateway = web.Application()
    setup_routes(gateway, Guard(()))
    match = await gateway.router.resolve(make_mocked_request("POST", requested[0], app=gateway))
    assert match.route.resource.name != NO_ROUTE, f"the gateway has no route for {requested[0]}"
    assert match.get("deployment") == env["AZURE_OPENAI_CHAT_DEPLOYMENT"]
