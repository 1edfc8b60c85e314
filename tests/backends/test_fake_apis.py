"""The fake's Responses, embeddings and completions APIs, seen through the official openai SDK."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import struct
from collections.abc import AsyncIterator
from typing import Any

import openai
import pytest

from backends.fake import FakeUpstream, throttled
from backends.fake.embeddings import embedding_of


@contextlib.asynccontextmanager
async def fake(**config: Any) -> AsyncIterator[tuple[FakeUpstream, openai.AsyncOpenAI]]:
    """A running fake and an SDK client pointed at it."""
    upstream = FakeUpstream(**config)
    async with upstream.serve(), openai.AsyncOpenAI(base_url=upstream.openai_url, api_key="k",
                                                      max_retries=0) as client:
        yield upstream, client


async def test_responses_create_and_stream_are_parsed_by_the_sdk():
    async with fake(name="a", reply_text="native answer here") as (upstream, client):
        response = await client.responses.create(model="m", input="Hi", store=False)
        async with client.responses.stream(model="m", input=[{"role": "user", "content": "Hi"}]) as stream:
            deltas = [e.delta async for e in stream if e.type == "response.output_text.delta"]
            final = await stream.get_final_response()
    assert response.output_text == "native answer here" and response.status == "completed"
    assert response.usage is not None and response.usage.output_tokens == 3
    assert "".join(deltas) == final.output_text == "native answer here"
    assert final.usage == response.usage
    assert [r.kind for r in upstream.requests] == ["responses", "responses"]


async def test_responses_length_cap_is_incomplete():
    async with fake(name="a", reply_text="one two three four") as (_upstream, client):
        response = await client.responses.create(model="m", input="Hi", max_output_tokens=2)
    assert response.status == "incomplete" and response.output_text == "one two"


@pytest.mark.parametrize("encoding", ["float", "base64"])
async def test_embeddings_single_and_batch(encoding):
    async with fake(name="a") as (_upstream, client):
        one = await client.embeddings.create(model="e", input="hello", encoding_format=encoding)
        many = await client.embeddings.create(model="e", input=["hello", "world"], encoding_format=encoding)
    if encoding == "float":
        assert one.data[0].embedding == embedding_of("e", "hello")
    else:
        # The SDK hands base64 over as it came: the float32 vector, little-endian.
        raw = base64.b64decode(one.data[0].embedding)
        assert list(struct.unpack(f"<{len(raw) // 4}f", raw)) == embedding_of("e", "hello")
    assert [d.index for d in many.data] == [0, 1]
    assert many.data[0].embedding == one.data[0].embedding
    assert many.usage.prompt_tokens >= 2


async def test_completions_stream_and_not():
    async with fake(name="a", reply_text="legacy text reply") as (_upstream, client):
        whole = await client.completions.create(model="m", prompt="Once")
        stream = await client.completions.create(model="m", prompt="Once", stream=True)
        text = "".join([c.choices[0].text async for c in stream if c.choices])
    assert whole.choices[0].text == text == "legacy text reply"
    assert whole.usage is not None and whole.usage.completion_tokens == 3


async def test_azure_deployment_paths():
    upstream = FakeUpstream(name="az", deployment="emb", api_key="azkey")
    async with upstream.serve() as url:
        async with openai.AsyncAzureOpenAI(azure_endpoint=url, api_key="azkey", api_version="2024-10-21",
                                           max_retries=0) as client:
            vectors = await client.embeddings.create(model="emb", input="x")
            text = await client.completions.create(model="emb", prompt="x")
        async with openai.AsyncOpenAI(base_url=url + "/openai/v1/", api_key="azkey", max_retries=0) as v1:
            response = await v1.responses.create(model="emb", input="x")
    assert vectors.data[0].embedding and text.choices[0].text and response.output_text
    assert [(r.kind, r.deployment) for r in upstream.requests] == [
        ("embeddings", "emb"), ("completions", "emb"), ("responses", None)]


async def test_every_api_plays_the_script():
    async with fake(name="a", script=[throttled(2), throttled(2), throttled(2)]) as (_upstream, client):
        calls = [client.responses.create(model="m", input="x"),
                 client.embeddings.create(model="m", input="x"),
                 client.completions.create(model="m", prompt="x")]
        for call in calls:
            with pytest.raises(openai.RateLimitError) as caught:
                await call
            assert caught.value.response.headers["Retry-After"] == "2"
        assert (await client.embeddings.create(model="m", input="x")).data


@pytest.mark.parametrize("path, body, param", [
    ("/v1/responses", {"model": "m", "input": 5}, "input"),
    ("/v1/embeddings", {"model": "m", "input": []}, "input"),
    ("/v1/embeddings", {"model": "m", "input": "x", "encoding_format": "hex"}, "encoding_format"),
    ("/v1/completions", {"model": "m"}, "prompt"),
])
async def test_bad_input_is_a_400(path, body, param):
    async with fake(name="a") as (_, client):
        with pytest.raises(openai.BadRequestError) as caught:
            await client.post(path.removeprefix("/v1"), body=body, cast_to=object)
    assert caught.value.body["param"] == param


async def test_in_flight_counts_every_api():
    async with fake(name="a", latency=0.05) as (upstream, client):
        await asyncio.gather(client.embeddings.create(model="m", input="x"),
                             client.responses.create(model="m", input="x"))
    assert upstream.max_in_flight == 2 and upstream.in_flight == 0
