"""What an operator sees: JSON routing lines, Prometheus series, models, health and readiness."""

from __future__ import annotations

import aiohttp
import openai
import orjson
import pytest

from backends.fake import Reply, throttled_ms
from tests.gateway.conftest import chat


def log_lines(out: str) -> list[dict]:
    return [orjson.loads(line) for line in out.splitlines() if line.startswith("{")]


async def test_log_stream_shows_who_served_what_and_why_a_backend_was_skipped(upstreams, gateway, capfd):
    a = await upstreams(name="a", script=[throttled_ms(4000)])
    b = await upstreams(name="b")
    gw = await gateway([a, b])
    capfd.readouterr()
    async with gw.client() as client:
        first = await chat(client, extra_headers={"x-request-id": "r1"})
        await chat(client, extra_headers={"x-request-id": "r2"})
    assert first.headers["x-gateway-backend"] == "b"
    lines = log_lines(capfd.readouterr().out)
    r1 = [line for line in lines if line.get("request_id") == "r1"]
    throttled, served, canonical = r1
    assert throttled | {"timestamp": None} == throttled | {
        "event": "upstream_attempt", "backend": "a", "status": 429, "outcome": "throttled", "attempt": 1,
        "cooldown_s": 4.0, "level": "warning", "timestamp": None,
    }
    assert throttled["upstream"].startswith("127.0.0.1:") and throttled["duration_ms"] >= 0
    assert served["backend"] == "b" and served["status"] == 200 and served["attempt"] == 2
    assert canonical["event"] == "request" and canonical["backend"] == "b" and canonical["attempts"] == 2
    assert canonical["tried"] == ["a", "b"] and canonical["prompt_tokens"] > 0
    r2 = next(line for line in lines if line.get("request_id") == "r2" and line["event"] == "request")
    assert r2["skipped"] == {"a": "cooling down for 4.000s"}


async def test_metrics_cover_requests_attempts_latency_state_and_tokens(upstreams, gateway):
    a = await upstreams(name="a", script=[throttled_ms(60_000)])
    b = await upstreams(name="b")
    gw = await gateway([a, b])
    async with gw.client() as client:
        await chat(client)
        await chat(client)
    async with aiohttp.ClientSession() as http, http.get(gw.url + "/metrics") as response:
        assert response.status == 200
        text = await response.text()
    for series in (
        'gateway_requests_total{backend="b",status="200"} 2.0',
        'gateway_upstream_attempts_total{backend="a",outcome="throttled"} 1.0',
        'gateway_upstream_attempts_total{backend="b",outcome="ok"} 2.0',
        'gateway_retries_total{backend="a"} 1.0',
        'gateway_request_duration_seconds_count{backend="b"} 2.0',
        'gateway_upstream_ttfb_seconds_count{backend="b"} 2.0',
        'gateway_backend_state{backend="a",state="cooling"} 1.0',
        'gateway_backend_state{backend="b",state="healthy"} 1.0',
        'gateway_in_flight{backend="a"} 0.0',
        'gateway_tokens_total{backend="b",type="prompt"}',
        "gateway_queue_depth 0.0",
    ):
        assert series in text, series


async def test_models_lists_what_backends_serve(upstreams, gateway):
    a = await upstreams(name="a", model="smollm2")
    b = await upstreams(name="b", model="smollm2")
    gw = await gateway([a, b, {"name": "az", "url": "http://127.0.0.1:9", "kind": "azure", "deployment": "gpt-4o",
                               "api_key": "k"}])
    async with gw.client() as client:
        models = await client.models.list()
    ids = {m.id: m.owned_by for m in models.data}
    assert ids == {"smollm2": "a,b", "gpt-4o": "az"}


async def test_healthz_and_readyz(upstreams, gateway, clock):
    a = await upstreams(name="a", default=Reply(status=429, headers={"retry-after": "5"}))
    gw = await gateway([a])
    async with aiohttp.ClientSession() as http:
        async with http.get(gw.url + "/readyz") as response:
            assert response.status == 200
        async with gw.client() as client:
            with pytest.raises(openai.RateLimitError):
                await chat(client)
        async with http.get(gw.url + "/readyz") as response:
            assert response.status == 503
            assert (await response.json())["backends"] == {"a": "cooling"}
        async with http.get(gw.url + "/healthz") as response:
            assert response.status == 200  # alive, just not ready
        clock.advance(5.01)
        async with http.get(gw.url + "/readyz") as response:
            assert response.status == 200
