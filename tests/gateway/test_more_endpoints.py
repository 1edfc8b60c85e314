"""Embeddings, legacy completions and model lookups through the gateway, with the official SDK; the routing,
failover, cooldown, log lines and metrics they share with chat completions; bad input → 400, never 500."""

from __future__ import annotations

import asyncio
import base64
import struct
from typing import Any

import aiohttp
import openai
import orjson
import pytest

from backends.fake import Reply, throttled
from backends.fake.embeddings import embedding_of
from tests.gateway.test_observability import log_lines


def floats(encoded: str) -> list[float]:
    raw = base64.b64decode(encoded)
    return list(struct.unpack(f"<{len(raw) // 4}f", raw))


@pytest.mark.parametrize("encoding", ["float", "base64"])
async def test_embeddings_single_and_batch(upstreams, gateway, encoding):
    a = await upstreams(name="a")
    gw = await gateway([a])
    async with gw.client() as client:
        one = await client.embeddings.create(model="emb", input="hello", encoding_format=encoding)
        batch = await client.embeddings.create(model="emb", input=["hello", "world", "again"],
                                               encoding_format=encoding)
    expected = [embedding_of("emb", text) for text in ("hello", "world", "again")]
    if encoding == "float":
        assert one.data[0].embedding == expected[0]
        assert [d.embedding for d in batch.data] == expected
    else:
        # The gateway relays the bytes: base64 of the same float32 vector.
        assert floats(one.data[0].embedding) == expected[0]
        assert [floats(d.embedding) for d in batch.data] == expected
    assert [d.index for d in batch.data] == [0, 1, 2]
    assert batch.usage.prompt_tokens == batch.usage.total_tokens > 0
    assert [r.kind for r in a.requests] == ["embeddings", "embeddings"]


async def test_embeddings_without_encoding_format_from_the_sdk(upstreams, gateway):
    # The SDK asks for base64 by default and decodes it: the caller sees floats either way.
    a = await upstreams(name="a")
    gw = await gateway([a])
    async with gw.client() as client:
        result = await client.embeddings.create(model="emb", input="hello")
    assert result.data[0].embedding == pytest.approx(embedding_of("emb", "hello"))


async def test_embeddings_from_azure_clients(upstreams, gateway):
    a = await upstreams(name="a")
    gw = await gateway([a])
    async with gw.azure_client() as azure:
        classic = await azure.embeddings.create(model="my-embedding-deployment", input="x", encoding_format="float")
    async with openai.AsyncOpenAI(base_url=gw.url + "/openai/v1/", api_key="k", max_retries=0) as v1:
        modern = await v1.embeddings.create(model="my-embedding-deployment", input="x", encoding_format="float")

    def sync() -> list[float]:
        with openai.AzureOpenAI(azure_endpoint=gw.url, api_key="k", api_version="2024-10-21", max_retries=0) as c:
            return c.embeddings.create(model="my-embedding-deployment", input="x", encoding_format="float").data[
                0].embedding

    assert classic.data[0].embedding == modern.data[0].embedding == await asyncio.to_thread(sync)
    assert [r.json["model"] for r in a.requests] == ["my-embedding-deployment"] * 3


async def test_to_an_azure_backend_every_api_goes_to_its_deployment(upstreams, gateway):
    az = await upstreams(name="az", api_key="azure-key", deployment="prod-4o")
    gw = await gateway([{"name": "az", "url": az.base_url, "kind": "azure", "deployment": "prod-4o",
                         "api_key": "azure-key"}])
    async with gw.client() as client:
        await client.embeddings.create(model="whatever", input="x")
        await client.completions.create(model="whatever", prompt="x")
        response = await client.responses.create(model="whatever", input="x")
    assert response.output_text
    assert [(r.path, r.query.get("api-version")) for r in az.requests] == [
        ("/openai/deployments/prod-4o/embeddings", "2024-10-21"),
        ("/openai/deployments/prod-4o/completions", "2024-10-21"),
        ("/openai/v1/responses", None),
    ]
    assert az.requests[-1].json["model"] == "prod-4o"  # Azure's v1 API names the deployment as the model
    assert all(r.headers["api-key"] == "azure-key" for r in az.requests)


async def test_completions_stream_and_not(upstreams, gateway):
    a = await upstreams(name="a", reply_text="a legacy reply")
    gw = await gateway([a])
    async with gw.client() as client:
        whole = await client.completions.with_raw_response.create(model="m", prompt="Once upon")
        stream = await client.completions.create(model="m", prompt="Once upon", stream=True)
        text = "".join([chunk.choices[0].text async for chunk in stream if chunk.choices])
    assert whole.parse().choices[0].text == text == "a legacy reply"
    assert whole.headers["x-gateway-backend"] == "a"
    async with gw.azure_client() as azure:
        assert (await azure.completions.create(model="dep", prompt="x")).choices[0].text == "a legacy reply"


async def test_throttled_backend_is_skipped_for_every_api_once_per_window(upstreams, gateway, clock):
    a = await upstreams(name="a", default=throttled(3))
    b = await upstreams(name="b")
    gw = await gateway([a, b])
    async with gw.client() as client:
        for window in range(2):
            for _ in range(3):
                assert (await client.embeddings.create(model="m", input="x")).data
                assert (await client.completions.create(model="m", prompt="x")).choices
                stream = await client.completions.create(model="m", prompt="x", stream=True)
                assert [c async for c in stream]
            assert len(a.requests) == window + 1
            clock.advance(3.01)


async def test_failover_on_5xx(upstreams, gateway):
    a = await upstreams(name="a", default=Reply(status=502))
    b = await upstreams(name="b")
    gw = await gateway([a, b], routing="round_robin", eject_after_failures=100)
    async with gw.client() as client:
        for _ in range(4):
            raw = await client.embeddings.with_raw_response.create(model="m", input="x")
            assert raw.parse().data and raw.headers["x-gateway-backend"] == "b"
    assert len(a.requests) >= 1 and len(b.requests) == 4


async def test_a_backend_that_does_not_serve_the_api_is_skipped(upstreams, gateway):
    chat_only = await upstreams(name="chat-only")
    emb = await upstreams(name="emb")
    gw = await gateway([{"name": "chat-only", "url": chat_only.openai_url, "apis": ["chat"]},
                        {"name": "emb", "url": emb.openai_url, "apis": ["embeddings"]}])
    async with gw.client() as client:
        for _ in range(3):
            await client.embeddings.create(model="m", input="x")
            await client.chat.completions.create(model="m", messages=[{"role": "user", "content": "x"}])
        with pytest.raises(openai.NotFoundError, match="completions API"):
            await client.completions.create(model="m", prompt="x")
    assert [r.kind for r in chat_only.requests] == ["chat"] * 3
    assert [r.kind for r in emb.requests] == ["embeddings"] * 3


async def test_llamacpp_kind_gets_responses_translated_and_no_embeddings(upstreams, gateway):
    llama = await upstreams(name="llama")
    gw = await gateway([{"name": "llama", "url": llama.openai_url, "kind": "llamacpp"}])
    async with gw.client() as client:
        await client.responses.create(model="m", input="x")
        with pytest.raises(openai.NotFoundError, match="embeddings API"):
            await client.embeddings.create(model="m", input="x")
    assert [r.kind for r in llama.requests if r.kind == "chat" or r.kind == "embeddings"] == ["chat"]


async def test_log_lines_and_metrics_name_the_endpoint(upstreams, gateway, capfd):
    a = await upstreams(name="a", script=[throttled(5)])
    b = await upstreams(name="b")
    gw = await gateway([a, b])
    capfd.readouterr()
    async with gw.client() as client:
        await client.embeddings.create(model="m", input="hello there", extra_headers={"x-request-id": "e1"})
        await client.responses.create(model="m", input="hi", extra_headers={"x-request-id": "r1"})
    lines = log_lines(capfd.readouterr().out)
    e1 = [line for line in lines if line.get("request_id") == "e1"]
    assert [line["event"] for line in e1] == ["upstream_attempt", "upstream_attempt", "request"]
    assert e1[0]["outcome"] == "throttled" and e1[0]["cooldown_s"] == 5.0
    assert e1[-1]["path"] == "/v1/embeddings" and e1[-1]["backend"] == "b" and e1[-1]["prompt_tokens"] > 0
    r1 = next(line for line in lines if line.get("request_id") == "r1" and line["event"] == "request")
    assert r1["path"] == "/v1/responses" and r1["completion_tokens"] > 0
    assert r1["skipped"] == {"a": "cooling down for 5.000s"}
    async with aiohttp.ClientSession() as http, http.get(gw.url + "/metrics") as response:
        text = await response.text()
    assert 'gateway_requests_total{backend="b",status="200"} 2.0' in text
    assert 'gateway_upstream_attempts_total{backend="a",outcome="throttled"} 1.0' in text


async def test_models_retrieve_and_the_azure_v1_listing(upstreams, gateway):
    a = await upstreams(name="a", model="smollm2")
    b = await upstreams(name="b", model="org/model-7b")
    gw = await gateway([a, b])
    async with gw.client() as client:
        assert (await client.models.retrieve("smollm2")).owned_by == "a"
        assert (await client.models.retrieve("org/model-7b")).id == "org/model-7b"
        with pytest.raises(openai.NotFoundError) as caught:
            await client.models.retrieve("nope")
    assert caught.value.body["code"] == "model_not_found"
    async with openai.AsyncOpenAI(base_url=gw.url + "/openai/v1/", api_key="k", max_retries=0) as v1:
        assert sorted([m.id async for m in v1.models.list()]) == ["org/model-7b", "smollm2"]


BAD: list[tuple[str, Any, str | None]] = [
    ("/v1/embeddings", {"model": "m"}, "input"),
    ("/v1/embeddings", {"model": "m", "input": ""}, "input"),
    ("/v1/embeddings", {"model": "m", "input": []}, "input"),
    ("/v1/embeddings", {"model": "m", "input": [1, "x"]}, "input"),
    ("/v1/embeddings", {"model": "m", "input": [{"x": 1}]}, "input"),
    ("/v1/embeddings", {"model": "m", "input": "x", "encoding_format": "hex"}, "encoding_format"),
    ("/v1/embeddings", {"model": "m", "input": "x", "encoding_format": ["float"]}, "encoding_format"),
    ("/v1/embeddings", {"model": "m", "input": "x", "dimensions": 0}, "dimensions"),
    ("/v1/embeddings", {"model": 3, "input": "x"}, "model"),
    ("/openai/deployments/d/embeddings?api-version=2024-10-21", {"input": None}, "input"),
    ("/v1/completions", {"model": "m"}, "prompt"),
    ("/v1/completions", {"model": "m", "prompt": {"a": 1}}, "prompt"),
    ("/v1/completions", {"model": "m", "prompt": "x", "stream": "yes"}, "stream"),
    ("/v1/completions", {"model": "m", "prompt": "x", "max_tokens": -1}, "max_tokens"),
    ("/v1/completions", {"model": "m", "prompt": "x", "temperature": "hot"}, "temperature"),
    ("/openai/v1/completions", b"not json", None),
    ("/v1/embeddings", b"[]", None),
    ("/openai/v1/responses", b"", None),
]


@pytest.mark.parametrize("path, body, param", BAD)
async def test_bad_input_is_an_openai_shaped_400(upstreams, gateway, path, body, param):
    a = await upstreams(name="a")
    gw = await gateway([a])
    data = body if isinstance(body, bytes) else orjson.dumps(body)
    async with aiohttp.ClientSession() as http, http.post(gw.url + path, data=data) as response:
        payload = await response.json()
    assert response.status == 400
    assert payload["error"]["type"] == "invalid_request_error" and payload["error"]["param"] == param
    assert a.requests == []


async def test_an_upstream_400_is_passed_through_and_does_not_fail_over(upstreams, gateway):
    a = await upstreams(name="a", script=[Reply(status=400, body={"error": {"message": "bad dims",
                                                                             "type": "invalid_request_error",
                                                                             "param": "dimensions",
                                                                             "code": None}})])
    b = await upstreams(name="b")
    gw = await gateway([a, b], routing="round_robin")
    async with gw.client() as client:
        with pytest.raises(openai.BadRequestError, match="bad dims"):
            await client.embeddings.create(model="m", input="x")
    assert b.requests == []


def test_defaults_per_kind():
    from gateway.settings import Api, BackendConfig

    def apis(**config: Any) -> set[str]:
        return {str(api) for api in BackendConfig(name="x", url="http://h/v1", **config).served_apis}

    everything = {"chat", "responses", "embeddings", "completions"}
    assert apis() == everything
    assert apis(kind="azure", deployment="d") == everything
    assert apis(kind="llamacpp") == {"chat", "completions"}
    assert apis(kind="llama-server") == everything - {"responses"}
    assert apis(kind="llamacpp", apis=["chat", "responses"]) == {"chat", "responses"}
    assert Api("embeddings") is Api.EMBEDDINGS


@pytest.mark.parametrize("apis", [None, ["chat"]], ids=["native", "translated"])
async def test_tokens_of_responses_streams_are_counted(upstreams, gateway, capfd, apis):
    a = await upstreams(name="a", reply_text="four words of reply")
    gw = await gateway([{"name": "a", "url": a.openai_url, **({"apis": apis} if apis else {})}])
    capfd.readouterr()
    async with gw.client() as client, client.responses.stream(model="m", input="hello there") as stream:
        final = await stream.get_final_response()
    [line] = [line for line in log_lines(capfd.readouterr().out) if line["event"] == "request"]
    assert final.usage is not None
    assert (line["prompt_tokens"], line["completion_tokens"]) == (final.usage.input_tokens, 4)
