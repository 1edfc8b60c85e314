"""Stopping the gateway (SIGTERM) drains it: what finishes within the grace finishes, what does not is told so.

A real ``python -m gateway`` process in front of fake upstreams that stream slowly; the grace is short (1 s),
so nothing here waits for seconds. What is promised (README, "What the gateway guarantees about delivery"):
no new connections from the signal on, a stream that ends within the grace ends whole ([DONE]), one still
running when the grace is over ends with an SSE error event the openai SDK raises (never a clean end), a
request with nothing sent yet is answered 503 with Retry-After, and the process exits right after the grace.
"""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import time
from typing import Any

import aiohttp
import openai
import pytest

from gateway import keys
from gateway.settings import GatewaySettings
from tests.gateway.gateway_process import gateway_process, workers_started

GRACE = 1.0
HI = [{"role": "user", "content": "hi"}]
ENDLESS = " ".join(["word"] * 400)  # 400 chunks, 50 ms apart: 20 s, far past the grace


async def _refused(port: int, deadline: float) -> bool:
    """Whether new connections to ``port`` are refused before ``deadline`` (monotonic)."""
    while time.monotonic() < deadline:
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
        except (ConnectionRefusedError, ConnectionResetError):  # reset: it was in the backlog as listening stopped
            return True
        writer.close()
        await asyncio.sleep(0.01)
    return False


async def _exit_after(process: subprocess.Popen[bytes], signalled: float) -> float:
    await asyncio.to_thread(process.wait, 10)
    return time.monotonic() - signalled


def _log(process: subprocess.Popen[bytes]) -> list[dict[str, Any]]:
    out, _ = process.communicate(timeout=10)
    return [json.loads(line) for line in out.decode().splitlines()]


async def test_sigterm_drains_streams_in_flight_then_ends_what_is_left(upstreams):
    quick = await upstreams(name="quick", reply_text="one two three four", token_delay=0.05)
    endless = await upstreams(name="endless", reply_text=ENDLESS, token_delay=0.05)
    stuck = await upstreams(name="stuck", latency=30.0)  # a non-streamed answer that will not come in time
    backends = [{"name": u.name, "url": u.openai_url, "models": [u.name]} for u in (quick, endless, stuck)]
    env = {"GATEWAY_BACKENDS": json.dumps(backends), "GATEWAY_SHUTDOWN_GRACE": str(GRACE)}
    async with gateway_process(env) as (client, process), aiohttp.ClientSession() as http:
        url = str(client.base_url).rstrip("/")
        port = client.base_url.port
        assert port is not None
        short = await http.post(url + "/chat/completions", json={"model": "quick", "messages": HI, "stream": True})
        first = await short.content.readline()
        long = await client.chat.completions.create(model="endless", messages=HI, stream=True)
        await anext(aiter(long))
        waiting = asyncio.create_task(http.post(url + "/chat/completions", json={"model": "stuck", "messages": HI}))
        while stuck.in_flight == 0:
            await asyncio.sleep(0.01)

        process.send_signal(signal.SIGTERM)
        signalled = time.monotonic()
        assert await _refused(port, signalled + GRACE / 2), "still accepting connections while draining"

        # (a) A stream that ends within the grace ends whole, [DONE] included.
        rest = await short.read()
        assert first.startswith(b"data: ") and rest.rstrip().endswith(b"data: [DONE]")
        assert time.monotonic() - signalled < GRACE

        # (b) One still running when the grace is over: an error event, which the SDK raises.
        with pytest.raises(openai.APIError, match="shutting down") as raised:
            async for _ in long:
                pass
        assert isinstance(raised.value.body, dict) and raised.value.body["code"] == "gateway_shutting_down"
        assert time.monotonic() - signalled >= GRACE

        # Not a byte of an answer yet: 503 with Retry-After, so the client can try another replica.
        answer = await waiting
        assert answer.status == 503 and answer.headers["Retry-After"] == "1"
        assert (await answer.json())["error"]["code"] == "gateway_shutting_down"

        # (d) The process exits right after the grace.
        elapsed = await _exit_after(process, signalled)
        assert GRACE <= elapsed < GRACE + 1.0, elapsed
        assert process.returncode == 0

    lines = _log(process)
    events = [line["event"] for line in lines]
    assert events.index("gateway_draining") < events.index("gateway_grace_over")
    requests = {line["model"]: line for line in lines if line["event"] == "request"}
    assert requests["quick"]["status"] == 200 and "stream_error" not in requests["quick"]
    assert "shutting down" in requests["endless"]["stream_error"]
    assert requests["stuck"]["status"] == 503
    [cut] = [line for line in lines if line["event"] == "upstream_attempt"]
    assert cut["backend"] == "endless" and cut["outcome"] == "gateway_shutdown"


async def test_workers_each_drain_on_the_parents_signal(upstreams):
    endless = await upstreams(name="endless", reply_text=ENDLESS, token_delay=0.05)
    env = {"GATEWAY_BACKENDS": endless.openai_url, "GATEWAY_WORKERS": "2", "GATEWAY_SHUTDOWN_GRACE": str(GRACE)}
    async with gateway_process(env) as (client, process):
        early = await workers_started(process, 2)
        streams = [await client.chat.completions.create(model="m", messages=HI, stream=True) for _ in range(2)]
        for stream in streams:
            await anext(aiter(stream))
        process.send_signal(signal.SIGTERM)  # the parent only, as an orchestrator does
        signalled = time.monotonic()
        for stream in streams:
            with pytest.raises(openai.APIError, match="shutting down"):
                async for _ in stream:
                    pass
        elapsed = await _exit_after(process, signalled)
        assert GRACE <= elapsed < GRACE + 1.5, elapsed
        assert process.returncode == 0
    events = [json.loads(line)["event"] for line in early] + [line["event"] for line in _log(process)]
    # Each worker was told; the one idle (the kernel may give both streams to one) exits at once.
    assert events.count("gateway_draining") == 2 and events.count("gateway_grace_over") >= 1


async def test_readyz_says_draining_from_the_signal_on(upstreams, gateway):
    up = await upstreams(name="up")
    gw = await gateway([up])
    async with aiohttp.ClientSession() as http:
        async with http.get(gw.url + "/readyz") as response:
            assert response.status == 200
        gw.app[keys.DRAIN].draining = True  # what gateway.server sets when SIGTERM/SIGINT arrives
        async with http.get(gw.url + "/readyz") as response:
            assert response.status == 503
            assert await response.json() == {"status": "draining"}


def test_make_up_waits_past_the_grace_before_sigkill(monkeypatch):
    from scripts.services import gateway as gateway_service
    from scripts.supervisor import Console

    default = GatewaySettings.model_fields["shutdown_grace"].default
    monkeypatch.delenv("GATEWAY_SHUTDOWN_GRACE", raising=False)
    assert gateway_service(host="127.0.0.1", port=1, backends=[]).child(Console()).stop_grace > default + 1
    monkeypatch.setenv("GATEWAY_SHUTDOWN_GRACE", "90")
    assert gateway_service(host="127.0.0.1", port=1, backends=[]).stop_grace > 91
