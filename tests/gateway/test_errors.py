"""Every bad input gets a clear OpenAI-shaped error with the status the SDK maps to the right exception."""

from __future__ import annotations

import asyncio
import uuid

import aiohttp
import openai
import orjson
import pytest

from gateway.guard import Guard
from tests.gateway.conftest import chat


async def post_raw(gw, data: bytes, headers=None, path="/v1/chat/completions"):
    headers = headers or {"Content-Type": "application/json"}
    async with aiohttp.ClientSession() as http, http.post(gw.url + path, data=data, headers=headers) as r:
        return r.status, await r.json(), r.headers


@pytest.mark.parametrize(
    ("body", "code"),
    [
        (b"{not json", "invalid_json"),
        (b"", "invalid_json"),
        (b'["a list"]', "invalid_json"),
        (b'{"model": "m"}', "missing_required_parameter"),
        (b'{"model": "m", "messages": "hi"}', "invalid_request"),
        (b'{"model": "m", "messages": [{"role": "robot", "content": "x"}]}', "invalid_request"),
    ],
)
async def test_malformed_requests_are_400_and_never_reach_a_backend(upstreams, gateway, body, code):
    a = await upstreams(name="a")
    gw = await gateway([a])
    status, payload, headers = await post_raw(gw, body)
    assert status == 400
    assert payload["error"]["code"] == code and payload["error"]["type"] == "invalid_request_error"
    assert payload["error"]["message"]
    assert headers["x-request-id"]
    assert a.chat_count == 0


async def test_sdk_sees_bad_request_error_for_missing_messages(upstreams, gateway):
    a = await upstreams(name="a")
    gw = await gateway([a])
    async with gw.client() as client:
        with pytest.raises(openai.BadRequestError) as caught:
            await client.chat.completions.create(model="fake-model", messages=[])
    assert caught.value.param == "messages"


async def test_body_over_the_limit_is_413(upstreams, gateway):
    a = await upstreams(name="a")
    gw = await gateway([a], max_body_bytes=2048)
    big = [{"role": "user", "content": "x" * 4096}]
    async with gw.client() as client:
        with pytest.raises(openai.APIStatusError) as caught:
            await client.chat.completions.create(model="fake-model", messages=big)
    assert caught.value.status_code == 413
    assert caught.value.code == "request_too_large"
    # A chunked body with no Content-Length is caught while reading.
    async def chunks():
        yield b'{"messages": [{"role": "user", "content": "' + b"y" * 4096 + b'"}]}'

    async with aiohttp.ClientSession() as http, http.post(gw.url + "/v1/chat/completions", data=chunks()) as response:
        assert response.status == 413
        assert (await response.json())["error"]["code"] == "request_too_large"
    assert a.chat_count == 0


async def test_inbound_api_keys(upstreams, gateway):
    a = await upstreams(name="a")
    gw = await gateway([a], api_keys="k1, k2")
    async with gw.client(api_key="wrong") as client:
        with pytest.raises(openai.AuthenticationError):
            await chat(client)
    async with gw.client(api_key="k2") as client:
        assert (await chat(client)).headers["x-gateway-backend"] == "a"
    async with gw.azure_client(api_key="k1") as client:  # sent as the api-key header
        assert (await chat(client)).headers["x-gateway-backend"] == "a"
    status, payload, _ = await post_raw(gw, b"{}", headers={"Content-Type": "application/json"})
    assert status == 401 and payload["error"]["code"] == "invalid_api_key"
    async with aiohttp.ClientSession() as http, http.get(gw.url + "/healthz") as response:
        assert response.status == 200  # probes need no key
    # The client's key is never passed upstream.
    assert all("authorization" not in r.headers and "api-key" not in r.headers for r in a.requests)


async def test_unknown_model_is_404(upstreams, gateway):
    a = await upstreams(name="a")
    gw = await gateway([{"name": "a", "url": a.openai_url, "models": ["fake-model"]}])
    async with gw.client() as client:
        with pytest.raises(openai.NotFoundError) as caught:
            await chat(client, model="gpt-9")
    assert caught.value.code == "model_not_found"
    assert a.chat_count == 0


async def test_unknown_path_and_wrong_method_are_json(upstreams, gateway):
    a = await upstreams(name="a")
    gw = await gateway([a])
    async with aiohttp.ClientSession() as http:
        async with http.get(gw.url + "/v1/nothing") as response:
            assert response.status == 404
            assert (await response.json())["error"]["code"] == "http_404"
        async with http.get(gw.url + "/v1/chat/completions") as response:
            assert response.status == 405
            assert "POST" in response.headers["Allow"]
            assert (await response.json())["error"]["code"] == "http_405"
        async with http.post(gw.url + "/healthz") as response:
            assert response.status == 405
            assert set(response.headers["Allow"].split(",")) >= {"GET", "HEAD"}
        azure_path = "/openai/deployments/d1/chat/completions?api-version=2024-10-21"
        async with http.delete(gw.url + azure_path) as response:
            assert response.status == 405
        async with http.get(gw.url + "/") as response:
            assert response.status == 404
            assert response.headers["x-request-id"]
            assert (await response.json())["error"]["code"] == "http_404"
    assert a.chat_count == 0


async def test_unknown_paths_need_the_key_like_any_other(upstreams, gateway):
    a = await upstreams(name="a")
    gw = await gateway([a], api_keys="k1")
    async with aiohttp.ClientSession() as http:
        async with http.get(gw.url + "/v1/nothing") as response:
            assert response.status == 401
        async with http.get(gw.url + "/v1/nothing", headers={"Authorization": "Bearer k1"}) as response:
            assert response.status == 404


def test_request_ids_are_unique_uuids_per_guard():
    first, second = Guard(()), Guard(())
    ids = {first.new_request_id() for _ in range(1000)} | {second.new_request_id() for _ in range(1000)}
    assert len(ids) == 2000
    assert all(len(i) == 32 and uuid.UUID(i).hex == i for i in ids)


async def test_upstream_auth_comes_from_config(upstreams, gateway):
    a = await upstreams(name="a", api_key="upstream-secret")
    gw = await gateway([{"name": "a", "url": a.openai_url, "api_key": "upstream-secret"}])
    async with gw.client(api_key="client-key") as client:
        raw = await chat(client)
    assert raw.parse().choices[0].message.content
    assert a.chat_requests[0].headers["authorization"] == "Bearer upstream-secret"


async def test_wrong_upstream_key_is_passed_through_not_retried(upstreams, gateway):
    a = await upstreams(name="a", api_key="right")
    gw = await gateway([{"name": "a", "url": a.openai_url, "api_key": "wrong"}])
    async with gw.client() as client:
        with pytest.raises(openai.AuthenticationError):
            await chat(client)
    assert a.chat_count == 1


async def test_no_messages_content_or_keys_in_logs(upstreams, gateway, capfd):
    a = await upstreams(name="a", api_key="upstream-secret")
    gw = await gateway([{"name": "a", "url": a.openai_url, "api_key": "upstream-secret"}], api_keys="inbound-secret")
    async with gw.client(api_key="inbound-secret") as client:
        await chat(client, messages=[{"role": "user", "content": "my very private question"}])
        with pytest.raises(openai.AuthenticationError):
            async with gw.client(api_key="guess") as bad:
                await chat(bad)
    out = capfd.readouterr().out
    assert '"event":"request"' in out and '"backend":"a"' in out
    for secret in ("upstream-secret", "inbound-secret", "my very private question", "guess"):
        assert secret not in out


async def test_a_body_that_trickles_in_is_read_whole_and_forwarded_as_sent(upstreams, gateway):
    """Most bodies arrive with their headers and are taken in one piece; this one comes in parts, later."""
    a = await upstreams(name="a")
    gw = await gateway([a], max_body_bytes=4096)
    body = orjson.dumps({"model": "fake-model", "messages": [{"role": "user", "content": "slow " * 100}]})

    async def trickle():
        for start in range(0, len(body), 100):
            await asyncio.sleep(0.01)
            yield body[start:start + 100]

    async with aiohttp.ClientSession() as http:
        async with http.post(gw.url + "/v1/chat/completions", data=trickle(),
                             headers={"Content-Type": "application/json"}) as response:
            assert response.status == 200
            assert (await response.json())["choices"][0]["message"]["content"]
        async with http.post(gw.url + "/v1/chat/completions", data=trickle(),
                             headers={"Content-Type": "application/json", "Content-Length": str(len(body))}
                             ) as response:
            assert response.status == 200
    assert a.chat_count == 2
    assert [orjson.dumps(request.json) for request in a.chat_requests] == [body, body]
