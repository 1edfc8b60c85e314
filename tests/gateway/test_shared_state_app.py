"""The gateway app with GATEWAY_STATE_URL, in process: how many Redis calls a request costs, and the metrics."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from typing import Any

import openai
import pytest
from redis.asyncio import Redis

from backends.fake import FakeUpstream
from gateway import keys
from gateway.app import create_app
from gateway.settings import GatewaySettings
from gateway.shared_state import scripts
from gateway.shared_state.store import BreakerRule, Candidate
from tests.gateway.redis_server import RedisServer, redis_server

HI = [{"role": "user", "content": "hi"}]
RULE = BreakerRule(eject_after_failures=3, eject_base=5.0, eject_max=60.0)
LEASES = "{gw}:" + scripts.VERSION + ":l:up"  # the backend's lease set


@pytest.fixture(scope="module")
def server() -> Iterator[RedisServer]:
    with redis_server() as running:
        yield running


@pytest.fixture
async def redis(server: RedisServer) -> AsyncIterator[Redis]:
    client = Redis.from_url(server.url)
    await client.flushall()
    yield client
    await client.aclose()


async def script_calls(redis: Redis) -> int:
    stats = await redis.info("commandstats")
    return sum(int(stats.get(f"cmdstat_{name}", {}).get("calls", 0)) for name in ("evalsha", "eval"))


@pytest.fixture
async def gateway(aiohttp_client: Any, upstreams: Any, server: RedisServer):
    sdks: list[openai.AsyncOpenAI] = []

    async def start(latency: float = 0.0, **backend: Any) -> tuple[Any, openai.AsyncOpenAI, FakeUpstream]:
        upstream = await upstreams(name="up", latency=latency)
        settings = GatewaySettings(backends=[{"name": "up", "url": upstream.openai_url, **backend}],
                                   state_url=server.url, state_deadline=1.0)
        client = await aiohttp_client(create_app(settings))
        sdk = openai.AsyncOpenAI(base_url=str(client.make_url("/v1")), api_key="x", max_retries=0)
        sdks.append(sdk)
        return client, sdk, upstream

    yield start
    for sdk in sdks:
        await sdk.close()


async def test_an_uncapped_backend_in_a_clean_state_costs_no_redis_call(gateway, redis):
    _, sdk, upstream = await gateway()
    before = await script_calls(redis)
    for _ in range(20):
        await sdk.chat.completions.create(model="m", messages=HI)
    assert await script_calls(redis) - before <= 1  # at most the periodic refresh, never one per request
    assert upstream.chat_count == 20


async def test_a_capped_backend_with_room_costs_one_call_for_the_first_request_and_none_after(gateway, redis):
    client, sdk, upstream = await gateway(max_concurrency=4)
    shared = client.app[keys.BALANCER].shared
    before = await script_calls(redis)
    for _ in range(10):
        await sdk.chat.completions.create(model="m", messages=HI)
    # One acquire; after it the lease is kept as a spare, which each next request takes (+ the periodic
    # refresh, at most once: renewal and snapshot).
    assert 1 <= await script_calls(redis) - before <= 3
    assert await redis.zcard(LEASES) == 1 and upstream.chat_count == 10
    await shared.drain()  # at shutdown the spare is given back
    assert await redis.zcard(LEASES) == 0


async def test_a_capped_backend_without_room_to_spare_takes_and_gives_back_a_lease_per_request(gateway, redis):
    client, sdk, _ = await gateway(max_concurrency=1)
    before = await script_calls(redis)
    for _ in range(10):
        await sdk.chat.completions.create(model="m", messages=HI)
    await client.app[keys.BALANCER].shared.drain()  # the last release is sent after the answer
    assert 20 <= await script_calls(redis) - before <= 22  # (+ the periodic refresh, at most once)
    assert await redis.zcard(LEASES) == 0  # every lease given back


async def test_requests_queued_behind_this_processs_own_lease_do_not_ask_redis(gateway, redis):
    client, sdk, upstream = await gateway(latency=0.1, max_concurrency=1)
    before = await script_calls(redis)
    first = asyncio.create_task(sdk.chat.completions.create(model="m", messages=HI))
    while upstream.in_flight == 0:
        await asyncio.sleep(0.005)
    await asyncio.gather(first, *(sdk.chat.completions.create(model="m", messages=HI) for _ in range(3)))
    await client.app[keys.BALANCER].shared.drain()
    # One lease, handed from request to request here: taken once, given back once. Asking Redis for the three
    # that queued could only have been refused.
    assert 2 <= await script_calls(redis) - before <= 3  # (+ the periodic refresh, at most once)
    assert upstream.max_in_flight == 1 and upstream.chat_count == 4


async def test_a_request_waiting_for_another_replicas_slot_asks_again_on_news_not_in_a_loop(gateway, redis):
    client, sdk, upstream = await gateway(max_concurrency=1)
    store = client.app[keys.BALANCER].shared.store
    slot = Candidate("up", max_concurrency=1, weight=1, priority=0)
    assert (await store.acquire([slot], "another-replica", 10)).backend == "up"
    before = await script_calls(redis)
    waiting = asyncio.gather(*(sdk.chat.completions.create(model="m", messages=HI) for _ in range(2)))
    await asyncio.sleep(0.5)
    assert not waiting.done()
    # Each refused once (+ a refresh), then quiet until news: no waking each other to ask again.
    assert await script_calls(redis) - before <= 4
    await store.release("up", "another-replica", "ok", breaker=RULE)  # published: somebody waits
    await waiting
    assert upstream.chat_count == 2


async def test_metrics_say_whether_the_shared_state_answers(gateway):
    client, _, _ = await gateway()
    text = await (await client.get("/metrics")).text()
    assert "gateway_shared_state_up 1.0" in text
    assert 'gateway_shared_state_fallbacks_total{reason="error"} 0.0' in text
