"""Upstream and client failures found by an adversarial review (issue 12), each against real sockets: a
cancelled probe, a stream cut short, secrets in URLs, garbage retry hints, all-throttled answers, malformed
HTTP, unreachable backends, and hostile request ids."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import aiohttp
import openai
import orjson
import pytest

from backends.fake import Reply
from gateway.__main__ import log_starting
from gateway.relay import StreamEnd
from gateway.settings import ConfigError, GatewaySettings, load_settings
from tests.gateway.conftest import CHAT, chat
from tests.gateway.faulty_upstream import SSE_HEAD, closed_port, raw_upstream, sse_chunk


async def wait_until(condition: Callable[[], bool]) -> None:
    for _ in range(300):
        if condition():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("condition not met within 3 s")


def log_lines(out: str) -> list[dict]:
    return [orjson.loads(line) for line in out.splitlines() if line.strip()]


async def get(url: str) -> tuple[int, bytes]:
    async with aiohttp.ClientSession() as http, http.get(url) as response:
        return response.status, await response.read()


# -- 1. a cancelled half-open probe -----------------------------------------------------------------------


async def test_a_probe_whose_client_disconnects_does_not_eject_the_backend_for_good(upstreams, gateway, clock):
    a = await upstreams(name="a", script=[Reply(status=500), Reply(delay=5.0)])
    gw = await gateway([a], max_attempts=1, eject_after_failures=1, eject_base=5.0)
    async with gw.client() as client:
        with pytest.raises(openai.InternalServerError):
            await chat(client)  # 500: the circuit opens for 5 s
        clock.advance(5.01)
        # Half-open: this request is the probe, and its client goes away while the upstream is thinking.
        async with aiohttp.ClientSession() as http:
            probe = asyncio.create_task(http.post(gw.url + "/v1/chat/completions", json=CHAT))
            await wait_until(lambda: a.in_flight == 1)
            probe.cancel()
            await asyncio.gather(probe, return_exceptions=True)
        await wait_until(lambda: a.chat_requests[1].cancelled)
        # Neither success nor failure: the next request probes instead, and the backend is back.
        raw = await chat(client)
    assert raw.headers["x-gateway-backend"] == "a"
    assert await get(gw.url + "/readyz") == (200, b'{"status":"ready","backends":{"a":"healthy"}}')


# -- 2. a stream that ends without its end ------------------------------------------------------------------


async def test_a_stream_closed_before_its_end_is_an_upstream_failure(gateway, capfd):
    async with raw_upstream(SSE_HEAD + sse_chunk("Hel") + sse_chunk("lo")) as raw:
        gw = await gateway([{"name": "raw", "url": raw.url}], max_attempts=1)
        received = []
        async with gw.client() as client:
            stream = await client.chat.completions.create(**CHAT, stream=True)
            with pytest.raises(openai.APIError, match="Upstream stream interrupted: raw ended the stream"):
                async for chunk in stream:
                    received.append(chunk.choices[0].delta.content)
        _, metrics = await get(gw.url + "/metrics")
    assert received == ["Hel", "lo"]  # what arrived was relayed; then the error, not a quiet end
    assert b'gateway_upstream_attempts_total{backend="raw",outcome="failed"} 1.0' in metrics
    assert b'outcome="ok"' not in metrics
    lines = log_lines(capfd.readouterr().out)
    [attempt] = [line for line in lines if line["event"] == "upstream_attempt"]
    assert (attempt["outcome"], attempt["backend"]) == ("failed", "raw")
    [request] = [line for line in lines if line["event"] == "request"]
    assert request["stream_error"].startswith("raw ended the stream before its end")


@pytest.mark.parametrize(
    "ending",
    [sse_chunk("", finish_reason="stop") + b"data: [DONE]\n\n", sse_chunk("", finish_reason="stop")],
    ids=["done", "finish_reason_only"],
)
async def test_a_stream_closed_after_its_end_is_complete(gateway, ending):
    async with raw_upstream(SSE_HEAD + sse_chunk("Hel") + sse_chunk("lo") + ending) as raw:
        gw = await gateway([{"name": "raw", "url": raw.url}], max_attempts=1)
        async with gw.client() as client:
            stream = await client.chat.completions.create(**CHAT, stream=True)
            chunks = [chunk async for chunk in stream]
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == "Hello"
    assert chunks[-1].choices[0].finish_reason == "stop"


@pytest.mark.parametrize(
    ("chunks", "complete"),
    [
        ([b"data: [DO", b"NE]\n\n"], True),  # split across reads
        ([sse_chunk("a"), sse_chunk("", finish_reason="length")], True),
        ([sse_chunk("a"), b'data: {"type":"response.completed","response":{}}\n\n'], True),  # Responses API
        ([sse_chunk("a"), sse_chunk("b")], False),
        ([sse_chunk("a"), b"data: [DONE"], False),
        ([b""], False),
    ],
)
def test_a_stream_is_complete_only_when_the_upstream_ended_it(chunks, complete):
    end = StreamEnd()
    for chunk in chunks:
        end.feed(chunk)
    assert end.complete is complete


async def test_a_stream_closed_before_its_first_byte_fails_over(upstreams, gateway):
    b = await upstreams(name="b")
    async with raw_upstream(SSE_HEAD) as raw:
        gw = await gateway([{"name": "raw", "url": raw.url, "priority": 0}, {"name": "b", "url": b.openai_url,
                                                                             "priority": 1}])
        async with gw.client() as client:
            response = await client.chat.completions.with_raw_response.create(**CHAT, stream=True)
            chunks = [chunk async for chunk in response.parse()]
    assert response.headers["x-gateway-backend"] == "b" and response.headers["x-gateway-attempts"] == "2"
    assert chunks[-1].choices[0].finish_reason == "stop"


# -- 6. secrets in backend URLs ------------------------------------------------------------------------------


async def test_userinfo_in_backend_urls_never_reaches_a_log_line_or_an_answer(upstreams, gateway, capfd):
    a = await upstreams(name="a")
    alive = a.openai_url.replace("http://", "http://gw-user:s3cret-pass@")
    dead = f"http://gw-user:s3cret-pass@127.0.0.1:{closed_port()}/v1"
    backends = [{"name": "dead", "url": dead, "priority": 0}, {"name": "a", "url": alive, "priority": 1}]
    log_starting(GatewaySettings(backends=backends))
    log_starting(GatewaySettings(backends=f"{dead},{alive}"))  # the comma-separated form names them by host
    gw = await gateway(backends, eject_after_failures=1)
    async with gw.client() as client:
        served = await chat(client)
        await chat(client)
    answers = [await get(gw.url + path) for path in ("/readyz", "/metrics", "/v1/models")]
    with pytest.raises(ConfigError) as invalid:
        load_settings(backends=[{"name": "x", "url": "ftp://gw-user:s3cret-pass@127.0.0.1/v1"}])
    out, err = capfd.readouterr()
    assert served.headers["x-gateway-backend"] == "a"
    lines = log_lines(out)
    assert {"gateway_starting", "upstream_attempt", "request"} <= {line["event"] for line in lines}
    for text in [*out.splitlines(), err, str(invalid.value), *(body.decode() for _, body in answers)]:
        assert "s3cret" not in text and "gw-user" not in text


# -- 7. the smaller ones ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("hint", ["nan", "inf", "-inf", "1e999", "soon", ""])
async def test_an_unreadable_retry_hint_gives_the_default_cooldown(upstreams, gateway, clock, hint):
    a = await upstreams(name="a", script=[Reply(status=429, headers={"retry-after-ms": hint, "retry-after": hint})])
    b = await upstreams(name="b")
    gw = await gateway([a, b], cooldown_default=7.0)
    async with gw.client() as client:
        assert (await chat(client)).headers["x-gateway-backend"] == "b"
        for _ in range(4):
            assert (await chat(client)).headers["x-gateway-backend"] == "b"
        clock.advance(6.9)
        assert (await chat(client)).headers["x-gateway-backend"] == "b"
        clock.advance(0.2)  # the default is over: a is used again
        assert sorted([(await chat(client)).headers["x-gateway-backend"] for _ in range(2)]) == ["a", "b"]
    assert a.chat_count == 2


async def test_when_every_attempt_was_throttled_the_answer_is_429_never_502(upstreams, gateway):
    # Cooldowns of 0 ms: by the time the last attempt failed, no backend is cooling down any more.
    a = await upstreams(name="a", script=[Reply(status=429, headers={"retry-after-ms": "0"})])
    b = await upstreams(name="b", script=[Reply(status=429, headers={"retry-after-ms": "0"})])
    gw = await gateway([a, b], max_attempts=3)
    async with gw.client() as client:
        with pytest.raises(openai.RateLimitError) as throttled:
            await chat(client)
    assert throttled.value.status_code == 429
    assert throttled.value.response.headers["retry-after"] == "1"
    assert a.chat_count == 1 and b.chat_count == 1


async def test_a_failed_and_a_throttled_attempt_is_still_a_502(upstreams, gateway):
    a = await upstreams(name="a", script=[Reply(status=500)])
    b = await upstreams(name="b", script=[Reply(status=429, headers={"retry-after-ms": "0"})])
    gw = await gateway([a, b], max_attempts=2)
    async with gw.client() as client:
        with pytest.raises(openai.InternalServerError) as failed:
            await chat(client)
    assert failed.value.status_code == 502


@pytest.mark.parametrize(
    ("request_bytes", "problem"),
    [
        (
            (
                b"POST /v1/chat/completions HTTP/1.1\r\nHost: gw\r\nContent-Length: 5\r\n"
                b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n"
            ),
            "Transfer-Encoding",
        ),
        (b"GET /healthz HTTP/1.1\r\nHost: gw\r\nBad Header: x\r\n\r\n", "header"),
        (b"GET /healthz HTTP/1.1\r\nHost: gw\r\nX-Ok: a\x01b\r\n\r\n", "header"),
    ],
    ids=["length-and-chunked", "space-in-name", "control-character"],
)
async def test_unparseable_requests_are_a_json_400_and_one_log_line(upstreams, gateway, capfd, request_bytes,
                                                                    problem):
    gw = await gateway([await upstreams(name="a")])
    port = int(gw.url.rsplit(":", 1)[1])
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(request_bytes)
    answer = await reader.read()  # the gateway closes the connection after answering
    writer.close()
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.split(b" ", 2)[1] == b"400"
    assert b"Content-Type: application/json" in head
    error = orjson.loads(body)["error"]
    assert error["code"] == "bad_http_request" and error["type"] == "invalid_request_error"
    assert problem in error["message"]
    out, err = capfd.readouterr()
    [line] = [line for line in log_lines(out) if line["event"] == "bad_http_request"]
    assert line["status"] == 400 and line["level"] == "info"
    assert "Traceback" not in out and "Traceback" not in err and err == ""


async def test_readyz_is_503_when_every_openai_backend_refuses_connections(upstreams, gateway, clock):
    down = [{"name": name, "url": f"http://127.0.0.1:{closed_port()}/v1"} for name in ("x", "y")]
    gw = await gateway(down)
    status, body = await get(gw.url + "/readyz")
    assert status == 503
    assert orjson.loads(body) == {"status": "unavailable", "backends": {"x": "unreachable", "y": "unreachable"}}

    a = await upstreams(name="a")
    gw = await gateway([*down, a])
    status, body = await get(gw.url + "/readyz")
    assert status == 200
    assert orjson.loads(body)["backends"] == {"x": "unreachable", "y": "unreachable", "a": "healthy"}


@pytest.mark.parametrize(
    ("sent", "kept"),
    [
        ("req-2026_12.01:abc", True),
        ("x" * 128, True),
        ("x" * 129, False),
        ("<script>alert(1)</script>", False),
        ("id with spaces", False),
        ('quote"d', False),
    ],
)
async def test_a_client_request_id_is_kept_only_when_short_and_plain(upstreams, gateway, capfd, sent, kept):
    a = await upstreams(name="a")
    gw = await gateway([a])
    async with gw.client() as client:
        raw = await client.chat.completions.with_raw_response.create(**CHAT, extra_headers={"x-request-id": sent})
    echoed = raw.headers["x-request-id"]
    [request] = [line for line in log_lines(capfd.readouterr().out) if line["event"] == "request"]
    forwarded = a.chat_requests[0].headers.get("x-request-id")
    if kept:
        assert echoed == request["request_id"] == forwarded == sent
    else:
        assert echoed == request["request_id"] == forwarded != sent
        assert len(echoed) == 32 and int(echoed, 16) >= 0
