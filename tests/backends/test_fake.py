"""The fake upstream, seen through the official openai SDK and raw HTTP, on real loopback sockets."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from pathlib import Path

import aiohttp
import openai
import pytest
from aiohttp import web

from backends.fake import (
    FakeUpstream,
    Reply,
    throttled,
    throttled_date,
    throttled_ms,
    throttled_ratelimit_reset,
    unavailable,
)

ROOT = Path(__file__).resolve().parents[2]
MESSAGES = [{"role": "user", "content": "Say something."}]

Serve = Callable[[FakeUpstream], Awaitable[str]]


class FakeClock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
async def serve() -> AsyncIterator[Serve]:
    """Start fakes on ephemeral loopback ports; all of them stop at teardown."""
    async with contextlib.AsyncExitStack() as stack:

        async def start(upstream: FakeUpstream) -> str:
            return await stack.enter_async_context(upstream.serve())

        yield start


@pytest.fixture
async def openai_client() -> AsyncIterator[Callable[..., openai.AsyncOpenAI]]:
    async with contextlib.AsyncExitStack() as stack:

        def make(upstream: FakeUpstream, api_key: str = "sk-test") -> openai.AsyncOpenAI:
            client = openai.AsyncOpenAI(base_url=upstream.openai_url, api_key=api_key, max_retries=0)
            stack.push_async_callback(client.close)
            return client

        yield make


async def wait_until(condition: Callable[[], bool], timeout: float = 3.0) -> None:
    """Poll for something the server does after the client has moved on (no fixed sleeps)."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.01)


async def test_non_streaming_completion(serve: Serve, openai_client) -> None:
    upstream = FakeUpstream(name="a", reply_text="Hello from the fake.")
    await serve(upstream)
    raw = await openai_client(upstream).chat.completions.with_raw_response.create(
        model="gpt-x", messages=MESSAGES
    )
    completion = raw.parse()

    assert raw.headers["x-fake-upstream"] == "a"
    assert completion.object == "chat.completion"
    assert completion.model == "gpt-x"
    assert completion.choices[0].message.role == "assistant"
    assert completion.choices[0].message.content == "Hello from the fake."
    assert completion.choices[0].finish_reason == "stop"
    assert completion.usage.completion_tokens == 4
    assert completion.usage.prompt_tokens == 4  # 14 characters / 4, rounded up
    assert completion.usage.total_tokens == 8
    (record,) = upstream.requests
    assert (record.method, record.path, record.kind) == ("POST", "/v1/chat/completions", "chat")
    assert record.status == 200
    assert record.completed and not record.cancelled and not record.stream
    assert record.headers["authorization"] == "Bearer sk-test"
    assert record.json["messages"] == MESSAGES
    assert upstream.chat_count == 1 and upstream.in_flight == 0


async def test_stream_chunks_arrive_one_by_one_and_reassemble(serve: Serve, openai_client) -> None:
    upstream = FakeUpstream(reply_text="one two three four", token_delay=0.05)
    await serve(upstream)
    stream = await openai_client(upstream).chat.completions.create(
        model="m", messages=MESSAGES, stream=True, stream_options={"include_usage": True}
    )
    arrivals, pieces, finish, usage = [], [], None, None
    async for chunk in stream:
        arrivals.append(time.monotonic())
        if chunk.choices:
            if not pieces:
                assert chunk.choices[0].delta.role == "assistant"
                # The first token is on the client while the server is still generating.
                assert not upstream.chat_requests[0].completed
            pieces.append(chunk.choices[0].delta.content or "")
            finish = chunk.choices[0].finish_reason or finish
        else:
            usage = chunk.usage

    assert "".join(pieces) == "one two three four"
    assert finish == "stop"
    assert usage.completion_tokens == 4
    # Four delays (three between tokens, one before the finish chunk): not one buffered write.
    assert arrivals[-1] - arrivals[0] >= 4 * 0.05 * 0.8
    record = upstream.chat_requests[0]
    assert record.stream and record.completed and record.chunks_sent == 7  # 4 tokens, finish, usage, DONE


async def test_stream_is_server_sent_events(serve: Serve) -> None:
    upstream = FakeUpstream(reply_text="a b")
    url = await serve(upstream)
    async with aiohttp.ClientSession() as session:
        body = {"messages": MESSAGES, "stream": True}
        async with session.post(url + "/v1/chat/completions", json=body) as resp:
            assert resp.content_type == "text/event-stream"
            text = await resp.text()
    events = text.split("\n\n")
    assert events[-2:] == ["data: [DONE]", ""]
    assert all(event.startswith("data: {") for event in events[:-2])
    assert '"model":"fake-model"' in events[0]  # no model in the request: the upstream's own


async def test_max_tokens_caps_the_reply(serve: Serve, openai_client) -> None:
    upstream = FakeUpstream(reply_text="a b c d e")
    await serve(upstream)
    client = openai_client(upstream)
    completion = await client.chat.completions.create(model="m", messages=MESSAGES, max_tokens=2)
    assert completion.choices[0].message.content == "a b"
    assert completion.choices[0].finish_reason == "length"
    stream = await client.chat.completions.create(model="m", messages=MESSAGES, max_tokens=3, stream=True)
    assert "".join([c.choices[0].delta.content or "" async for c in stream if c.choices]) == "a b c"


async def test_scripted_sequence_then_default(serve: Serve, openai_client) -> None:
    upstream = FakeUpstream(script=[throttled_ms(1000), unavailable(), Reply()])
    await serve(upstream)
    client = openai_client(upstream)

    with pytest.raises(openai.RateLimitError) as limited:
        await client.chat.completions.create(model="m", messages=MESSAGES)
    assert limited.value.response.headers["retry-after-ms"] == "1000"
    assert limited.value.code == "429"
    with pytest.raises(openai.InternalServerError) as down:
        await client.chat.completions.create(model="m", messages=MESSAGES)
    assert down.value.status_code == 503
    for _ in range(2):  # the scripted 200, then the default forever
        await client.chat.completions.create(model="m", messages=MESSAGES)

    assert [r.status for r in upstream.chat_requests] == [429, 503, 200, 200]
    assert upstream.script == []


async def test_script_accepts_bare_status_codes(serve: Serve, openai_client) -> None:
    script = [429, 500]
    upstream = FakeUpstream(script=script)
    await serve(upstream)
    client = openai_client(upstream)
    with pytest.raises(openai.RateLimitError) as limited:
        await client.chat.completions.create(model="m", messages=MESSAGES)
    assert limited.value.body == {"message": "Too Many Requests", "type": "rate_limit_exceeded",
                                  "param": None, "code": "429"}
    with pytest.raises(openai.InternalServerError):
        await client.chat.completions.create(model="m", messages=MESSAGES)
    assert script == [429, 500]  # the caller's list is not consumed


RETRY_DATE = datetime(2030, 1, 2, 3, 4, 5, tzinfo=UTC)


@pytest.mark.parametrize(
    ("reply", "error", "expected", "absent"),
    [
        (throttled(2), openai.RateLimitError, {"retry-after": "2"}, "retry-after-ms"),
        (throttled(0.25), openai.RateLimitError, {"retry-after": "0.25"}, "retry-after-ms"),
        (throttled_ms(1500), openai.RateLimitError, {"retry-after-ms": "1500"}, "retry-after"),
        (throttled_date(RETRY_DATE), openai.RateLimitError,
         {"retry-after": "Wed, 02 Jan 2030 03:04:05 GMT"}, "retry-after-ms"),
        (throttled_ratelimit_reset(), openai.RateLimitError,
         {"x-ratelimit-reset-requests": "6m0s", "x-ratelimit-reset-tokens": "20ms"}, "retry-after"),
        (unavailable(retry_after=3), openai.InternalServerError, {"retry-after": "3"}, "retry-after-ms"),
        (unavailable(), openai.InternalServerError, {}, "retry-after"),
    ],
    ids=["seconds", "fractional", "ms", "http-date", "ratelimit-reset", "503-retry-after", "503-bare"],
)
async def test_throttling_header_forms(serve: Serve, openai_client, reply, error, expected, absent) -> None:
    upstream = FakeUpstream(script=[reply])
    await serve(upstream)
    with pytest.raises(error) as caught:
        await openai_client(upstream).chat.completions.create(model="m", messages=MESSAGES)
    headers = caught.value.response.headers
    assert {name: headers.get(name) for name in expected} == expected
    assert absent not in headers
    assert caught.value.code == str(reply.status)
    assert caught.value.type in {"rate_limit_exceeded", "server_error"}


def test_throttled_date_treats_naive_datetimes_as_utc() -> None:
    when = datetime(2030, 1, 2, 3, 4, 5)
    assert parsedate_to_datetime(throttled_date(when).headers["Retry-After"]) == RETRY_DATE


async def test_api_key_is_required_when_set(serve: Serve, openai_client) -> None:
    upstream = FakeUpstream(api_key="right")
    url = await serve(upstream)
    with pytest.raises(openai.AuthenticationError) as denied:
        await openai_client(upstream, api_key="wrong").chat.completions.create(model="m", messages=MESSAGES)
    assert denied.value.code == "invalid_api_key"
    await openai_client(upstream, api_key="right").chat.completions.create(model="m", messages=MESSAGES)
    async with aiohttp.ClientSession() as session:
        async with session.get(url + "/v1/models", headers={"api-key": "right"}) as resp:
            assert resp.status == 200
        async with session.get(url + "/v1/models") as resp:
            assert resp.status == 401
        async with session.get(url + "/health") as resp:
            assert resp.status == 200  # health probes carry no key
    assert [r.status for r in upstream.chat_requests] == [401, 200]


async def test_azure_deployment_api(serve: Serve) -> None:
    upstream = FakeUpstream(name="az", api_key="azkey", deployment="gpt-4o", model="gpt-4o-2024")
    url = await serve(upstream)
    async with openai.AsyncAzureOpenAI(
        azure_endpoint=url, api_key="azkey", api_version="2024-10-21", max_retries=0
    ) as client:
        completion = await client.chat.completions.create(model="gpt-4o", messages=MESSAGES)
        assert completion.choices[0].message.content
        stream = await client.chat.completions.create(model="gpt-4o", messages=MESSAGES, stream=True)
        assert "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])
        with pytest.raises(openai.NotFoundError) as missing:
            await client.chat.completions.create(model="other", messages=MESSAGES)
        assert missing.value.code == "DeploymentNotFound"
        assert [m.id for m in (await client.models.list()).data] == ["gpt-4o-2024"]

    first = upstream.chat_requests[0]
    assert first.path == "/openai/deployments/gpt-4o/chat/completions"
    assert first.deployment == "gpt-4o" and first.query == {"api-version": "2024-10-21"}
    assert first.headers["api-key"] == "azkey"
    async with aiohttp.ClientSession(headers={"api-key": "azkey"}) as session:
        path = "/openai/deployments/gpt-4o/chat/completions"
        async with session.post(url + path, json={"messages": MESSAGES}) as resp:
            assert resp.status == 404  # no api-version: Azure says "Resource not found"
        async with session.post(url + "/openai/v1/chat/completions", json={"messages": MESSAGES}) as resp:
            assert resp.status == 200


async def test_tpm_budget_with_injected_clock(serve: Serve, openai_client) -> None:
    clock = FakeClock()
    # Each request costs 10 prompt tokens (40 characters / 4) + 10 completion tokens.
    upstream = FakeUpstream(tpm_budget=50, clock=clock, reply_text=" ".join("abcdefghij"))
    await serve(upstream)
    client = openai_client(upstream).chat.completions
    messages = [{"role": "user", "content": "x" * 40}]

    async def ask_at(t: float) -> dict[str, str]:
        clock.now = 1000.0 + t
        raw = await client.with_raw_response.create(model="m", messages=messages)
        return dict(raw.headers)

    assert (await ask_at(0))["x-ratelimit-remaining-tokens"] == "30"
    assert (await ask_at(10))["x-ratelimit-remaining-tokens"] == "10"
    with pytest.raises(openai.RateLimitError) as over:
        await ask_at(20)
    # The 20 tokens spent at t=0 leave the window at t=60: 40 s from now.
    headers = over.value.response.headers
    assert (headers["retry-after-ms"], headers["retry-after"]) == ("40000", "40")
    assert headers["x-ratelimit-remaining-tokens"] == "10"
    with pytest.raises(openai.RateLimitError) as still_over:
        await ask_at(59.5)
    assert (still_over.value.response.headers["retry-after-ms"],
            still_over.value.response.headers["retry-after"]) == ("500", "1")
    assert (await ask_at(60))["x-ratelimit-remaining-tokens"] == "10"
    assert [r.status for r in upstream.chat_requests] == [200, 200, 429, 429, 200]


async def test_drop_connection_is_a_connection_error(serve: Serve, openai_client) -> None:
    upstream = FakeUpstream(script=[Reply(drop_connection=True)])
    await serve(upstream)
    client = openai_client(upstream)
    with pytest.raises(openai.APIConnectionError):
        await client.chat.completions.create(model="m", messages=MESSAGES)
    await client.chat.completions.create(model="m", messages=MESSAGES)  # the fake is still serving
    dropped, ok = upstream.chat_requests
    assert dropped.status is None and dropped.dropped
    assert not dropped.completed and not dropped.cancelled
    assert ok.status == 200
    assert upstream.stats()["dropped"] == 1


async def test_mid_stream_abort(serve: Serve, openai_client) -> None:
    upstream = FakeUpstream(reply_text="a b c d e", script=[Reply(fail_after_chunks=2)])
    await serve(upstream)
    received = []
    with pytest.raises(openai.APIConnectionError):
        client = openai_client(upstream)
        stream = await client.chat.completions.create(model="m", messages=MESSAGES, stream=True)
        async for chunk in stream:
            received.append(chunk.choices[0].delta.content)
    assert received == ["a", " b"]
    record = upstream.chat_requests[0]
    assert (record.status, record.chunks_sent, record.dropped, record.completed) == (200, 2, True, False)


async def test_truncated_non_streaming_body(serve: Serve, openai_client) -> None:
    upstream = FakeUpstream(script=[Reply(fail_after_chunks=0)])
    await serve(upstream)
    with pytest.raises(openai.APIConnectionError):
        await openai_client(upstream).chat.completions.create(model="m", messages=MESSAGES)
    assert upstream.chat_requests[0].dropped


@contextlib.asynccontextmanager
async def listening(upstream: FakeUpstream, handler_cancellation: bool) -> AsyncIterator[str]:
    """Like upstream.serve(), with aiohttp's handler cancellation switchable (off by default in aiohttp)."""
    runner = web.AppRunner(upstream.make_app(), handler_cancellation=handler_cancellation, shutdown_timeout=1)
    await runner.setup()
    try:
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        yield f"http://127.0.0.1:{runner.addresses[0][1]}"
    finally:
        await runner.cleanup()


@pytest.mark.parametrize("handler_cancellation", [True, False])
async def test_client_leaving_mid_stream_marks_cancelled(handler_cancellation: bool) -> None:
    upstream = FakeUpstream(reply_text="a b c d e f g h", token_delay=0.05)
    async with listening(upstream, handler_cancellation) as url, aiohttp.ClientSession() as session:
        resp = await session.post(url + "/v1/chat/completions", json={"messages": MESSAGES, "stream": True})
        assert (await resp.content.readline()).startswith(b"data: ")
        resp.close()  # drops the connection
        await wait_until(lambda: upstream.in_flight == 0)
    record = upstream.chat_requests[0]
    assert record.cancelled and not record.completed and not record.dropped
    assert 1 <= record.chunks_sent < 8
    assert upstream.stats()["cancelled"] == 1


@pytest.mark.parametrize("handler_cancellation", [True, False])
async def test_client_leaving_during_delay_marks_cancelled(handler_cancellation: bool) -> None:
    upstream = FakeUpstream(default=Reply(delay=0.3))
    async with listening(upstream, handler_cancellation) as url, aiohttp.ClientSession() as session:
        with pytest.raises(asyncio.TimeoutError):
            await session.post(url + "/v1/chat/completions", json={"messages": MESSAGES},
                               timeout=aiohttp.ClientTimeout(total=0.05))
        await wait_until(lambda: upstream.in_flight == 0)
    record = upstream.chat_requests[0]
    assert record.cancelled and not record.completed and record.status is None


async def test_concurrency_is_tracked(serve: Serve, openai_client) -> None:
    upstream = FakeUpstream(latency=0.1)
    await serve(upstream)
    client = openai_client(upstream)
    await asyncio.gather(*[client.chat.completions.create(model="m", messages=MESSAGES) for _ in range(5)])
    assert (upstream.max_in_flight, upstream.in_flight, upstream.chat_count) == (5, 0, 5)


async def test_health(serve: Serve) -> None:
    upstream = FakeUpstream(health_status=503)
    url = await serve(upstream)
    async with aiohttp.ClientSession() as session:
        async with session.get(url + "/health") as resp:
            assert resp.status == 503
            assert await resp.json() == {"error": {"code": 503, "message": "Loading model",
                                                   "type": "unavailable_error"}}
        upstream.health_status = 200
        async with session.get(url + "/health") as resp:
            assert (resp.status, await resp.json()) == (200, {"status": "ok"})
    assert [r.kind for r in upstream.requests] == ["health", "health"]


async def test_models_and_bad_requests(serve: Serve, openai_client) -> None:
    upstream = FakeUpstream(model="tiny")
    url = await serve(upstream)
    models = await openai_client(upstream).models.list()
    assert [(m.id, m.object, m.owned_by) for m in models.data] == [("tiny", "model", "fake")]
    async with aiohttp.ClientSession() as session:
        async with session.post(url + "/v1/chat/completions", data=b"{not json") as resp:
            assert resp.status == 400
            assert (await resp.json())["error"]["type"] == "invalid_request_error"
        async with session.post(url + "/v1/chat/completions", json={"model": "m"}) as resp:
            assert resp.status == 400
            assert (await resp.json())["error"]["param"] == "messages"
        async with session.post(url + "/v1/nowhere", json={}) as resp:
            assert resp.status == 404
            assert resp.headers["x-fake-upstream"] == "fake"
            assert (await resp.json())["error"]["message"] == "Invalid URL (POST /v1/nowhere)"
    assert [r.status for r in upstream.requests] == [200, 400, 400, 404]
    assert upstream.script == [] and upstream.chat_count == 2  # rejected requests consume no script


async def test_control_endpoints(serve: Serve) -> None:
    upstream = FakeUpstream()
    url = await serve(upstream)
    chat = {"messages": MESSAGES}
    async with aiohttp.ClientSession(base_url=url) as session:
        script = {"script": [429, {"status": 503, "headers": {"Retry-After": "2"}}],
                  "default": {"status": 500}}
        async with session.post("/_fake/script", json=script) as resp:
            assert resp.status == 200
            assert (await resp.json())["script_length"] == 2
        statuses = []
        for _ in range(3):
            async with session.post("/v1/chat/completions", json=chat) as resp:
                statuses.append(resp.status)
        assert statuses == [429, 503, 500]
        async with session.get("/_fake/stats") as resp:
            stats = await resp.json()
        assert stats["chat_requests"] == 3
        assert stats["by_status"] == {"429": 1, "500": 1, "503": 1}
        assert (stats["cancelled"], stats["max_in_flight"], stats["script_remaining"]) == (0, 1, 0)
        async with session.post("/_fake/reset") as resp:
            assert (await resp.json())["chat_requests"] == 0
        async with session.post("/_fake/script", json={"script": [{"stauts": 500}]}) as resp:
            assert resp.status == 400
            assert "stauts" in (await resp.json())["error"]["message"]
    assert upstream.requests == [] and upstream.default == Reply(status=500)


@pytest.mark.parametrize(
    ("body", "message"),
    [({"script": 429}, '"script" must be a list'), ({"script": ["429"]}, "a reply must be a status code")],
    ids=["script-not-a-list", "reply-not-an-object"],
)
async def test_a_script_of_the_wrong_json_type_is_a_400(serve: Serve, body: object, message: str) -> None:
    url = await serve(FakeUpstream())
    async with aiohttp.ClientSession(base_url=url) as session, session.post("/_fake/script", json=body) as resp:
        assert resp.status == 400
        assert message in (await resp.json())["error"]["message"]


async def test_works_with_the_aiohttp_server_fixture(aiohttp_server) -> None:
    upstream = FakeUpstream(name="fixture")
    server = await aiohttp_server(upstream.make_app())
    async with openai.AsyncOpenAI(base_url=str(server.make_url("/v1")), api_key="k", max_retries=0) as client:
        raw = await client.chat.completions.with_raw_response.create(model="m", messages=MESSAGES)
    assert raw.headers["x-fake-upstream"] == "fixture"
    assert upstream.chat_count == 1


async def test_serve_exposes_urls() -> None:
    upstream = FakeUpstream()
    async with upstream.serve() as url:
        assert url.startswith("http://127.0.0.1:") and upstream.base_url == url
        assert upstream.openai_url == url + "/v1"
    assert upstream.base_url is None


def test_reply_validation() -> None:
    with pytest.raises(ValueError):
        Reply(status=42)
    with pytest.raises(ValueError):
        Reply(delay=-1)
    with pytest.raises(ValueError, match="unknown reply fields"):
        Reply.from_json({"status": 200, "dely": 1})
    with pytest.raises(ValueError):
        Reply.from_json({"status": "429"})
    assert Reply.from_json({"status": 429, "headers": {"retry-after-ms": "5"}, "delay": 1}) == Reply(
        status=429, headers={"retry-after-ms": "5"}, delay=1
    )


@pytest.mark.parametrize(
    "args",
    [["--port", "not-a-port"], ["--port", "1", "--retry-after", "1"],
     ["--port", "1", "--status", "429", "--retry-after", "1", "--retry-after-ms", "5"],
     ["--port", "1", "--tpm", "0"]],
    ids=["bad-port", "retry-after-without-error-status", "both-retry-forms", "zero-tpm"],
)
def test_cli_rejects_bad_arguments(args: list[str]) -> None:
    result = subprocess.run([sys.executable, "-m", "backends.fake", *args], cwd=ROOT, capture_output=True,
                            text=True, timeout=30, check=False)
    assert result.returncode == 2
    assert "usage:" in result.stderr and "Traceback" not in result.stderr


async def test_cli_serves_until_sigterm() -> None:
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "backends.fake", "--port", "0", "--name", "cli", "--status", "429",
        "--retry-after-ms", "250", "--tokens", "3", cwd=ROOT, stdout=asyncio.subprocess.PIPE,
    )
    try:
        line = (await asyncio.wait_for(process.stdout.readline(), timeout=20)).decode()
        url = line.rsplit(" ", 1)[-1].strip()
        assert line.startswith("fake upstream cli listening on http://127.0.0.1:")
        async with aiohttp.ClientSession(base_url=url) as session:
            async with session.post("/v1/chat/completions", json={"messages": MESSAGES}) as resp:
                assert (resp.status, resp.headers["retry-after-ms"]) == (429, "250")
                assert resp.headers["x-fake-upstream"] == "cli"
            async with session.post("/_fake/script", json={"script": [200]}) as resp:
                assert resp.status == 200
            async with session.post("/v1/chat/completions", json={"messages": MESSAGES}) as resp:
                assert (await resp.json())["usage"]["completion_tokens"] == 3
    finally:
        process.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(process.wait(), timeout=10) == 0
