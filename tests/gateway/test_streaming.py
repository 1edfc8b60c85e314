"""SSE pass-through: unbuffered, failover only before the first byte, disconnects cancel upstream."""

from __future__ import annotations

import asyncio
import itertools
import time

import aiohttp
import openai
import pytest
from multidict import CIMultiDict, CIMultiDictProxy

from backends.fake import Reply, throttled_ms
from gateway.relay import SSE_HEADERS
from gateway.upstream import forwardable_headers
from tests.gateway.conftest import CHAT


def test_stream_headers_are_ours_whatever_the_upstream_spelling():
    """uvicorn-based servers (llama-cpp-python) send lower-case names; ours must replace theirs, not join them."""
    upstream = CIMultiDictProxy(CIMultiDict([
        ("content-type", "text/event-stream; charset=utf-8"), ("date", "Sun, 22 Nov 2026 16:00:00 GMT"),
        ("server", "uvicorn"), ("transfer-encoding", "chunked"), ("x-ratelimit-remaining-requests", "5"),
    ]))
    headers = forwardable_headers(upstream)
    headers.update(SSE_HEADERS)
    assert headers.getall("Content-Type") == ["text/event-stream"]
    assert {name.lower() for name in headers} == {
        "content-type", "cache-control", "x-accel-buffering", "x-ratelimit-remaining-requests"
    }


async def test_stream_passes_chunks_as_they_are_produced(upstreams, gateway):
    a = await upstreams(name="a", reply_text="one two three four five", token_delay=0.08)
    gw = await gateway([a])
    arrivals, pieces = [], []
    async with gw.client() as client:
        stream = await client.chat.completions.create(**CHAT, stream=True)
        async for chunk in stream:
            arrivals.append(time.perf_counter())
            if chunk.choices and chunk.choices[0].delta.content:
                pieces.append(chunk.choices[0].delta.content)
    assert "".join(pieces).split() == ["one", "two", "three", "four", "five"]
    # Buffered whole, every chunk would arrive at once; relayed, they keep the upstream's spacing.
    assert arrivals[-1] - arrivals[0] > 0.25
    gaps = [later - earlier for earlier, later in itertools.pairwise(arrivals)]
    assert sum(gap > 0.04 for gap in gaps) >= 3


async def test_stream_headers_for_proxies(upstreams, gateway):
    a = await upstreams(name="a")
    gw = await gateway([a])
    async with aiohttp.ClientSession() as http, http.post(
        gw.url + "/v1/chat/completions", json={**CHAT, "stream": True}
    ) as response:
        assert response.status == 200
        assert response.headers["Content-Type"].startswith("text/event-stream")
        assert response.headers["Cache-Control"] == "no-cache"
        assert response.headers["X-Accel-Buffering"] == "no"
        assert response.headers["x-gateway-backend"] == "a"
        body = await response.read()
    assert body.rstrip().endswith(b"data: [DONE]")


async def test_stream_fails_over_before_the_first_byte(upstreams, gateway):
    a = await upstreams(name="a", script=[throttled_ms(1000), Reply(fail_after_chunks=0)])
    b = await upstreams(name="b", reply_text="from b")
    gw = await gateway([a, b], max_attempts=3)
    async with gw.client() as client:
        for _ in range(1):
            raw = await client.chat.completions.with_raw_response.create(**CHAT, stream=True)
            assert raw.headers["x-gateway-backend"] == "b" and raw.headers["x-gateway-attempts"] == "2"
            text = "".join([c.choices[0].delta.content or "" async for c in raw.parse() if c.choices])
            assert text == "from b"


async def test_broken_upstream_before_first_chunk_fails_over(upstreams, gateway):
    a = await upstreams(name="a", script=[Reply(fail_after_chunks=0)])
    b = await upstreams(name="b", reply_text="safe")
    gw = await gateway([{"name": "a", "url": a.openai_url, "priority": 0},
                        {"name": "b", "url": b.openai_url, "priority": 1}])
    async with gw.client() as client:
        raw = await client.chat.completions.with_raw_response.create(**CHAT, stream=True)
        text = "".join([c.choices[0].delta.content or "" async for c in raw.parse() if c.choices])
    assert text == "safe" and raw.headers["x-gateway-attempts"] == "2"


async def test_mid_stream_failure_ends_with_an_error_and_no_retry(upstreams, gateway):
    a = await upstreams(name="a", reply_text="a b c d e f", script=[Reply(fail_after_chunks=2)])
    b = await upstreams(name="b")
    gw = await gateway([{"name": "a", "url": a.openai_url, "priority": 0},
                        {"name": "b", "url": b.openai_url, "priority": 1}])
    received = []
    async with gw.client() as client:
        stream = await client.chat.completions.create(**CHAT, stream=True)
        with pytest.raises(openai.APIError) as caught:
            async for chunk in stream:
                received.append(chunk)
    assert "interrupted" in str(caught.value)
    assert len(received) == 2  # what reached the client before the break
    assert b.chat_count == 0  # bytes had reached the client: failing over would duplicate the answer


async def test_client_disconnect_cancels_the_upstream_request(upstreams, gateway):
    a = await upstreams(name="a", reply_text=" ".join(["tok"] * 50), token_delay=0.05)
    gw = await gateway([a])
    async with aiohttp.ClientSession() as http:
        response = await http.post(gw.url + "/v1/chat/completions", json={**CHAT, "stream": True})
        await response.content.readline()
        response.close()  # the user closed the tab
    for _ in range(100):
        if a.chat_requests[0].cancelled:
            break
        await asyncio.sleep(0.02)
    record = a.chat_requests[0]
    assert record.cancelled and not record.completed
    assert record.chunks_sent < 50
    assert gw.balancer.by_name["a"].in_flight == 0


async def test_client_disconnect_while_waiting_for_a_slow_answer(upstreams, gateway):
    a = await upstreams(name="a", latency=3.0)
    gw = await gateway([a])
    async with aiohttp.ClientSession() as http:
        task = asyncio.create_task(http.post(gw.url + "/v1/chat/completions", json=CHAT))
        for _ in range(100):
            if a.in_flight:
                break
            await asyncio.sleep(0.01)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    for _ in range(100):
        if a.chat_requests[0].cancelled:
            break
        await asyncio.sleep(0.02)
    assert a.chat_requests[0].cancelled
    assert gw.balancer.by_name["a"].in_flight == 0


async def test_stream_usage_is_counted(upstreams, gateway):
    a = await upstreams(name="a", reply_text="x y z")
    gw = await gateway([a])
    async with gw.client() as client:
        stream = await client.chat.completions.create(**CHAT, stream=True, stream_options={"include_usage": True})
        usage = [c.usage async for c in stream if c.usage]
    assert usage and usage[0].completion_tokens == 3
    async with aiohttp.ClientSession() as http, http.get(gw.url + "/metrics") as response:
        text = await response.text()
    assert 'gateway_tokens_total{backend="a",type="completion"} 3.0' in text


async def test_sync_client_streams_too(upstreams, gateway):
    a = await upstreams(name="a", reply_text="sync works")
    gw = await gateway([a])

    def run_sync() -> str:
        with openai.OpenAI(base_url=gw.url + "/v1", api_key="unused", max_retries=0) as client:
            stream = client.chat.completions.create(**CHAT, stream=True)
            return "".join(c.choices[0].delta.content or "" for c in stream if c.choices)

    assert await asyncio.to_thread(run_sync) == "sync works"
