"""POST /v1/responses through the gateway, with the official SDK: translated for chat-only backends, native for
backends that serve the Responses API, with the same failover and cooldown as chat completions."""

from __future__ import annotations

from typing import Any

import openai
import pytest

from backends.fake import FakeUpstream, Reply, throttled
from tests.gateway.conftest import Gateway

INPUT = [{"role": "user", "content": "Say something."}]


def chat_only(upstream: FakeUpstream, **extra: Any) -> dict[str, Any]:
    return {"name": upstream.name, "url": upstream.openai_url, "apis": ["chat"], **extra}


def native(upstream: FakeUpstream, **extra: Any) -> dict[str, Any]:
    return {"name": upstream.name, "url": upstream.openai_url, **extra}


@pytest.fixture(params=["translated", "native"])
def mode(request: pytest.FixtureRequest) -> str:
    return request.param


async def start(upstreams, gateway, mode: str, **config: Any) -> tuple[FakeUpstream, Gateway]:
    a = await upstreams(name="a", **config)
    gw = await gateway([chat_only(a) if mode == "translated" else native(a)])
    return a, gw


def upstream_usage(a: FakeUpstream) -> tuple[int, int]:
    """What the fake reported as (input, output) tokens, whichever API it answered."""
    record = a.requests[-1]
    if record.kind == "chat":
        messages = record.json["messages"]
        from backends.fake.tokens import estimate_prompt_tokens

        return estimate_prompt_tokens(messages), len(a.reply_text.split())
    text = "".join(m["content"] for m in record.json["input"]) if isinstance(record.json["input"], list) \
        else record.json["input"]
    return max(1, (len(text) + 3) // 4), len(a.reply_text.split())


async def test_create(upstreams, gateway, mode):
    a, gw = await start(upstreams, gateway, mode, reply_text="The answer is here.")
    async with gw.client() as client:
        raw = await client.responses.with_raw_response.create(model="fake-model", input=INPUT, store=False)
    response = raw.parse()
    assert response.output_text == "The answer is here."
    assert response.status == "completed" and response.object == "response"
    assert response.usage is not None
    assert (response.usage.input_tokens, response.usage.output_tokens) == upstream_usage(a)
    assert response.usage.total_tokens == response.usage.input_tokens + response.usage.output_tokens
    assert raw.headers["x-gateway-backend"] == "a"
    assert [r.kind for r in a.requests] == (["chat"] if mode == "translated" else ["responses"])


async def test_stream_and_final_response(upstreams, gateway, mode):
    a, gw = await start(upstreams, gateway, mode, reply_text="Streamed through the gateway.")
    async with gw.client() as client, client.responses.stream(model="fake-model", input=INPUT) as stream:
        kinds, deltas = [], []
        async for event in stream:
            kinds.append(event.type)
            if event.type == "response.output_text.delta":
                deltas.append(event.delta)
        final = await stream.get_final_response()
    assert "".join(deltas) == final.output_text == "Streamed through the gateway."
    assert kinds[:2] == ["response.created", "response.in_progress"] and kinds[-1] == "response.completed"
    assert final.usage is not None
    assert (final.usage.input_tokens, final.usage.output_tokens) == upstream_usage(a)
    if mode == "translated":
        assert a.requests[0].json["stream_options"] == {"include_usage": True}


async def test_length_cap_is_incomplete(upstreams, gateway, mode):
    _, gw = await start(upstreams, gateway, mode, reply_text="one two three four five")
    async with gw.client() as client:
        response = await client.responses.create(model="fake-model", input="x", max_output_tokens=2)
        async with client.responses.stream(model="fake-model", input="x", max_output_tokens=2) as stream:
            last = [event async for event in stream][-1]
    assert response.status == "incomplete" and response.incomplete_details.reason == "max_output_tokens"
    assert response.output_text == "one two"
    assert last.type == "response.incomplete"


async def test_sync_client_and_azure_clients(upstreams, gateway, mode):
    import asyncio

    _, gw = await start(upstreams, gateway, mode, reply_text="every client")

    def run() -> list[str]:
        texts = []
        with openai.OpenAI(base_url=gw.url + "/v1", api_key="k", max_retries=0) as sync:
            texts.append(sync.responses.create(model="fake-model", input="x").output_text)
        with openai.AzureOpenAI(azure_endpoint=gw.url, api_key="k", api_version="2025-03-01-preview",
                                max_retries=0) as azure:
            texts.append(azure.responses.create(model="fake-model", input="x").output_text)
        return texts

    texts = await asyncio.to_thread(run)
    v1 = openai.AsyncOpenAI(base_url=gw.url + "/openai/v1/", api_key="k", max_retries=0)
    async with v1, v1.responses.stream(model="fake-model", input=INPUT, store=False) as stream:
        final = await stream.get_final_response()
    assert texts + [final.output_text] == ["every client"] * 3


async def test_one_backend_always_throttled_still_answered_and_hit_once_per_window(upstreams, gateway, clock, mode):
    a = await upstreams(name="a", default=throttled(2))
    b = await upstreams(name="b", reply_text="from b")
    convert = chat_only if mode == "translated" else native
    gw = await gateway([convert(a), convert(b)])
    kind = "chat" if mode == "translated" else "responses"
    async with gw.client() as client:
        for window in range(3):
            for _ in range(4):
                assert (await client.responses.create(model="fake-model", input="x")).output_text == "from b"
                async with client.responses.stream(model="fake-model", input="x") as stream:
                    assert (await stream.get_final_response()).output_text == "from b"
            assert len(a.requests_of(kind)) == window + 1  # one 429 per Retry-After window, no more
            clock.advance(2.01)


async def test_a_stream_broken_after_its_start_ends_with_response_failed(upstreams, gateway, mode):
    # Native or translated, the client sees the same ending: an error event, then response.failed for the
    # response the stream began (the SDK's stream helper checks that it is the same one).
    _, gw = await start(upstreams, gateway, mode, script=[Reply(fail_after_chunks=5)], reply_text="a b c d e f")
    async with gw.client() as client, client.responses.stream(model="fake-model", input="x") as stream:
        events = [event async for event in stream]
    assert [e.type for e in events[-2:]] == ["error", "response.failed"]
    assert events[-1].response.id == events[0].response.id
    assert "interrupted" in events[-1].response.error.message
    assert [e.sequence_number for e in events] == list(range(len(events)))


async def test_a_failure_before_the_first_byte_fails_over(upstreams, gateway, mode):
    a = await upstreams(name="a", script=[Reply(status=500)])
    b = await upstreams(name="b", reply_text="b answered")
    convert = chat_only if mode == "translated" else native
    gw = await gateway([convert(a), convert(b)], routing="round_robin")
    async with gw.client() as client:
        texts = [(await client.responses.create(model="fake-model", input="x")).output_text for _ in range(2)]
    assert "b answered" in texts and len(a.requests) == 1


async def test_function_tools_round_trip_through_translation(upstreams, gateway):
    a = await upstreams(name="a")
    gw = await gateway([chat_only(a)])
    tools = [{"type": "function", "name": "get_weather", "description": "Weather in a city",
              "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}]
    async with gw.client() as client:
        await client.responses.create(
            model="fake-model", instructions="Be brief.", tools=tools, tool_choice="auto", temperature=0.1,
            text={"format": {"type": "json_object"}},
            input=[*INPUT,
                   {"type": "function_call", "call_id": "call_1", "name": "get_weather", "arguments": "{}"},
                   {"type": "function_call_output", "call_id": "call_1", "output": "sunny"}])
    sent = a.requests[0].json
    assert sent["messages"][0] == {"role": "system", "content": "Be brief."}
    assert sent["messages"][-1] == {"role": "tool", "tool_call_id": "call_1", "content": "sunny"}
    assert sent["tools"][0]["function"]["name"] == "get_weather"
    assert sent["response_format"] == {"type": "json_object"} and sent["temperature"] == 0.1


async def test_previous_response_id_needs_a_native_backend(upstreams, gateway):
    a = await upstreams(name="a")
    gw = await gateway([chat_only(a)])
    async with gw.client() as client:
        with pytest.raises(openai.BadRequestError) as caught:
            await client.responses.create(model="fake-model", input="x", previous_response_id="resp_123")
    assert caught.value.body["param"] == "previous_response_id"
    assert "stores nothing" in caught.value.body["message"]
    assert a.requests == []


async def test_previous_response_id_is_pinned_to_the_backend_that_made_it(upstreams, gateway):
    a, b = await upstreams(name="a"), await upstreams(name="b")
    c = await upstreams(name="c")
    gw = await gateway([native(a), native(b), chat_only(c)], routing="round_robin")
    async with gw.client() as client:
        first = await client.responses.with_raw_response.create(model="fake-model", input="x", store=True)
        owner = first.headers["x-gateway-backend"]
        assert owner in ("a", "b")
        follow_ups = [
            await client.responses.with_raw_response.create(
                model="fake-model", input="and?", previous_response_id=first.parse().id)
            for _ in range(4)
        ]
        async with client.responses.stream(model="fake-model", input="x") as stream:
            streamed = await stream.get_final_response()
        streamed_owner = "a" if streamed.id.startswith("resp_fakea") else "b"
        again = await client.responses.with_raw_response.create(
            model="fake-model", input="more", previous_response_id=streamed.id)
    assert {r.headers["x-gateway-backend"] for r in follow_ups} == {owner}
    assert again.headers["x-gateway-backend"] == streamed_owner


@pytest.mark.parametrize("body, param", [
    ({"model": "fake-model"}, "input"),
    ({"model": "fake-model", "input": 42}, "input"),
    ({"model": "fake-model", "input": [{"role": {"x": 1}, "content": "x"}]}, "input[0].role"),
    ({"model": "fake-model", "input": "x", "tools": [{"type": "file_search"}]}, "tools[0].type"),
    ({"model": "fake-model", "input": "x", "text": {"format": {"type": "json_schema"}}}, "text.format.name"),
    ({"model": "fake-model", "input": "x", "tool_choice": {"type": "function"}}, "tool_choice"),
    ({"model": ["x"], "input": "x"}, "model"),
])
async def test_bad_input_is_an_openai_shaped_400(upstreams, gateway, mode, body, param):
    a, gw = await start(upstreams, gateway, mode)
    async with gw.client() as client:
        with pytest.raises(openai.BadRequestError) as caught:
            await client.post("/responses", body=body, cast_to=object)
    assert caught.value.status_code == 400
    assert caught.value.body["param"] == param and caught.value.body["type"] == "invalid_request_error"
    assert a.requests == []


async def test_not_json_is_a_400(upstreams, gateway):
    import aiohttp

    _, gw = await start(upstreams, gateway, "native")
    async with aiohttp.ClientSession() as session:
        for body in (b"", b"{", b"[1]"):
            async with session.post(gw.url + "/v1/responses", data=body) as answer:
                assert answer.status == 400
                assert (await answer.json())["error"]["code"] == "invalid_json"
