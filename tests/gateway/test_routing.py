"""Distribution, priorities, failover and cooldowns, through real sockets and the official SDK."""

from __future__ import annotations

import asyncio
from collections import Counter
from datetime import UTC, datetime, timedelta

import aiohttp
import openai
import pytest

from backends.fake import (
    Reply,
    throttled,
    throttled_date,
    throttled_ms,
    throttled_ratelimit_reset,
    unavailable,
)
from gateway.clock import SystemClock
from tests.gateway.conftest import chat


async def test_spreads_requests_evenly_and_labels_each_response(upstreams, gateway):
    a, b = await upstreams(name="a"), await upstreams(name="b")
    gw = await gateway([a, b])
    served = Counter()
    async with gw.client() as client:
        for _ in range(10):
            raw = await chat(client)
            assert raw.headers["x-gateway-attempts"] == "1"
            assert raw.headers["x-request-id"]
            served[raw.headers["x-gateway-backend"]] += 1
            assert raw.parse().choices[0].message.content
    assert served == {"a": 5, "b": 5}
    assert a.chat_count == b.chat_count == 5


async def test_weights_shape_the_split(upstreams, gateway):
    a, b = await upstreams(name="a"), await upstreams(name="b")
    gw = await gateway([{"name": "a", "url": a.openai_url, "weight": 3}, {"name": "b", "url": b.openai_url}])
    async with gw.client() as client:
        await asyncio.gather(*(chat(client) for _ in range(8)))
    assert (a.chat_count, b.chat_count) == (6, 2)


async def test_request_id_is_taken_from_the_client_and_forwarded(upstreams, gateway):
    a = await upstreams(name="a")
    gw = await gateway([a])
    async with gw.client() as client:
        raw = await chat(client, extra_headers={"x-request-id": "req-123"})
    assert raw.headers["x-request-id"] == "req-123"
    assert a.chat_requests[0].headers["x-request-id"] == "req-123"


async def test_routing_headers_can_be_turned_off(upstreams, gateway):
    a = await upstreams(name="a")
    gw = await gateway([a], expose_routing_headers=False)
    async with gw.client() as client:
        raw = await chat(client)
    assert "x-gateway-backend" not in raw.headers and raw.headers["x-request-id"]


async def test_priority_tier_with_spillover_on_throttling(upstreams, gateway, clock):
    primary = await upstreams(name="primary", script=[throttled(30)])
    spare = await upstreams(name="spare")
    gw = await gateway([{"name": "primary", "url": primary.openai_url, "priority": 0},
                        {"name": "spare", "url": spare.openai_url, "priority": 1}])
    async with gw.client() as client:
        first = await chat(client)
        assert first.headers["x-gateway-backend"] == "spare" and first.headers["x-gateway-attempts"] == "2"
        for _ in range(3):
            assert (await chat(client)).headers["x-gateway-backend"] == "spare"
        clock.advance(30.01)
        for _ in range(3):
            assert (await chat(client)).headers["x-gateway-backend"] == "primary"
    assert primary.chat_count == 4 and spare.chat_count == 4


async def test_throttled_backend_gets_no_traffic_during_its_cooldown(upstreams, gateway, clock):
    a = await upstreams(name="a", script=[throttled_ms(5000)])
    b = await upstreams(name="b")
    gw = await gateway([a, b])
    async with gw.client() as client:
        results = [await chat(client) for _ in range(6)]
        assert [r.headers["x-gateway-backend"] for r in results] == ["b"] * 6
        assert a.chat_count == 1  # the one 429, then silence
        clock.advance(4.9)
        await chat(client)
        await chat(client)
        assert a.chat_count == 1
        clock.advance(0.2)
        # Its cooldown is over: one request goes first (a probe) while the rest of the burst goes elsewhere...
        burst = await asyncio.gather(*(chat(client) for _ in range(4)))
        assert sorted(r.headers["x-gateway-backend"] for r in burst) == ["a", "b", "b", "b"]
        assert a.chat_count == 2
        # ...and once it has answered, the backend takes its share again.
        after = [(await chat(client)).headers["x-gateway-backend"] for _ in range(4)]
    assert after.count("a") == 2 and a.chat_count == 4


@pytest.mark.parametrize(
    ("reply", "expected"),
    [
        (throttled(7), 7.0),
        (throttled_ms(1500), 1.5),
        (throttled_ratelimit_reset(requests="6m0s", tokens="20ms"), 360.0),
        (unavailable(retry_after=3), 3.0),
        (Reply(status=429), 10.0),  # no hint: the configured default
    ],
)
async def test_cooldown_follows_every_header_form(upstreams, gateway, clock, reply, expected):
    a = await upstreams(name="a", script=[reply])
    b = await upstreams(name="b")
    gw = await gateway([a, b], cooldown_default=10.0, cooldown_max=600)
    async with gw.client() as client:
        raw = await chat(client)
    assert raw.headers["x-gateway-backend"] == "b"
    state = gw.balancer.by_name["a"]
    assert state.cooldown_until - clock.monotonic() == pytest.approx(expected, abs=0.01)


async def test_cooldown_from_an_http_date(upstreams, gateway, clock):
    when = datetime.fromtimestamp(clock.wall(), tz=UTC) + timedelta(seconds=42)
    a = await upstreams(name="a", script=[throttled_date(when)])
    b = await upstreams(name="b")
    gw = await gateway([a, b])
    async with gw.client() as client:
        await chat(client)
    assert gw.balancer.by_name["a"].cooldown_until - clock.monotonic() == pytest.approx(42, abs=1)


async def test_cooldown_is_capped(upstreams, gateway, clock):
    a = await upstreams(name="a", script=[throttled(86400)])
    b = await upstreams(name="b")
    gw = await gateway([a, b], cooldown_max=60)
    async with gw.client() as client:
        await chat(client)
    assert gw.balancer.by_name["a"].cooldown_until - clock.monotonic() == pytest.approx(60)


async def test_all_throttled_answers_429_at_once_with_soonest_retry_after(upstreams, gateway, clock):
    a = await upstreams(name="a", default=throttled(20))
    b = await upstreams(name="b", default=throttled_ms(2500))
    gw = await gateway([a, b])
    async with gw.client() as client:
        with pytest.raises(openai.RateLimitError) as caught:
            await chat(client)
        response = caught.value.response
        assert response.headers["retry-after"] == "3"
        assert response.headers["retry-after-ms"] == "2500"
        assert caught.value.code == "all_backends_throttled"
        # While both cool down nobody is asked at all: the answer comes from the gateway alone.
        with pytest.raises(openai.RateLimitError) as again:
            await chat(client)
        assert again.value.response.headers["retry-after"] == "3"
        assert a.chat_count == b.chat_count == 1
        clock.advance(2.6)
        b.set_script([], default=Reply())
        assert (await chat(client)).headers["x-gateway-backend"] == "b"


async def test_sdk_backoff_recovers_from_all_throttled(upstreams, gateway):
    """The SDK's own retry honours our retry-after-ms (50 ms here, on the real clock)."""
    a = await upstreams(name="a", script=[throttled_ms(50)])
    gw = await gateway([a], clock=SystemClock())
    async with gw.client(max_retries=2) as client:
        raw = await chat(client)
    assert raw.headers["x-gateway-backend"] == "a" and raw.retries_taken >= 1
    assert a.chat_count == 2


async def test_5xx_and_connection_errors_fail_over(upstreams, gateway):
    a = await upstreams(name="a", script=[Reply(status=500), Reply(drop_connection=True), Reply(status=502)])
    b = await upstreams(name="b")
    gw = await gateway([a, b])
    async with gw.client() as client:
        for _ in range(4):
            raw = await chat(client)
            assert raw.parse().choices[0].message.content
    assert b.chat_count >= 3


async def test_client_errors_are_not_retried_and_pass_through(upstreams, gateway):
    body = {"error": {"message": "max_tokens is too large", "type": "invalid_request_error", "code": "bad"}}
    a = await upstreams(name="a", default=Reply(status=400, body=body))
    b = await upstreams(name="b", default=Reply(status=400, body=body))
    gw = await gateway([a, b])
    async with gw.client() as client:
        with pytest.raises(openai.BadRequestError) as caught:
            await chat(client)
    assert caught.value.message.endswith("max_tokens is too large")
    assert caught.value.response.headers["x-gateway-attempts"] == "1"
    assert a.chat_count + b.chat_count == 1


async def test_no_backend_could_answer_is_502(upstreams, gateway):
    a = await upstreams(name="a", default=Reply(status=500))
    b = await upstreams(name="b", default=Reply(status=500))
    gw = await gateway([a, b], max_attempts=5)
    async with gw.client() as client:
        with pytest.raises(openai.InternalServerError) as caught:
            await chat(client)
    assert caught.value.status_code == 502
    assert a.chat_count == b.chat_count == 1  # each backend once per request, never twice


async def test_max_attempts_bounds_the_failover(upstreams, gateway):
    ups = [await upstreams(name=n, default=Reply(status=503, headers={"retry-after": "1"})) for n in "abcd"]
    gw = await gateway(ups, max_attempts=2)
    async with gw.client() as client:
        with pytest.raises(openai.APIStatusError):
            await chat(client)
    assert sum(u.chat_count for u in ups) == 2


async def test_circuit_breaker_ejects_then_probes(upstreams, gateway, clock):
    a = await upstreams(name="a", default=Reply(drop_connection=True))
    b = await upstreams(name="b")
    gw = await gateway([a, b], eject_after_failures=2, eject_base=10)
    async with gw.client() as client:
        for _ in range(6):
            await chat(client)
        assert a.chat_count == 2  # two failures, then ejected
        clock.advance(10.01)
        await chat(client)
        await chat(client)
        assert a.chat_count == 3  # one probe, failed: ejected for 20 s now
        clock.advance(10.01)
        await chat(client)
        assert a.chat_count == 3
        a.set_script([], default=Reply())
        clock.advance(10.01)
        for _ in range(4):
            await chat(client)
    assert a.chat_count == 5  # probe succeeded, then back in the rotation: a, b, a, b


async def test_all_ejected_is_503_and_readyz_says_so(upstreams, gateway):
    a = await upstreams(name="a", default=Reply(drop_connection=True))
    gw = await gateway([a], eject_after_failures=1, max_attempts=1)
    async with gw.client() as client:
        with pytest.raises(openai.InternalServerError) as first:
            await chat(client)
        assert first.value.status_code == 502
        with pytest.raises(openai.InternalServerError) as second:
            await chat(client)
        assert second.value.status_code == 503
    async with aiohttp.ClientSession() as http, http.get(gw.url + "/readyz") as response:
        assert response.status == 503
        assert (await response.json())["backends"] == {"a": "ejected"}


async def test_max_concurrency_queues_then_serves(upstreams, gateway):
    a = await upstreams(name="a", latency=0.2)
    gw = await gateway([{"name": "a", "url": a.openai_url, "max_concurrency": 1}], queue_timeout=5)
    async with gw.client() as client:
        results = await asyncio.gather(*(chat(client) for _ in range(3)))
    assert all(r.parse().choices[0].message.content for r in results)
    assert a.max_in_flight == 1


async def test_queue_timeout_answers_429(upstreams, gateway):
    a = await upstreams(name="a", latency=0.5)
    gw = await gateway([{"name": "a", "url": a.openai_url, "max_concurrency": 1}], queue_timeout=0.05)
    async with gw.client() as client:
        outcomes = await asyncio.gather(chat(client), chat(client), return_exceptions=True)
    errors = [o for o in outcomes if isinstance(o, Exception)]
    assert len(errors) == 1 and isinstance(errors[0], openai.RateLimitError)
    assert errors[0].response.headers["retry-after"] == "1"


async def test_least_outstanding_never_doubles_up_while_another_idles(upstreams, gateway):
    a, b = await upstreams(name="a", latency=0.5), await upstreams(name="b", latency=0.5)
    gw = await gateway([{"name": n, "url": u.openai_url, "max_concurrency": 4} for n, u in (("a", a), ("b", b))])
    async with gw.client() as client:
        await asyncio.gather(*(chat(client) for _ in range(2)))
        assert (a.max_in_flight, b.max_in_flight) == (1, 1)
        await asyncio.gather(*(chat(client) for _ in range(4)))
    assert (a.max_in_flight, b.max_in_flight) == (2, 2)


async def test_tpm_budget_throttling_spreads_load(upstreams, gateway):
    fake_time = [0.0]
    a = await upstreams(name="a", tpm_budget=30, clock=lambda: fake_time[0])
    b = await upstreams(name="b")
    gw = await gateway([a, b])
    async with gw.client() as client:
        results = [await chat(client) for _ in range(8)]
    assert all(r.parse().choices[0].message.content for r in results)
    assert any(r.status == 429 for r in a.chat_requests)


async def test_request_ids_reaching_llamacpp_backends_are_uuids(upstreams, gateway):
    a = await upstreams(name="a")
    gw = await gateway([{"name": "a", "url": a.openai_url, "kind": "llamacpp"}])
    async with gw.client() as client:
        generated = await chat(client)
        await chat(client, extra_headers={"x-request-id": "not-a-uuid"})
    import uuid

    first, second = a.chat_requests
    assert uuid.UUID(first.headers["x-request-id"]).hex == generated.headers["x-request-id"]
    assert "x-request-id" not in second.headers  # llama-cpp-python would answer it with a 400


async def test_queued_requests_learn_at_once_when_every_backend_got_throttled(upstreams, gateway):
    a = await upstreams(name="a", latency=0.2, default=throttled(30))
    gw = await gateway([{"name": "a", "url": a.openai_url, "max_concurrency": 1}], queue_timeout=20)
    async with gw.client() as client:
        started = asyncio.get_running_loop().time()
        outcomes = await asyncio.gather(chat(client), chat(client), return_exceptions=True)
        elapsed = asyncio.get_running_loop().time() - started
    assert all(isinstance(o, openai.RateLimitError) for o in outcomes)
    assert {o.response.headers["retry-after"] for o in outcomes} == {"30"}
    assert elapsed < 5  # the queued one did not sit out its 20 s queue timeout
    assert a.chat_count == 1
