"""Backends of kind llama-server: the gateway takes capacity, readiness and load from what the server says,
and measures the affinity it routes for (the share of each prompt the backend found in its cache).

The backends are fakes posing as llama-server (backends/fake/llama_server.py); tests/e2e drives the real one.
"""

from __future__ import annotations

import asyncio
import re

import aiohttp
import orjson
import pytest

from backends.fake import FakeUpstream, Reply
from gateway.llama_server import ReportedLoad, load_from_metrics, load_from_slots, total_slots

TURN_1 = [{"role": "user", "content": "Tell me about the sea, the waves and the wind over the water, please."}]


def llama_server(upstream: FakeUpstream, **extra) -> dict:
    return {"name": upstream.name, "url": upstream.openai_url, "kind": "llama-server", **extra}


async def wait_for(predicate, timeout: float = 3.0) -> None:
    async with asyncio.timeout(timeout):
        while not predicate():
            await asyncio.sleep(0.02)


def request_lines(out: str) -> list[dict]:
    return [line for line in map(orjson.loads, out.splitlines()) if line.get("event") == "request"]


# -- what the server says, parsed ---------------------------------------------------------------------------


@pytest.mark.parametrize(("body", "expected"), [
    (b'{"total_slots": 4, "model_path": "m.gguf"}', 4),
    (b'{"total_slots": 0}', None),
    (b'{"total_slots": true}', None),
    (b'{"total_slots": "4"}', None),
    (b'[4]', None),
    (b'<html>', None),
])
def test_total_slots_is_a_positive_count_or_nothing(body: bytes, expected: int | None) -> None:
    assert total_slots(body) == expected


def test_load_is_read_from_prometheus_text_and_from_slots() -> None:
    metrics = (b"# HELP llamacpp:requests_processing Number of requests processing\n"
               b"llamacpp:requests_processing 3\nllamacpp:requests_deferred 2\nllamacpp:n_decode_total 17\n")
    assert load_from_metrics(metrics) == ReportedLoad(3, 2)
    assert load_from_metrics(b"llamacpp:requests_processing 3\n") is None
    assert load_from_metrics(b"llamacpp:requests_processing x\nllamacpp:requests_deferred 0\n") is None
    assert load_from_slots(b'[{"id": 0, "is_processing": true}, {"id": 1, "is_processing": false}]') == (
        ReportedLoad(1, 0))
    assert load_from_slots(b'{"error": 1}') is None


# -- capacity, readiness, load ------------------------------------------------------------------------------


async def test_capacity_comes_from_total_slots_and_the_rest_queue(upstreams, gateway) -> None:
    a = await upstreams(name="a", llama_server=True, total_slots=3, default=Reply(delay=0.3))
    gw = await gateway([llama_server(a)], health_interval=60, affinity="off")
    assert gw.balancer.by_name["a"].max_concurrency == 3

    async with gw.client() as client:
        replies = await asyncio.gather(*(client.chat.completions.create(model="m", messages=TURN_1)
                                         for _ in range(5)))

    assert len(replies) == 5
    assert a.max_in_flight == 3  # never more than its slots at once: the other two waited in the gateway


async def test_a_hand_set_max_concurrency_wins_over_total_slots(upstreams, gateway) -> None:
    a = await upstreams(name="a", llama_server=True, total_slots=8)
    gw = await gateway([llama_server(a, max_concurrency=2)], health_interval=60)
    assert gw.balancer.by_name["a"].max_concurrency == 2


async def test_a_server_restarted_with_other_slots_is_read_again(upstreams, gateway) -> None:
    a = await upstreams(name="a", llama_server=True, total_slots=2)
    gw = await gateway([llama_server(a)], health_interval=0.05)
    state = gw.balancer.by_name["a"]
    a.health_status = 503  # restarted: loading its model
    await wait_for(lambda: not state.reachable)
    a.total_slots = 6
    a.health_status = 200
    await wait_for(lambda: state.reachable)
    assert state.max_concurrency == 6


async def test_a_server_loading_its_model_gets_no_traffic_until_ready(upstreams, gateway) -> None:
    a = await upstreams(name="a", llama_server=True, health_status=503)
    b = await upstreams(name="b", llama_server=True)
    gw = await gateway([llama_server(a), llama_server(b)], health_interval=0.05, affinity="off")
    state = gw.balancer.by_name["a"]
    assert (state.reachable, state.health_detail) == (False, "loading model")
    async with gw.client() as client:
        served = [(await client.chat.completions.with_raw_response.create(model="m", messages=TURN_1))
                  .headers["x-gateway-backend"] for _ in range(3)]
        assert served == ["b", "b", "b"]
        a.health_status = 200
        await wait_for(lambda: state.reachable)
        replies = await asyncio.gather(*(client.chat.completions.with_raw_response.create(model="m", messages=TURN_1)
                                         for _ in range(2)))
    assert {r.headers["x-gateway-backend"] for r in replies} == {"a", "b"}


async def test_requests_other_clients_keep_waiting_count_as_load(upstreams, gateway) -> None:
    busy = await upstreams(name="busy", llama_server=True, total_slots=4, requests_deferred=5)
    idle = await upstreams(name="idle", llama_server=True, total_slots=4)
    gw = await gateway([llama_server(busy), llama_server(idle)], health_interval=60, affinity="off")
    assert gw.balancer.by_name["busy"].foreign_load == 5

    async with gw.client() as client:
        for _ in range(4):
            await client.chat.completions.create(model="m", messages=TURN_1)

    assert (busy.chat_count, idle.chat_count) == (0, 4)


async def test_without_metrics_the_load_is_read_from_slots(upstreams, gateway) -> None:
    a = await upstreams(name="a", llama_server=True, total_slots=2, metrics_endpoint=False)
    gw = await gateway([llama_server(a)], health_interval=60)
    assert gw.balancer.by_name["a"].reported_load == ReportedLoad(0, 0)
    assert {r.path for r in a.requests} >= {"/health", "/props", "/metrics", "/slots"}


async def test_the_gateway_metrics_show_capacity_and_reported_load(upstreams, gateway) -> None:
    a = await upstreams(name="a", llama_server=True, total_slots=3, requests_deferred=1)
    gw = await gateway([llama_server(a)], health_interval=60)
    async with aiohttp.ClientSession() as http, http.get(gw.url + "/metrics") as response:
        text = await response.text()
    assert 'gateway_backend_capacity{backend="a"} 3.0' in text
    assert 'gateway_backend_reported_requests{backend="a",state="deferred"} 1.0' in text


# -- affinity, measured -------------------------------------------------------------------------------------


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "streamed"])
async def test_a_follow_up_turn_is_served_from_the_cache_and_the_share_is_logged_and_counted(
    upstreams, gateway, capfd, stream: bool
) -> None:
    a = await upstreams(name="a", llama_server=True, total_slots=2)
    b = await upstreams(name="b", llama_server=True, total_slots=2)
    gw = await gateway([llama_server(a), llama_server(b)], health_interval=60)
    async with gw.client() as client:
        first = await client.chat.completions.create(model="m", messages=TURN_1)
        turn_2 = [*TURN_1, {"role": "assistant", "content": first.choices[0].message.content},
                  {"role": "user", "content": "And the tides?"}]
        if stream:
            async for _ in await client.chat.completions.create(model="m", messages=turn_2, stream=True):
                pass
        else:
            await client.chat.completions.create(model="m", messages=turn_2)
    async with aiohttp.ClientSession() as http, http.get(gw.url + "/metrics") as response:
        metrics = await response.text()

    lines = request_lines(capfd.readouterr().out)
    assert [(line["affinity"], line["cached_tokens"] == 0) for line in lines] == [("new", True), ("hit", False)]
    second = lines[1]
    assert second["prompt_reuse"] == round(second["cached_tokens"] / second["prompt_tokens"], 3)
    assert second["prompt_reuse"] > 0.6
    backend = second["backend"]
    ratio = float(re.search(rf'gateway_prompt_reuse_ratio{{backend="{backend}"}} (\S+)', metrics).group(1))
    assert ratio == pytest.approx(second["cached_tokens"] / (lines[0]["prompt_tokens"] + second["prompt_tokens"]))
    assert f'gateway_tokens_total{{backend="{backend}",type="cached"}} {second["cached_tokens"]}.0' in metrics


async def test_backends_that_report_no_cache_get_no_reuse_figures(upstreams, gateway, capfd) -> None:
    a = await upstreams(name="a")  # an OpenAI-style upstream: usage without prompt_tokens_details
    gw = await gateway([a])
    async with gw.client() as client:
        await client.chat.completions.create(model="m", messages=TURN_1)
    async with aiohttp.ClientSession() as http, http.get(gw.url + "/metrics") as response:
        metrics = await response.text()

    (line,) = request_lines(capfd.readouterr().out)
    assert "prompt_reuse" not in line and "cached_tokens" not in line
    assert "gateway_prompt_reuse_ratio{" not in metrics
