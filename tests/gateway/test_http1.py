"""The upstream HTTP/1.1 client (gateway.http1) against real loopback servers, some scripted byte by byte."""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import AsyncIterator

import pytest
import trustme
from aiohttp import web

from gateway.http1 import (
    ConnectError,
    ConnectionPool,
    ConnectTimeout,
    Disconnected,
    Origin,
    ReadTimeout,
    header_value,
    request_head,
)
from tests.gateway.raw_upstream import ok, read_request, scripted


async def post(pool: ConnectionPool, url: str, body: bytes = b"{}", read_timeout: float = 5.0):
    origin, target = Origin.of(url)
    head = request_head("POST", target, origin, {"Content-Type": "application/json"})
    return await pool.request(origin, head, body, read_timeout)


@pytest.fixture
async def pool() -> AsyncIterator[ConnectionPool]:
    pool = ConnectionPool(connect_timeout=2.0)
    yield pool
    await pool.close()


async def test_sends_the_head_and_body_and_reads_the_answer(pool: ConnectionPool) -> None:
    seen: list[bytes] = []

    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        seen.append(await read_request(reader))
        writer.write(ok(b'{"id":"x"}', b"X-Thing: 1\r\nx-thing: 2\r\n"))
        await writer.drain()
        await reader.read()

    async with scripted(script) as (url, _):
        response = await post(pool, url, b'{"a":1}')
        assert response.status == 200
        assert response.headers.getall("x-thing") == ["1", "2"]
        assert await response.read() == b'{"id":"x"}'
        response.close()

    port = url.split(":")[2].split("/")[0]
    assert seen[0].startswith(b"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1:" + port.encode() + b"\r\n")
    assert b"\r\nContent-Length: 7\r\n\r\n{\"a\":1}" in seen[0]


async def test_take_body_gives_a_complete_body_at_once_and_nothing_before(pool: ConnectionPool) -> None:
    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n")
        await writer.drain()
        await asyncio.sleep(0.05)
        writer.write(b"3\r\ndef\r\n0\r\n\r\n")  # the rest, in pieces of its own
        await writer.drain()
        await read_request(reader)
        writer.write(ok(b"whole"))
        await writer.drain()
        await reader.read()

    async with scripted(script) as (url, accepted):
        response = await post(pool, url)
        assert response.take_body() is None  # not all of it yet
        await asyncio.sleep(0.2)
        assert response.take_body() == b"abcdef"  # arrived in two pieces, given as one
        response.close()
        response = await post(pool, url)
        for _ in range(50):
            body = response.take_body()
            if body is not None:
                break
            await asyncio.sleep(0.01)
        assert body == b"whole"
        response.close()
        assert len(accepted) == 1  # a body taken whole leaves the connection reusable


async def test_reuses_a_kept_alive_connection(pool: ConnectionPool) -> None:
    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            await read_request(reader)
            writer.write(ok())
            await writer.drain()

    async with scripted(script) as (url, accepted):
        for _ in range(5):
            response = await post(pool, url)
            assert await response.read() == b"ok"
            response.close()
        assert len(accepted) == 1
        assert pool.open_connections == 1


async def test_a_request_the_server_read_on_a_reused_connection_is_never_sent_again(pool: ConnectionPool) -> None:
    # The server read the second request and closed without answering: it may have acted on it (a generation,
    # a billed call), so it is not sent again on a fresh connection; the caller fails over elsewhere.
    received: list[bytes] = []

    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        received.append(await read_request(reader))
        writer.write(ok())
        await writer.drain()
        received.append(await read_request(reader))  # read, then closed unanswered

    async with scripted(script) as (url, accepted):
        response = await post(pool, url)
        assert await response.read() == b"ok"
        response.close()
        with pytest.raises(Disconnected, match="closed by the server"):
            await post(pool, url)
        assert (len(accepted), len(received)) == (1, 2)


async def test_a_connection_the_server_closed_while_idle_is_not_written_to(pool: ConnectionPool) -> None:
    received: list[bytes] = []

    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        received.append(await read_request(reader))
        writer.write(ok())
        await writer.drain()  # then closed: a server's keep-alive running out

    async with scripted(script) as (url, accepted):
        response = await post(pool, url)
        await response.read()
        response.close()
        for _ in range(100):  # until the close has been seen
            if pool.open_connections == 0:
                break
            await asyncio.sleep(0.01)
        response = await post(pool, url)
        assert await response.read() == b"ok"
        response.close()
        assert (len(accepted), len(received)) == (2, 2)


async def test_the_connections_per_origin_are_capped_and_a_request_waits_for_one() -> None:
    pool = ConnectionPool(connect_timeout=2.0, max_connections=1)
    release = asyncio.Event()

    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            await read_request(reader)
            await release.wait()
            writer.write(ok())
            await writer.drain()

    async def one() -> bytes:
        response = await post(pool, url)
        try:
            return await response.read()
        finally:
            response.close()

    try:
        async with scripted(script) as (url, accepted):
            first, second = asyncio.create_task(one()), asyncio.create_task(one())
            await asyncio.sleep(0.05)
            assert pool.open_connections == 1  # the second waits instead of opening another
            release.set()
            assert await asyncio.gather(first, second) == [b"ok", b"ok"]
            assert len(accepted) == 1
    finally:
        await pool.close()


async def test_waiting_for_a_connection_under_the_cap_times_out() -> None:
    pool = ConnectionPool(connect_timeout=0.1, max_connections=1)

    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        await reader.read()  # never answers

    try:
        async with scripted(script) as (url, _):
            busy = asyncio.create_task(post(pool, url))
            await asyncio.sleep(0.02)
            with pytest.raises(ConnectTimeout, match="no connection to 127.0.0.1:.* came free"):
                await post(pool, url)
            busy.cancel()
    finally:
        await pool.close()


async def test_a_fresh_connection_closed_without_an_answer_is_an_error(pool: ConnectionPool) -> None:
    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)

    async with scripted(script) as (url, accepted):
        with pytest.raises(Disconnected, match="closed by the server"):
            await post(pool, url)
        assert len(accepted) == 1  # not sent again: it was not a reused connection
    assert pool.open_connections == 0


async def test_nothing_is_resent_once_part_of_the_answer_arrived(pool: ConnectionPool) -> None:
    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(ok())
        await writer.drain()
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\n")  # half a header block, then gone
        await writer.drain()

    async with scripted(script) as (url, accepted):
        (await post(pool, url)).close()
        with pytest.raises(Disconnected):
            await post(pool, url)
        assert len(accepted) == 1


async def test_chunked_bodies_arrive_chunk_by_chunk_and_the_connection_is_reused(pool: ConnectionPool) -> None:
    release = asyncio.Event()

    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            await read_request(reader)
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n")
            writer.write(b"6\r\ndata: \r\n")
            await writer.drain()
            await release.wait()
            writer.write(b"3\r\nabc\r\n0\r\n\r\n")
            await writer.drain()
            release.clear()

    async with scripted(script) as (url, accepted):
        for _ in range(2):
            response = await post(pool, url)
            assert response.content_type == "text/event-stream"
            chunks = response.iter_chunks()
            assert await anext(chunks) == b"data: "  # before the rest has even been sent
            release.set()
            assert [chunk async for chunk in chunks] == [b"abc"]
            response.close()
        assert len(accepted) == 1


async def test_a_body_that_ends_with_the_connection(pool: ConnectionPool) -> None:
    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nhello, ")
        await writer.drain()
        writer.write(b"world")
        await writer.drain()

    async with scripted(script) as (url, _):
        response = await post(pool, url)
        assert await response.read() == b"hello, world"
        response.close()
    assert pool.open_connections == 0


async def test_a_connection_closed_mid_body_is_an_error_not_a_short_answer(pool: ConnectionPool) -> None:
    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nonly this much")
        await writer.drain()

    async with scripted(script) as (url, _):
        response = await post(pool, url)
        with pytest.raises(Disconnected):
            await response.read()
        response.close()


async def test_read_timeout_before_the_answer(pool: ConnectionPool) -> None:
    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        await reader.read()  # never answers

    async with scripted(script) as (url, _):
        with pytest.raises(ReadTimeout):
            await post(pool, url, read_timeout=0.05)
    assert pool.open_connections == 0


async def test_read_timeout_counts_from_the_last_byte_received(pool: ConnectionPool) -> None:
    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
        for _ in range(4):  # a steady trickle, each piece well within the timeout, 4x the timeout in all
            writer.write(b"1\r\nx\r\n")
            await writer.drain()
            await asyncio.sleep(0.05)
        await reader.read()  # then silence

    async with scripted(script) as (url, _):
        response = await post(pool, url, read_timeout=0.12)
        received = b""
        with pytest.raises(ReadTimeout):
            async for chunk in response.iter_chunks():
                received += chunk
        assert received == b"xxxx"
        response.close()


async def test_a_pooled_connection_enforces_a_shorter_read_timeout_than_its_idle_timeout() -> None:
    """One timer per connection serves both timeouts; a reused connection must not wait out the idle one."""
    pool = ConnectionPool(connect_timeout=2.0, idle_timeout=30.0)

    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(ok())
        await writer.drain()
        await read_request(reader)
        await reader.read()  # the second request is never answered

    try:
        async with scripted(script) as (url, accepted):
            first = await post(pool, url)
            await first.read()
            first.close()  # pooled: its timer is now due in 30 s
            started = asyncio.get_running_loop().time()
            with pytest.raises(ReadTimeout):
                await post(pool, url, read_timeout=0.05)
            assert asyncio.get_running_loop().time() - started < 5
            assert len(accepted) == 1  # it was the pooled connection
    finally:
        await pool.close()


async def test_many_requests_on_one_connection_do_not_start_a_timer_each(pool: ConnectionPool) -> None:
    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            await read_request(reader)
            writer.write(ok())
            await writer.drain()

    loop = asyncio.get_running_loop()
    scheduled = 0
    call_at = loop.call_at

    def counting_call_at(when, callback, *args, **kwargs):
        nonlocal scheduled
        scheduled += 1
        return call_at(when, callback, *args, **kwargs)

    async with scripted(script) as (url, accepted):
        loop.call_at = counting_call_at
        try:
            for _ in range(50):
                response = await post(pool, url)
                assert await response.read() == b"ok"
                response.close()
        finally:
            del loop.call_at
        assert len(accepted) == 1
    # The connect timeout, the first read deadline, and the idle deadline (earlier than the read one) that the
    # later requests keep: three timers for fifty requests.
    assert scheduled <= 3


async def test_a_malformed_answer_is_an_error(pool: ConnectionPool) -> None:
    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"SMTP ready\r\n\r\n")
        await writer.drain()
        await reader.read()

    async with scripted(script) as (url, _):
        with pytest.raises(Disconnected, match="malformed"):
            await post(pool, url)


async def test_an_interim_100_continue_is_skipped(pool: ConnectionPool) -> None:
    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 100 Continue\r\n\r\n" + ok(b"final"))
        await writer.drain()
        await reader.read()

    async with scripted(script) as (url, _):
        response = await post(pool, url)
        assert (response.status, await response.read()) == (200, b"final")
        response.close()


async def test_closing_an_unfinished_answer_closes_its_connection(pool: ConnectionPool) -> None:
    closed = asyncio.Event()

    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nfirst\r\n")
        await writer.drain()
        await reader.read()  # returns when the client hangs up
        closed.set()

    async with scripted(script) as (url, _):
        response = await post(pool, url)
        assert await anext(response.iter_chunks()) == b"first"
        response.close()
        await asyncio.wait_for(closed.wait(), 2)  # the upstream learns at once: a llama.cpp slot is freed
    assert pool.open_connections == 0


async def test_cancelling_a_request_in_flight_closes_its_connection(pool: ConnectionPool) -> None:
    closed = asyncio.Event()
    arrived = asyncio.Event()

    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        arrived.set()
        await reader.read()
        closed.set()

    async with scripted(script) as (url, _):
        task = asyncio.create_task(post(pool, url))
        await asyncio.wait_for(arrived.wait(), 2)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await asyncio.wait_for(closed.wait(), 2)
    assert pool.open_connections == 0


async def test_a_slow_reader_pauses_the_upstream_instead_of_buffering_everything(pool: ConnectionPool) -> None:
    body = bytes(range(256)) * 128 * 1024  # 32 MiB: more than loopback's socket buffers can hold
    sent_all = asyncio.Event()

    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(body))
        for start in range(0, len(body), 1024 * 1024):
            writer.write(body[start:start + 1024 * 1024])
            await writer.drain()
        sent_all.set()
        await reader.read()

    async with scripted(script) as (url, _):
        response = await post(pool, url)
        chunks = response.iter_chunks()
        received = bytearray(await anext(chunks))
        await asyncio.sleep(0.2)  # a consumer that stalls
        assert not sent_all.is_set()  # the server is blocked: we stopped reading
        assert response._buffered < 2 * 1024 * 1024
        async for chunk in chunks:
            received += chunk
        assert bytes(received) == body
        response.close()


async def test_idle_connections_are_closed_after_the_idle_timeout() -> None:
    pool = ConnectionPool(connect_timeout=2.0, idle_timeout=0.05)

    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(ok())
        await writer.drain()
        await reader.read()

    try:
        async with scripted(script) as (url, _):
            response = await post(pool, url)
            await response.read()
            response.close()
            assert pool.open_connections == 1
            for _ in range(100):
                await asyncio.sleep(0.01)
                if pool.open_connections == 0:
                    break
            assert pool.open_connections == 0
    finally:
        await pool.close()


async def test_an_answer_without_keep_alive_is_not_pooled(pool: ConnectionPool) -> None:
    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(ok(extra=b"Connection: close\r\n"))
        await writer.drain()
        await reader.read()

    async with scripted(script) as (url, accepted):
        for _ in range(2):
            response = await post(pool, url)
            await response.read()
            response.close()
        assert len(accepted) == 2


async def test_connection_refused(pool: ConnectionPool) -> None:
    async with scripted(read_request) as (url, _):
        pass  # the port is free again
    with pytest.raises(ConnectError, match="cannot connect to 127.0.0.1"):
        await post(pool, url)


async def test_tls_with_the_certificate_checked(aiohttp_server) -> None:
    authority = trustme.CA()
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    authority.issue_cert("localhost").configure_cert(server_context)

    async def answer(request: web.Request) -> web.Response:
        return web.Response(body=b"secret ok")

    app = web.Application()
    app.router.add_post("/v1/chat/completions", answer)
    server = await aiohttp_server(app, ssl=server_context)
    url = f"https://localhost:{server.port}/v1/chat/completions"

    client_context = ssl.create_default_context()
    authority.configure_trust(client_context)
    trusting = ConnectionPool(connect_timeout=2.0, ssl_context=client_context)
    doubting = ConnectionPool(connect_timeout=2.0)  # the system's trust store does not know this authority
    try:
        for _ in range(2):
            response = await post(trusting, url)
            assert (response.status, await response.read()) == (200, b"secret ok")
            response.close()
        assert trusting.open_connections == 1
        with pytest.raises(ConnectError, match="certificate"):
            await post(doubting, url)
    finally:
        await trusting.close()
        await doubting.close()


def test_origins_and_request_heads() -> None:
    assert Origin.of("https://x.openai.azure.com/openai/deployments/d/chat/completions?api-version=1") == (
        Origin("https", "x.openai.azure.com", 443), "/openai/deployments/d/chat/completions?api-version=1"
    )
    origin, target = Origin.of("http://[::1]:8080")
    assert (origin.host_header, target) == ("[::1]:8080", "/")
    assert Origin.of("http://h/")[0].host_header == "h"
    with pytest.raises(ValueError):
        Origin.of("ftp://h/")
    head = request_head("POST", "/p", Origin("http", "h", 81), {"api-key": "k"})
    assert head == b"POST /p HTTP/1.1\r\nHost: h:81\r\napi-key: k\r\n"
    with pytest.raises(ValueError, match="CR or LF"):
        header_value("x\r\nInjected: 1")
