"""Active health checks of llama.cpp backends: loading or down gets no traffic, back means used again."""

from __future__ import annotations

import asyncio

import aiohttp
import orjson
import pytest
from aiohttp import web

from backends.fake import FakeUpstream
from tests.gateway.conftest import chat


def llama(upstream: FakeUpstream, **extra) -> dict:
    return {"name": upstream.name, "url": upstream.openai_url, "kind": "llamacpp", **extra}


async def wait_for(predicate, timeout: float = 3.0) -> None:
    async with asyncio.timeout(timeout):
        while not predicate():
            await asyncio.sleep(0.02)


async def test_loading_backend_gets_no_traffic_until_ready(upstreams, gateway, capfd):
    a = await upstreams(name="a", health_status=503)  # llama-server while it loads the model
    b = await upstreams(name="b")
    gw = await gateway([llama(a), llama(b)], health_interval=0.05, affinity="off")
    state = gw.balancer.by_name["a"]
    assert not state.reachable and state.health_detail == "loading model"  # checked before serving
    async with gw.client() as client:
        for _ in range(4):
            assert (await chat(client)).headers["x-gateway-backend"] == "b"
        a.health_status = 200
        await wait_for(lambda: state.reachable)
        served = {(await chat(client)).headers["x-gateway-backend"] for _ in range(4)}
    assert served == {"a", "b"}
    assert a.chat_count == 2
    events = [orjson.loads(line) for line in capfd.readouterr().out.splitlines() if "backend_health" in line]
    assert [(e["backend"], e["healthy"], e["detail"]) for e in events] == [
        ("a", False, "loading model"), ("a", True, "ok")]


async def test_down_backend_is_skipped_and_readyz_reflects_it(upstreams, gateway):
    a = await upstreams(name="a")
    gw = await gateway([llama(a)], health_interval=0.05)
    a.health_status = 500
    await wait_for(lambda: not gw.balancer.by_name["a"].reachable)
    async with aiohttp.ClientSession() as http, http.get(gw.url + "/readyz") as response:
        assert response.status == 503
        assert (await response.json())["backends"] == {"a": "unhealthy"}
    async with gw.client() as client:
        with pytest.raises(Exception) as caught:
            await chat(client)
    assert getattr(caught.value, "status_code", None) == 503
    assert a.chat_count == 0


async def test_unreachable_backend_comes_back_without_a_restart(upstreams, gateway, aiohttp_server):
    b = await upstreams(name="b")
    revived = FakeUpstream(name="a")
    server = await aiohttp_server(revived.make_app())
    port = server.port
    url = f"http://127.0.0.1:{port}/v1"
    gw = await gateway([{"name": "a", "url": url, "kind": "llamacpp"}, llama(b)], health_interval=0.05,
                       affinity="off")
    await server.close()  # the backend process dies
    state = gw.balancer.by_name["a"]
    await wait_for(lambda: not state.reachable)
    assert state.health_detail.startswith("unreachable")
    async with gw.client() as client:
        assert (await chat(client)).headers["x-gateway-backend"] == "b"
        runner = web.AppRunner(revived.make_app())  # restarted on the same port
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", port).start()
        try:
            await wait_for(lambda: state.reachable)
            served = {(await chat(client)).headers["x-gateway-backend"] for _ in range(4)}
        finally:
            await runner.cleanup()
    assert served == {"a", "b"}


async def test_llama_cpp_python_without_health_uses_the_models_endpoint(upstreams, gateway, aiohttp_server):
    """llama-cpp-python's server answers /health with 404: fall back to /v1/models."""
    seen: list[str] = []

    async def models(request: web.Request) -> web.Response:
        seen.append(request.path)
        return web.json_response({"object": "list", "data": [{"id": "m", "object": "model"}]})

    app = web.Application()
    app.router.add_get("/v1/models", models)
    server = await aiohttp_server(app)
    gw = await gateway([{"name": "p", "url": str(server.make_url("/v1")), "kind": "llamacpp"}], health_interval=0.05)
    await wait_for(lambda: len(seen) >= 3)
    assert gw.balancer.by_name["p"].reachable
    assert set(seen) == {"/v1/models"}


async def test_a_busy_backend_whose_probe_times_out_is_not_marked_down(upstreams, gateway, aiohttp_server):
    hold = asyncio.Event()

    async def slow(request: web.Request) -> web.Response:
        await hold.wait()
        return web.json_response({"status": "ok"})

    app = web.Application()
    app.router.add_get("/health", slow)
    server = await aiohttp_server(app)
    gw = await gateway([{"name": "busy", "url": str(server.make_url("/v1")), "kind": "llamacpp"}],
                       health_interval=0.05, health_timeout=0.05)
    state = gw.balancer.by_name["busy"]
    assert not state.reachable  # idle and silent: down
    state.reachable = True
    state.in_flight = 1  # serving a long answer: a silent probe means busy
    await asyncio.sleep(0.3)
    assert state.reachable
    state.in_flight = 0
    hold.set()
