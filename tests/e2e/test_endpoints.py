"""The Responses, embeddings and completions endpoints against real llama.cpp backends (both kinds), through the
gateway, with the official SDK — and the quickstart-style app streaming from llama.cpp with an Entra ID token.

Embeddings come from llama-server run with ``--embeddings --pooling mean`` (backends.llamacpp.llama_server's
default), i.e. the chat model (SmolLM2-135M-Instruct) with embeddings enabled; llama-cpp-python's server loads
the model for chat only, so a llamacpp-kind gateway says plainly that nothing serves embeddings.
"""

from __future__ import annotations

import base64
import json
import math
import struct
import time
from typing import Any

import openai
import pytest
from azure.core.credentials import AccessToken

from tests.gateway.entra_helpers import LocalTenant, entra_settings
from tests.gateway.quickstart_app import create_app

pytestmark = pytest.mark.e2e

BACKEND_NAMES = {"llama-1", "llama-2"}


async def test_responses_create_is_translated_for_llama_cpp(gateway_client: openai.AsyncOpenAI, model_id: str):
    raw = await gateway_client.responses.with_raw_response.create(
        model=model_id, input="What is the capital of France? One word.", max_output_tokens=12, temperature=0)
    response = raw.parse()
    assert raw.headers["x-gateway-backend"] in BACKEND_NAMES
    assert response.output_text.strip()
    assert response.status in ("completed", "incomplete")
    assert response.usage is not None and response.usage.input_tokens > 0 and 0 < response.usage.output_tokens <= 12


async def test_responses_stream_through_the_sdks_stream_helper(
    gateway_client: openai.AsyncOpenAI, model_id: str, backend_kind: str
):
    async with gateway_client.responses.stream(
        model=model_id, input=[{"role": "user", "content": "Name three colours."}], max_output_tokens=16,
        temperature=0, store=False,
    ) as stream:
        events = [event async for event in stream]
    deltas = [event.delta for event in events if event.type == "response.output_text.delta"]
    last = events[-1]
    # A reply cut by max_output_tokens ends response.incomplete, as OpenAI's does (the SDK's
    # get_final_response() wants response.completed: see the next test).
    assert last.type in ("response.completed", "response.incomplete")
    assert len(deltas) > 1, "the answer should come in several deltas"
    assert "".join(deltas) == last.response.output_text and last.response.output_text.strip()
    if backend_kind == "llama-server":
        assert last.response.usage is not None and 0 < last.response.usage.output_tokens <= 16
    else:  # llama-cpp-python's server ignores stream_options.include_usage: its streams report no usage
        assert last.response.usage is None


async def test_responses_stream_get_final_response(gateway_client: openai.AsyncOpenAI, model_id: str):
    async with gateway_client.responses.stream(
        model=model_id, input=[{"role": "user", "content": "Say just: yes"}], max_output_tokens=200,
        temperature=0,
    ) as stream:
        final = await stream.get_final_response()
    assert final.status == "completed" and final.output_text.strip()


@pytest.mark.parametrize("backend_kind", ["llama-server"], indirect=True)
@pytest.mark.parametrize("encoding", ["float", "base64"])
async def test_embeddings_from_llama_server(gateway_client: openai.AsyncOpenAI, model_id: str, encoding: str):
    one = await gateway_client.embeddings.create(model=model_id, input="The cat sat.", encoding_format=encoding)
    batch = await gateway_client.embeddings.create(
        model=model_id, input=["The cat sat.", "A dog ran.", "Stock prices fell."], encoding_format=encoding)

    def vector(item: Any) -> list[float]:
        if isinstance(item, str):
            raw = base64.b64decode(item)
            return list(struct.unpack(f"<{len(raw) // 4}f", raw))
        return list(item)

    first = vector(one.data[0].embedding)
    vectors = [vector(d.embedding) for d in batch.data]
    assert len(first) == 576  # SmolLM2-135M's hidden size
    assert [d.index for d in batch.data] == [0, 1, 2] and all(len(v) == 576 for v in vectors)
    # Same text, same vector, whichever backend answered.
    assert vectors[0] == pytest.approx(first, abs=1e-4)

    def cosine(a: list[float], b: list[float]) -> float:
        return sum(x * y for x, y in zip(a, b)) / math.sqrt(sum(x * x for x in a) * sum(y * y for y in b))

    assert cosine(vectors[0], vectors[1]) > cosine(vectors[0], vectors[2]) - 0.5  # sane, not a similarity claim
    assert batch.usage.prompt_tokens > 0


@pytest.mark.parametrize("backend_kind", ["llamacpp"], indirect=True)
async def test_llama_cpp_python_backends_say_no_embeddings(gateway_client: openai.AsyncOpenAI, model_id: str):
    with pytest.raises(openai.NotFoundError, match="embeddings API"):
        await gateway_client.embeddings.create(model=model_id, input="x")


async def test_legacy_completions(gateway_client: openai.AsyncOpenAI, model_id: str):
    whole = await gateway_client.completions.create(model=model_id, prompt="Once upon a time", max_tokens=8)
    stream = await gateway_client.completions.create(model=model_id, prompt="Once upon a time", max_tokens=8,
                                                     stream=True)
    pieces = [chunk.choices[0].text async for chunk in stream if chunk.choices]
    assert whole.choices[0].text and "".join(pieces)


@pytest.mark.parametrize("backend_kind", ["llama-server"], indirect=True)
async def test_llama_servers_own_responses_stream_is_what_the_sdk_cannot_read(
    both_backends_up: list[Any], model_id: str
):
    """Why the gateway translates for llama-server by default (gateway/apis.py): its native stream lacks
    output_index/content_index/sequence_number. If this starts failing, llama.cpp fixed it: flip the default."""
    async with openai.AsyncOpenAI(base_url=both_backends_up[0].url, api_key="x", max_retries=0) as direct:
        with pytest.raises(TypeError):
            async with direct.responses.stream(model=model_id, input="Hi", max_output_tokens=4) as stream:
                async for _ in stream:
                    pass


class LocalCredential:
    def __init__(self, tenant: LocalTenant) -> None:
        self.tenant = tenant

    async def get_token(self, *scopes: str, **kwargs: Any) -> AccessToken:
        return AccessToken(self.tenant.token(time.time()), int(time.time()) + 3600)

    async def close(self) -> None:
        pass


async def test_the_quickstart_app_streams_from_llama_cpp(
    both_backends_up: list[Any], model_id: str, aiohttp_server: Any, aiohttp_client: Any, monkeypatch: Any
):
    from gateway.app import create_app as create_gateway
    from gateway.settings import GatewaySettings

    tenant = LocalTenant()
    jwks = await aiohttp_server(tenant.app())
    tenant.url = str(jwks.make_url("")).rstrip("/")
    settings = GatewaySettings(backends=[b.gateway_config for b in both_backends_up], queue_timeout=60,
                               **entra_settings(tenant))
    gateway = await aiohttp_server(create_gateway(settings))
    monkeypatch.setenv("AZURE_OPENAI_ENDPOINT", str(gateway.make_url("")).rstrip("/"))
    monkeypatch.setenv("AZURE_OPENAI_CHAT_DEPLOYMENT", model_id)
    app = await aiohttp_client(create_app(LocalCredential(tenant)))
    answer = await app.post("/chat/stream", json={"messages": [{"role": "user", "content": "Say hello."}]})
    lines = [json.loads(line) for line in (await answer.text()).splitlines()]
    assert lines and "error" not in lines[-1], lines[-1:]
    assert len(lines) > 1 and "".join(line["delta"]["content"] for line in lines).strip()
