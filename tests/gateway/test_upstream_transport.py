"""One conformance suite for both upstream clients (GATEWAY_UPSTREAM_CLIENT=http1|aiohttp), through the seam the
proxy uses (``UpstreamClient`` → ``UpstreamResponse``), against raw-socket servers scripted byte by byte."""

from __future__ import annotations

import asyncio
import gzip
import ssl
import zlib
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack

import pytest
import trustme
from aiohttp import web

from gateway.settings import BackendConfig
from gateway.transports import create_transport
from gateway.upstream import (
    ERROR_BODY_LIMIT,
    UpstreamAnswerTooLarge,
    UpstreamClient,
    UpstreamConnectionError,
    UpstreamResponse,
    UpstreamStatusError,
    UpstreamTimeout,
)
from tests.gateway.raw_upstream import answering, ok, read_request, scripted

pytestmark = pytest.mark.parametrize("client_name", ["http1", "aiohttp"])

MiB = 1024 * 1024


@pytest.fixture
async def make_client(client_name: str) -> AsyncIterator[Callable[..., UpstreamClient]]:
    """``make_client(read_timeout=..., max_response_bytes=..., idle_timeout=..., max_connections=...)``."""
    async with AsyncExitStack() as stack:

        def make(
            *, read_timeout: float = 5.0, max_response_bytes: int = 32 * MiB, idle_timeout: float = 4.0,
            max_connections: int = 100, connect_timeout: float = 2.0, ssl_context: ssl.SSLContext | None = None,
            health_timeout: float = 2.0,
        ) -> UpstreamClient:
            transport = create_transport(
                client_name, connect_timeout=connect_timeout, idle_timeout=idle_timeout,
                max_connections=max_connections, ssl_context=ssl_context,
            )
            stack.push_async_callback(transport.close)
            return UpstreamClient(
                transport, read_timeout=read_timeout, health_timeout=health_timeout,
                max_response_bytes=max_response_bytes,
            )

        yield make


def backend_at(url: str) -> BackendConfig:
    return BackendConfig(name="a", url=url.removesuffix("/chat/completions"))


async def body_of(response: UpstreamResponse) -> bytes:
    try:
        body = response.take_body()
        return body if body is not None else await response.read()
    finally:
        response.close()


def chunked(*pieces: bytes) -> bytes:
    return b"".join(b"%x\r\n%s\r\n" % (len(piece), piece) for piece in pieces if piece)


HEAD_CHUNKED = b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n"


async def serve_forever(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, answer: bytes) -> None:
    while True:
        await read_request(reader)
        writer.write(answer)
        await writer.drain()


# -- keep-alive, framing, streaming ---------------------------------------------------------------------------


async def test_keep_alive_reuses_one_connection(make_client, client_name) -> None:
    received: list[bytes] = []

    async def script(reader, writer) -> None:
        while True:
            received.append(await read_request(reader))
            writer.write(ok(b'{"id":"x"}', b"Content-Type: application/json\r\n"))
            await writer.drain()

    upstream = make_client()
    async with scripted(script) as (url, accepted):
        for _ in range(5):
            response = await upstream.chat_completion(backend_at(url), b'{"a":1}', "rid-1")
            assert (response.status, response.content_type) == (200, "application/json")
            assert await body_of(response) == b'{"id":"x"}'
        assert len(accepted) == 1
    assert len(received) == 5
    assert b"\r\nx-request-id: rid-1\r\n" in received[0].lower()
    assert received[0].endswith(b'\r\n\r\n{"a":1}')


async def test_a_chunked_stream_arrives_piece_by_piece(make_client, client_name) -> None:
    release = asyncio.Event()

    async def script(reader, writer) -> None:
        await read_request(reader)
        writer.write(HEAD_CHUNKED + b"\r\n" + chunked(b"data: one\n\n"))
        await writer.drain()
        await release.wait()
        writer.write(chunked(b"data: two\n\n") + b"0\r\n\r\n")
        await writer.drain()
        await reader.read()

    upstream = make_client()
    async with scripted(script) as (url, _):
        response = await upstream.chat_completion(backend_at(url), b"{}", "r")
        assert response.content_type == "text/event-stream"
        chunks = response.iter_chunks()
        assert await anext(chunks) == b"data: one\n\n"  # before the rest was even written
        release.set()
        assert [chunk async for chunk in chunks] == [b"data: two\n\n"]
        response.close()


async def test_a_body_that_ends_with_the_connection(make_client, client_name) -> None:
    async def script(reader, writer) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n\r\ndata: a\n\n")
        await writer.drain()
        writer.write(b"data: b\n\n")
        # then the connection closes: that is the end of this body

    upstream = make_client()
    async with scripted(script) as (url, _):
        response = await upstream.chat_completion(backend_at(url), b"{}", "r")
        assert b"".join([chunk async for chunk in response.iter_chunks()]) == b"data: a\n\ndata: b\n\n"
        response.close()


async def test_a_body_cut_short_is_an_error_not_a_short_answer(make_client, client_name) -> None:
    async def script(reader, writer) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n{\"partial\":")

    upstream = make_client()
    async with scripted(script) as (url, _):
        response = await upstream.chat_completion(backend_at(url), b"{}", "r")
        with pytest.raises(UpstreamConnectionError, match="dropped the answer"):
            await body_of(response)


async def test_closing_an_unfinished_answer_aborts_the_upstream_request(make_client, client_name) -> None:
    saw_close = asyncio.Event()

    async def script(reader, writer) -> None:
        await read_request(reader)
        writer.write(HEAD_CHUNKED + b"\r\n" + chunked(b"data: one\n\n"))
        await writer.drain()
        await reader.read()  # until the client goes away: how llama.cpp learns to free the slot
        saw_close.set()

    upstream = make_client()
    async with scripted(script) as (url, _):
        response = await upstream.chat_completion(backend_at(url), b"{}", "r")
        assert await anext(response.iter_chunks()) == b"data: one\n\n"
        response.close()
        await asyncio.wait_for(saw_close.wait(), 2.0)


# -- Content-Encoding ---------------------------------------------------------------------------------------

COMPLETION = b'{"id":"c","object":"chat.completion","choices":[],"usage":{"prompt_tokens":1,"completion_tokens":2}}'


@pytest.mark.parametrize("coding, encode", [
    ("gzip", gzip.compress),
    ("deflate", zlib.compress),  # zlib-wrapped, as the RFC says
    ("deflate", lambda data: zlib.compress(data, wbits=-zlib.MAX_WBITS)),  # raw, as some servers send it
])
async def test_a_compressed_answer_is_decoded(make_client, client_name, coding, encode) -> None:
    answer = ok(encode(COMPLETION), b"Content-Type: application/json\r\nContent-Encoding: %s\r\n" % coding.encode())

    upstream = make_client()
    async with scripted(lambda r, w: serve_forever(r, w, answer)) as (url, accepted):
        for _ in range(2):
            response = await upstream.chat_completion(backend_at(url), b"{}", "r")
            assert await body_of(response) == COMPLETION
        assert len(accepted) == 1


async def test_a_compressed_stream_is_decoded_as_it_arrives(make_client, client_name) -> None:
    release = asyncio.Event()
    compressor = zlib.compressobj(wbits=zlib.MAX_WBITS | 16)

    def piece(data: bytes) -> bytes:
        return compressor.compress(data) + compressor.flush(zlib.Z_SYNC_FLUSH)

    async def script(reader, writer) -> None:
        await read_request(reader)
        writer.write(HEAD_CHUNKED + b"Content-Encoding: gzip\r\n\r\n" + chunked(piece(b"data: one\n\n")))
        await writer.drain()
        await release.wait()
        writer.write(chunked(piece(b"data: [DONE]\n\n") + compressor.flush()) + b"0\r\n\r\n")
        await writer.drain()
        await reader.read()

    upstream = make_client()
    async with scripted(script) as (url, _):
        response = await upstream.chat_completion(backend_at(url), b"{}", "r")
        chunks = response.iter_chunks()
        assert await anext(chunks) == b"data: one\n\n"
        release.set()
        assert b"".join([chunk async for chunk in chunks]) == b"data: [DONE]\n\n"
        response.close()


async def test_a_truncated_or_unknown_encoding_is_an_upstream_failure(make_client, client_name) -> None:
    cut = gzip.compress(COMPLETION)[:-12]
    answers = [
        ok(cut, b"Content-Encoding: gzip\r\n"),
        ok(b"\x1b\x00\x00", b"Content-Encoding: br\r\n"),
        ok(b"not gzip at all", b"Content-Encoding: gzip\r\n"),
    ]

    upstream = make_client()
    async with scripted(answering(answers)) as (url, _):
        for expected in ("cut short", "unsupported Content-Encoding 'br'", "undecodable body"):
            response = await upstream.chat_completion(backend_at(url), b"{}", "r")
            with pytest.raises(UpstreamConnectionError, match=expected):
                await body_of(response)


# -- size caps ------------------------------------------------------------------------------------------------


async def test_an_answer_over_the_cap_is_refused_without_reading_it_whole(make_client, client_name) -> None:
    sent = 0
    block = b"x" * 65536

    async def script(reader, writer) -> None:
        nonlocal sent
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n")
        for _ in range(1024):  # 64 MiB on offer
            writer.write(chunked(block))
            await writer.drain()
            sent += len(block)

    upstream = make_client(max_response_bytes=MiB)
    async with scripted(script) as (url, _):
        response = await upstream.chat_completion(backend_at(url), b"{}", "r")
        with pytest.raises(UpstreamAnswerTooLarge) as raised:
            await body_of(response)
        await asyncio.sleep(0.05)
    assert raised.value.status == 502 and raised.value.retryable is False
    assert b'"code":"upstream_answer_too_large"' in raised.value.body
    assert b"GATEWAY_MAX_RESPONSE_BYTES" in raised.value.body
    assert sent < 16 * MiB  # the cap, plus what the sockets' buffers held: not the 64 MiB on offer


async def test_a_declared_length_over_the_cap_is_refused_before_reading(make_client, client_name) -> None:
    async def script(reader, writer) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 300000000\r\n\r\n{")
        await writer.drain()
        await reader.read()

    upstream = make_client(max_response_bytes=MiB)
    async with scripted(script) as (url, _):
        response = await upstream.chat_completion(backend_at(url), b"{}", "r")
        with pytest.raises(UpstreamAnswerTooLarge):
            await body_of(response)


async def test_the_cap_holds_for_the_decoded_size_of_a_compressed_answer(make_client, client_name) -> None:
    bomb = gzip.compress(b"\0" * (64 * MiB))  # 64 KiB that inflate to 64 MiB
    answer = ok(bomb, b"Content-Encoding: gzip\r\n")

    upstream = make_client(max_response_bytes=MiB)
    async with scripted(lambda r, w: serve_forever(r, w, answer)) as (url, _):
        response = await upstream.chat_completion(backend_at(url), b"{}", "r")
        with pytest.raises(UpstreamAnswerTooLarge):
            await body_of(response)


async def test_a_stream_is_not_capped_it_is_relayed(make_client, client_name) -> None:
    block = b"data: " + b"x" * 65530 + b"\n\n"

    async def script(reader, writer) -> None:
        await read_request(reader)
        writer.write(HEAD_CHUNKED + b"\r\n")
        for _ in range(64):  # 4 MiB, four times the cap
            writer.write(chunked(block))
            await writer.drain()
        writer.write(b"0\r\n\r\n")
        await writer.drain()
        await reader.read()

    upstream = make_client(max_response_bytes=MiB)
    async with scripted(script) as (url, _):
        response = await upstream.chat_completion(backend_at(url), b"{}", "r")
        largest = total = 0
        async for chunk in response.iter_chunks():
            total += len(chunk)
            largest = max(largest, len(chunk))
        response.close()
    assert total == 64 * len(block)
    assert largest <= MiB  # handed on as it came, never gathered up


async def test_error_bodies_are_read_with_a_small_cap(make_client, client_name) -> None:
    huge = b'{"error":"' + b"x" * (4 * MiB) + b'"}'
    answers = [
        ok(b'{"error":"bad one"} ', b"Content-Type: application/json\r\n").replace(b"200 OK", b"400 Bad Request"),
        b"HTTP/1.1 500 Oops\r\nContent-Type: text/html\r\nContent-Length: %d\r\n\r\n%s" % (len(huge), huge),
        b"HTTP/1.1 429 Slow Down\r\nRetry-After: 7\r\nContent-Encoding: gzip\r\nContent-Length: %d\r\n\r\n%s"
        % (len(gzip.compress(b'{"error":"later"}')), gzip.compress(b'{"error":"later"}')),
    ]

    upstream = make_client()
    async with scripted(answering(answers)) as (url, _):
        errors = []
        for _ in answers:
            with pytest.raises(UpstreamStatusError) as raised:
                await upstream.chat_completion(backend_at(url), b"{}", "r")
            errors.append(raised.value)
    assert (errors[0].status, errors[0].body) == (400, b'{"error":"bad one"} ')
    assert errors[1].status == 500 and errors[1].headers["Content-Type"] == "application/json"
    assert f"larger than {ERROR_BODY_LIMIT} bytes".encode() in errors[1].body
    assert (errors[2].status, errors[2].body, errors[2].headers["Retry-After"]) == (429, b'{"error":"later"}', "7")


# -- TLS, timeouts, refusals ----------------------------------------------------------------------------------


async def test_tls_with_the_certificate_checked(make_client, client_name, aiohttp_server) -> None:
    authority = trustme.CA()
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    authority.issue_cert("localhost").configure_cert(server_context)

    async def answer(request: web.Request) -> web.Response:
        return web.Response(body=b'{"secret":"ok"}', content_type="application/json")

    app = web.Application()
    app.router.add_post("/v1/chat/completions", answer)
    server = await aiohttp_server(app, ssl=server_context)
    backend = BackendConfig(name="tls", url=f"https://localhost:{server.port}/v1")

    client_context = ssl.create_default_context()
    authority.configure_trust(client_context)
    trusting = make_client(ssl_context=client_context)
    doubting = make_client()  # the system's trust store does not know this authority
    for _ in range(2):
        assert await body_of(await trusting.chat_completion(backend, b"{}", "r")) == b'{"secret":"ok"}'
    with pytest.raises(UpstreamConnectionError, match="(?i)certificate"):
        await doubting.chat_completion(backend, b"{}", "r")


async def test_no_answer_in_time_is_a_timeout(make_client, client_name) -> None:
    async def script(reader, writer) -> None:
        await read_request(reader)
        await reader.read()

    upstream = make_client(read_timeout=0.1)
    async with scripted(script) as (url, _):
        with pytest.raises(UpstreamTimeout, match="sent no response in time"):
            await upstream.chat_completion(backend_at(url), b"{}", "r")


async def test_a_stream_that_stalls_is_a_timeout(make_client, client_name) -> None:
    async def script(reader, writer) -> None:
        await read_request(reader)
        writer.write(HEAD_CHUNKED + b"\r\n" + chunked(b"data: one\n\n"))
        await writer.drain()
        await reader.read()

    upstream = make_client(read_timeout=0.5)  # long enough for the headers to arrive on a busy machine
    async with scripted(script) as (url, _):
        response = await upstream.chat_completion(backend_at(url), b"{}", "r")
        with pytest.raises(UpstreamTimeout, match="stalled mid-stream"):
            async for _ in response.iter_chunks():
                pass
        response.close()


async def test_a_refused_connection(make_client, client_name) -> None:
    async with scripted(read_request) as (url, _):
        pass  # the port is free again
    with pytest.raises(UpstreamConnectionError, match="unreachable"):
        await make_client().chat_completion(backend_at(url), b"{}", "r")


# -- sent once, pooled within bounds --------------------------------------------------------------------------


async def test_a_post_the_upstream_read_is_never_sent_twice(make_client, client_name) -> None:
    received: list[bytes] = []

    async def script(reader, writer) -> None:
        received.append(await read_request(reader))
        writer.write(ok(b"{}"))
        await writer.drain()
        received.append(await read_request(reader))  # read on the reused connection, then closed unanswered

    upstream = make_client()
    async with scripted(script) as (url, accepted):
        assert await body_of(await upstream.chat_completion(backend_at(url), b"{}", "r")) == b"{}"
        with pytest.raises(UpstreamConnectionError):
            await upstream.chat_completion(backend_at(url), b"{}", "r")
        await asyncio.sleep(0.05)
        assert (len(accepted), len(received)) == (1, 2)


async def test_idle_connections_close_after_the_idle_timeout(make_client, client_name) -> None:
    closed = asyncio.Event()

    async def script(reader, writer) -> None:
        await read_request(reader)
        writer.write(ok(b"{}"))
        await writer.drain()
        await reader.read()  # the client's close after its idle timeout
        closed.set()

    upstream = make_client(idle_timeout=0.05)
    async with scripted(script) as (url, _):
        await body_of(await upstream.chat_completion(backend_at(url), b"{}", "r"))
        await asyncio.wait_for(closed.wait(), 3.0)


async def test_connections_per_backend_are_capped(make_client, client_name) -> None:
    release = asyncio.Event()

    async def script(reader, writer) -> None:
        while True:
            await read_request(reader)
            await release.wait()
            writer.write(ok(b"{}"))
            await writer.drain()

    upstream = make_client(max_connections=1)

    async def one() -> bytes:
        return await body_of(await upstream.chat_completion(backend_at(url), b"{}", "r"))

    async with scripted(script) as (url, accepted):
        calls = [asyncio.create_task(one()) for _ in range(3)]
        await asyncio.sleep(0.1)
        assert len(accepted) == 1
        release.set()
        assert await asyncio.gather(*calls) == [b"{}"] * 3
        assert len(accepted) == 1


# -- probes ---------------------------------------------------------------------------------------------------


async def test_probes_are_bounded_in_time_and_size(make_client, client_name) -> None:
    answers = [ok(b'{"status":"ok"}'), ok(b"x" * (2 * MiB)), None]

    requests: list[bytes] = []
    upstream = make_client(health_timeout=0.2, max_response_bytes=MiB)
    async with scripted(answering(answers, requests)) as (url, _):
        health = url.replace("/v1/chat/completions", "/health")
        assert await upstream.probe(health) == (200, b'{"status":"ok"}')
        status, reason = await upstream.probe(health)
        assert status is None and b"larger than" in reason
        assert await upstream.probe(health) == (None, b"timed out")
    assert all(request.startswith(b"GET /health HTTP/1.1\r\n") for request in requests)


