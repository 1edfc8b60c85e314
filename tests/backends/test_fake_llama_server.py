"""The fake posing as llama-server: the endpoints and fields a gateway reads from llama.cpp's own server."""

from __future__ import annotations

import asyncio
import json

import aiohttp
import openai

from backends.fake import FakeUpstream, Reply

FIRST = [{"role": "user", "content": "Tell me about the sea, the waves and the wind over the water."}]


async def get(session: aiohttp.ClientSession, url: str) -> tuple[int, str]:
    async with session.get(url) as response:
        return response.status, await response.text()


async def test_an_ordinary_fake_has_no_llama_server_endpoints() -> None:
    upstream = FakeUpstream()
    async with upstream.serve() as url, aiohttp.ClientSession() as session:
        statuses = [(await get(session, url + path))[0] for path in ("/props", "/slots", "/metrics")]
    assert statuses == [404, 404, 404]


async def test_props_slots_and_metrics_describe_the_slots_and_their_load() -> None:
    upstream = FakeUpstream(llama_server=True, total_slots=2, default=Reply(delay=0.5))
    async with upstream.serve() as url, aiohttp.ClientSession() as session:
        client = openai.AsyncOpenAI(base_url=upstream.openai_url, api_key="k", max_retries=0)
        busy = [asyncio.create_task(client.chat.completions.create(model="m", messages=FIRST)) for _ in range(3)]
        while upstream.in_flight < 3:
            await asyncio.sleep(0.01)
        _, props = await get(session, url + "/props")
        _, slots = await get(session, url + "/slots")
        _, metrics = await get(session, url + "/metrics")
        await asyncio.gather(*busy)
        await client.close()

    assert json.loads(props)["total_slots"] == 2
    assert [s["is_processing"] for s in json.loads(slots)] == [True, True]
    assert "llamacpp:requests_processing 2\n" in metrics
    assert "llamacpp:requests_deferred 1\n" in metrics


async def test_while_loading_health_and_props_answer_503() -> None:
    upstream = FakeUpstream(llama_server=True, health_status=503)
    async with upstream.serve() as url, aiohttp.ClientSession() as session:
        assert (await get(session, url + "/health"))[0] == 503
        assert (await get(session, url + "/props"))[0] == 503


async def test_a_follow_up_turn_reuses_its_history_from_the_cache_and_another_fake_has_none() -> None:
    one, two = FakeUpstream(name="one", llama_server=True), FakeUpstream(name="two", llama_server=True)
    async with one.serve(), two.serve():
        clients = [openai.AsyncOpenAI(base_url=u.openai_url, api_key="k", max_retries=0) for u in (one, two)]
        first = await clients[0].chat.completions.create(model="m", messages=FIRST)
        follow_up = [*FIRST, {"role": "assistant", "content": first.choices[0].message.content},
                     {"role": "user", "content": "And the tides?"}]
        same = await clients[0].chat.completions.create(model="m", messages=follow_up)
        other = await clients[1].chat.completions.create(model="m", messages=follow_up)
        for client in clients:
            await client.close()

    assert first.model_extra["timings"]["cache_n"] == 0
    timings = same.model_extra["timings"]
    assert timings["cache_n"] > 0.6 * (timings["cache_n"] + timings["prompt_n"])
    assert same.usage.prompt_tokens_details.cached_tokens == timings["cache_n"]
    assert other.model_extra["timings"]["cache_n"] == 0


async def test_a_stream_ends_with_its_timings_as_llama_server_streams_do() -> None:
    upstream = FakeUpstream(llama_server=True)
    async with upstream.serve():
        client = openai.AsyncOpenAI(base_url=upstream.openai_url, api_key="k", max_retries=0)
        chunks = [c async for c in await client.chat.completions.create(model="m", messages=FIRST, stream=True)]
        await client.close()

    assert [c.model_extra.get("timings") is not None for c in chunks] == [False] * (len(chunks) - 1) + [True]
    assert chunks[-1].choices[0].finish_reason == "stop"
