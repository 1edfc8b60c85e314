"""End to end: chat app -> the real gateway (in-process, on a socket) -> fake model servers."""

from __future__ import annotations

import asyncio
import time

import pytest

from backends.fake import throttled_ms
from gateway.app import create_app as create_gateway
from gateway.settings import GatewaySettings
from tests.chat_client.chat_helpers import event_names, parse_sse, reply_text

TEXT = "The quick brown fox jumps over the lazy dog again and again"


async def start_gateway(aiohttp_server, upstreams, **settings):
    backends = [{"name": up.name, "url": up.openai_url} for up in upstreams]
    server = await aiohttp_server(create_gateway(GatewaySettings(backends=backends, **settings)))
    return str(server.make_url("")).rstrip("/")


async def test_reply_streams_token_by_token_through_the_gateway(chat_app, upstream, aiohttp_server):
    model = await upstream(name="a", reply_text=TEXT, token_delay=0.04)
    gateway = await start_gateway(aiohttp_server, [model])
    browser = await (await chat_app(openai_base_url=gateway + "/v1")).open()
    chat_id = await browser.new_chat()

    started = time.monotonic()
    response = await browser.client.post(
        f"/api/chats/{chat_id}/messages", json={"content": "Say the fox line"}, headers=browser.headers()
    )
    arrivals = []
    raw = b""
    while True:
        block = await response.content.readuntil(b"\n\n")
        if not block:
            break
        raw += block
        arrivals.append((block.split(b"\n", 1)[0].decode(), time.monotonic() - started))
        if block.startswith((b"event: done", b"event: error")):
            break
    events = parse_sse(raw.decode())
    assert event_names(events) == ["user", "token", "done"]
    assert reply_text(events) == TEXT
    tokens = [t for name, t in arrivals if name == "event: token"]
    assert len(tokens) >= len(TEXT.split())
    # Streamed, not buffered: the first words arrive well before the last ones.
    assert tokens[-1] - tokens[0] >= 0.2

    request = model.chat_requests[0]
    assert request.stream and request.json["messages"][-1] == {"role": "user", "content": "Say the fox line"}
    assert [m["content"] for m in await browser.messages(chat_id)] == ["Say the fox line", TEXT]


async def test_gateway_failover_is_invisible_to_the_user(chat_app, upstream, aiohttp_server):
    busy = await upstream(name="busy", script=[throttled_ms(5000)])
    spare = await upstream(name="spare", reply_text="From the spare backend.")
    gateway = await start_gateway(aiohttp_server, [busy, spare], routing="round_robin")
    browser = await (await chat_app(openai_base_url=gateway + "/v1")).open()
    chat_id = await browser.new_chat()

    for _ in range(2):
        events = await browser.send(chat_id, "hello")
        assert event_names(events) == ["user", "token", "done"]
        assert reply_text(events) == "From the spare backend."
    assert spare.chat_count == 2


async def test_gateway_throttling_everywhere_reaches_the_user_as_a_clear_error(
    chat_app, upstream, aiohttp_server
):
    only = await upstream(name="only", script=[throttled_ms(20_000)] * 5)
    gateway = await start_gateway(aiohttp_server, [only], queue_timeout=0)
    browser = await (await chat_app(openai_base_url=gateway + "/v1")).open()
    chat_id = await browser.new_chat()

    events = await browser.send(chat_id, "anyone?")
    assert event_names(events) == ["user", "error"]
    error = events[-1].data
    assert error["code"] == "rate_limited", error
    assert "Try again in 20 s" in error["message"]  # the gateway passes the back-off hint through
    assert error["retry_message_id"] == events[0].data["message"]["id"]
    assert [m["role"] for m in await browser.messages(chat_id)] == ["user"]


@pytest.mark.parametrize("suffix", ["", "/openai/"])
async def test_azure_custom_host_uses_the_gateway_azure_route(chat_app, upstream, aiohttp_server, suffix):
    model = await upstream(name="a", reply_text="Hello from the Azure shape.")
    gateway = await start_gateway(aiohttp_server, [model])
    browser = await (
        await chat_app(
            openai_host="azure_custom",
            azure_openai_custom_url=gateway + suffix,
            azure_openai_chat_deployment="smollm2-135m-instruct",
            azure_openai_api_key="gateway-has-no-auth",
        )
    ).open()
    chat_id = await browser.new_chat()

    events = await browser.send(chat_id, "hi")
    assert event_names(events) == ["user", "token", "done"]
    assert reply_text(events) == "Hello from the Azure shape."
    assert model.chat_requests[0].json["messages"][-1]["content"] == "hi"


async def test_azure_custom_requests_have_azure_shape(chat_app, upstream):
    # Straight at a fake that speaks Azure, to see the path, the api-version and the api-key header.
    model = await upstream(name="azure", reply_text="ok", api_key="k-123", deployment="chat-deployment")
    browser = await (
        await chat_app(
            openai_host="azure_custom",
            azure_openai_custom_url=model.base_url,
            azure_openai_chat_deployment="chat-deployment",
            azure_openai_api_key="k-123",
            azure_openai_api_version="2024-10-21",
        )
    ).open()
    events = await browser.send(await browser.new_chat(), "hi")
    assert reply_text(events) == "ok"
    request = model.chat_requests[0]
    assert request.path == "/openai/deployments/chat-deployment/chat/completions"
    assert request.deployment == "chat-deployment"
    assert request.query["api-version"] == "2024-10-21"
    assert request.headers["api-key"] == "k-123"


@pytest.mark.parametrize("host", ["local", "azure_custom"])
async def test_the_gateway_key_is_sent_as_docker_compose_configures_it(
    chat_app, upstream, aiohttp_server, host
):
    model = await upstream(name="a", reply_text="Authorized.")
    gateway = await start_gateway(aiohttp_server, [model], api_keys=("gateway-key",))
    if host == "local":
        config = {"openai_base_url": gateway + "/v1", "openai_api_key": "gateway-key"}
    else:  # exactly docker-compose.yml's chat service
        config = {
            "openai_host": "azure_custom",
            "azure_openai_custom_url": gateway + "/openai",
            "azure_openai_chat_deployment": "smollm2-135m-instruct",
            "azure_openai_api_key": "gateway-key",
        }
    browser = await (await chat_app(**config)).open()
    events = await browser.send(await browser.new_chat(), "knock knock")
    assert reply_text(events) == "Authorized."

    wrong = await (
        await chat_app(**{**config, next(k for k in config if k.endswith("api_key")): "wrong"})
    ).open()
    error = (await wrong.send(await wrong.new_chat(), "knock knock"))[-1].data
    assert error["code"] == "rejected" and "HTTP 401" in error["message"]


@pytest.mark.parametrize("apis", [["chat"], ["chat", "responses"]], ids=["translated", "native"])
async def test_responses_mode_streams_through_the_gateway(chat_app, upstream, aiohttp_server, apis):
    """CHAT_MODEL_API=responses: the gateway's /v1/responses, translated to chat completions for a backend
    that serves only those, or passed to one that serves Responses natively."""
    model = await upstream(name="a", reply_text=TEXT, token_delay=0.01)
    backends = [{"name": "a", "url": model.openai_url, "apis": apis}]
    server = await aiohttp_server(create_gateway(GatewaySettings(backends=backends)))
    gateway = str(server.make_url("")).rstrip("/")
    browser = await (await chat_app(openai_base_url=gateway + "/v1", model_api="responses")).open()
    chat_id = await browser.new_chat()

    events = await browser.send(chat_id, "Say the fox line")
    assert event_names(events) == ["user", "token", "done"]
    assert reply_text(events) == TEXT
    (request,) = [r for r in model.requests if r.kind in ("chat", "responses")]
    assert request.kind == ("responses" if "responses" in apis else "chat") and request.stream
    assert [m["content"] for m in await browser.messages(chat_id)] == ["Say the fox line", TEXT]


@pytest.mark.parametrize("model_api", ["chat", "responses"])
async def test_stop_cancels_the_request_at_the_backend_through_the_gateway(
    chat_app, upstream, aiohttp_server, model_api
):
    model = await upstream(name="a", reply_text=TEXT * 40, token_delay=0.02)  # ~10 s unless stopped
    gateway = await start_gateway(aiohttp_server, [model])
    browser = await (await chat_app(openai_base_url=gateway + "/v1", model_api=model_api)).open()
    chat_id = await browser.new_chat()
    response = await browser.client.post(
        f"/api/chats/{chat_id}/messages", json={"content": "go on"}, headers=browser.headers()
    )
    question = parse_sse((await response.content.readuntil(b"\n\n")).decode())[0].data["message"]
    await response.content.readuntil(b"event: token")  # some text has arrived
    stop = await browser.client.post(
        f"/api/chats/{chat_id}/messages/{question['id']}/stop", json={}, headers=browser.headers()
    )
    assert await stop.json() == {"stopped": True}
    events = parse_sse((await response.read()).decode())
    assert events[-1].name == "error" and events[-1].data["code"] == "stopped"
    # The backend saw its client leave: its slot is free again, long before the reply would have ended.
    for _ in range(200):
        if model.requests and model.requests[-1].finished_at is not None:
            break
        await asyncio.sleep(0.01)
    (request,) = [r for r in model.requests if r.kind in ("chat", "responses")]
    assert request.cancelled and not request.completed
