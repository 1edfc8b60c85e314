"""What the gateway promises about delivery, end to end (openai SDK → gateway → raw-socket upstream), with either
upstream client: a POST is sent to a backend once, compressed answers reach the client decodable, and what is
buffered of an answer is bounded."""

from __future__ import annotations

import gzip
import tracemalloc
import zlib

import aiohttp
import openai
import pytest

from tests.gateway.conftest import CHAT
from tests.gateway.raw_upstream import answering, ok, read_request, scripted

pytestmark = pytest.mark.parametrize("client_name", ["http1", "aiohttp"])

MiB = 1024 * 1024
COMPLETION = (
    b'{"id":"c1","object":"chat.completion","created":1,"model":"fake-model","choices":[{"index":0,'
    b'"message":{"role":"assistant","content":"hi there"},"finish_reason":"stop"}],'
    b'"usage":{"prompt_tokens":3,"completion_tokens":2,"total_tokens":5}}'
)
JSON = b"Content-Type: application/json\r\n"


def sse_event(content: str | None, finish: str | None = None) -> bytes:
    delta = f'{{"content":"{content}"}}' if content is not None else "{}"
    reason = f'"{finish}"' if finish else "null"
    return (
        b'data: {"id":"c1","object":"chat.completion.chunk","created":1,"model":"fake-model","choices":[{"index":0,'
        + f'"delta":{delta},"finish_reason":{reason}}}]}}\n\n'.encode()
    )


def chunked(*pieces: bytes) -> bytes:
    return b"".join(b"%x\r\n%s\r\n" % (len(piece), piece) for piece in pieces if piece)


def backend(url: str, name: str = "raw", **extra: object) -> dict[str, object]:
    return {"name": name, "url": url.removesuffix("/chat/completions"), **extra}


# -- sent once ------------------------------------------------------------------------------------------------


async def test_a_post_is_delivered_once_even_with_a_single_attempt(gateway, client_name) -> None:
    # The upstream reads the second request on the kept-alive connection and closes without answering. Resending
    # it on a fresh connection would deliver one client request twice (a second generation, a second bill).
    received: list[bytes] = []
    async with scripted(answering([ok(COMPLETION, JSON), b""], received)) as (url, accepted):
        gw = await gateway([backend(url)], max_attempts=1, upstream_client=client_name, read_timeout=5.0)
        async with gw.client() as client:
            first = await client.chat.completions.create(**CHAT)
            assert first.choices[0].message.content == "hi there"
            with pytest.raises(openai.InternalServerError) as raised:
                await client.chat.completions.create(**CHAT)
        assert raised.value.status_code == 502
    assert (len(received), len(accepted)) == (2, 1)


async def test_a_post_the_upstream_may_have_read_fails_over_to_another_backend(
    upstreams, gateway, client_name
) -> None:
    received: list[bytes] = []
    good = await upstreams(name="good")
    async with scripted(answering([ok(COMPLETION, JSON), b""], received)) as (url, _):
        gw = await gateway(
            [backend(url, priority=0), {"name": "good", "url": good.openai_url, "priority": 1}],
            max_attempts=2, upstream_client=client_name, read_timeout=5.0,
        )
        async with gw.client() as client:
            await client.chat.completions.create(**CHAT)  # the raw backend answers, its connection is pooled
            response = await client.chat.completions.with_raw_response.create(**CHAT)
    assert response.headers["x-gateway-backend"] == "good"
    assert response.headers["x-gateway-attempts"] == "2"
    assert len(received) == 2  # once each: never resent to the backend that may have acted on it
    assert len(good.requests) == 1


# -- compressed answers ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("coding, encode", [("gzip", gzip.compress), ("deflate", zlib.compress)])
async def test_a_compressed_answer_reaches_the_client_decodable(gateway, client_name, coding, encode) -> None:
    answer = ok(encode(COMPLETION), JSON + b"Content-Encoding: %s\r\n" % coding.encode())
    async with scripted(answering([answer])) as (url, _):
        gw = await gateway([backend(url)], upstream_client=client_name, read_timeout=5.0)
        async with gw.client() as client:
            response = await client.chat.completions.with_raw_response.create(**CHAT)
    assert "content-encoding" not in response.headers
    completion = response.parse()
    assert completion.choices[0].message.content == "hi there"
    assert completion.usage is not None and completion.usage.completion_tokens == 2


async def test_a_compressed_stream_reaches_the_client_decodable(gateway, client_name) -> None:
    compressor = zlib.compressobj(wbits=zlib.MAX_WBITS | 16)

    def piece(data: bytes) -> bytes:
        return compressor.compress(data) + compressor.flush(zlib.Z_SYNC_FLUSH)

    answer = (
        b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nContent-Encoding: gzip\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n"
        + chunked(piece(sse_event("hi")), piece(sse_event(" there")), piece(sse_event(None, "stop")),
                  piece(b"data: [DONE]\n\n") + compressor.flush())
        + b"0\r\n\r\n"
    )
    async with scripted(answering([answer])) as (url, _):
        gw = await gateway([backend(url)], upstream_client=client_name, read_timeout=5.0)
        async with gw.client() as client:
            stream = await client.chat.completions.create(**CHAT, stream=True)
            chunks = [chunk async for chunk in stream]
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "hi there"
    assert chunks[-1].choices[0].finish_reason == "stop"


# -- bounded ----------------------------------------------------------------------------------------------


async def test_an_answer_over_the_cap_is_a_clear_502_and_is_not_buffered(gateway, client_name) -> None:
    block = b"x" * (64 * 1024)
    sent = 0
    received: list[bytes] = []

    async def script(reader, writer) -> None:
        nonlocal sent
        received.append(await read_request(reader))
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n")
        for _ in range(1024):  # 64 MiB on offer
            writer.write(chunked(block))
            await writer.drain()
            sent += len(block)

    async with scripted(script) as (url, _), scripted(script) as (other, _):
        gw = await gateway(
            [backend(url), backend(other, name="other")], max_response_bytes=MiB, max_attempts=3,
            upstream_client=client_name, read_timeout=5.0,
        )
        tracemalloc.start()
        try:
            async with gw.client() as client:
                with pytest.raises(openai.InternalServerError) as raised:
                    await client.chat.completions.create(**CHAT)
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
    assert raised.value.status_code == 502
    assert raised.value.body["code"] == "upstream_answer_too_large"
    assert "GATEWAY_MAX_RESPONSE_BYTES" in raised.value.body["message"]
    assert len(received) == 1  # not retried: another backend would most likely answer as much
    assert sent < 16 * MiB  # the cap and the sockets' buffers, not the 64 MiB on offer
    assert peak < 8 * MiB  # what the whole process allocated at its worst: the cap, a copy, slack


async def test_a_stream_larger_than_the_cap_is_relayed_without_being_buffered(gateway, client_name) -> None:
    event = b"data: " + b"x" * (64 * 1024 - 8) + b"\n\n"
    count = 256  # 16 MiB, sixteen times the cap

    async def script(reader, writer) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n")
        for _ in range(count):
            writer.write(chunked(event))
            await writer.drain()
        writer.write(chunked(sse_event(None, "stop"), b"data: [DONE]\n\n") + b"0\r\n\r\n")
        await writer.drain()
        await reader.read()

    async with scripted(script) as (url, _):
        gw = await gateway([backend(url)], max_response_bytes=MiB, upstream_client=client_name, read_timeout=5.0)
        tracemalloc.start()
        try:
            total = 0
            async with aiohttp.ClientSession() as http, http.post(
                gw.url + "/v1/chat/completions", json={**CHAT, "stream": True}
            ) as response:
                assert response.status == 200
                async for chunk in response.content.iter_any():
                    total += len(chunk)
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
    assert total >= count * len(event)
    assert peak < 8 * MiB  # relayed piece by piece: never a sixteenth of it held at once
