"""Real sockets on loopback: fake upstreams (backends.fake) behind a real gateway, driven by the openai SDK."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack
from typing import Any

import openai
import pytest
from aiohttp import web

from backends.fake import FakeUpstream
from gateway import keys
from gateway.app import create_app
from gateway.balancer import Balancer
from gateway.clock import ManualClock
from gateway.server import GatewayRunner
from gateway.settings import GatewaySettings


@pytest.fixture
async def upstreams() -> AsyncIterator[Callable[..., Any]]:
    """``await upstreams(name="a", ...)`` → a running FakeUpstream (its ``openai_url`` is set)."""
    async with AsyncExitStack() as stack:

        async def start(**config: Any) -> FakeUpstream:
            upstream = FakeUpstream(**config)
            await stack.enter_async_context(upstream.serve())
            return upstream

        yield start


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


class Gateway:
    def __init__(self, runner: GatewayRunner, app: web.Application) -> None:
        self.runner = runner
        self.app = app
        host, port = runner.addresses[0][:2]
        self.url = f"http://{host}:{port}"

    async def close(self) -> None:
        await self.runner.cleanup()

    def client(self, **kwargs: Any) -> openai.AsyncOpenAI:
        kwargs.setdefault("api_key", "unused")
        kwargs.setdefault("max_retries", 0)
        return openai.AsyncOpenAI(base_url=self.url + "/v1", **kwargs)

    def azure_client(self, **kwargs: Any) -> openai.AsyncAzureOpenAI:
        kwargs.setdefault("api_key", "unused")
        kwargs.setdefault("max_retries", 0)
        kwargs.setdefault("api_version", "2024-10-21")
        return openai.AsyncAzureOpenAI(azure_endpoint=self.url, **kwargs)

    @property
    def balancer(self) -> Balancer:
        return self.app[keys.BALANCER]


@pytest.fixture
async def gateway(clock: ManualClock) -> AsyncIterator[Callable[..., Any]]:
    """``await gateway([up_a, up_b], max_attempts=3)`` → a running gateway in front of those upstreams, served
    as ``python -m gateway`` serves it (GatewayRunner; a client that disconnects cancels its handler)."""
    started: list[Gateway] = []

    async def start(backends: list[FakeUpstream | dict[str, Any]], **settings: Any) -> Gateway:
        configs = [
            {"name": b.name, "url": b.openai_url} if isinstance(b, FakeUpstream) else b for b in backends
        ]
        credential = settings.pop("azure_credential", None)
        app_clock = settings.pop("clock", clock)
        telemetry = settings.pop("telemetry", None)
        app = create_app(
            GatewaySettings(backends=configs, **settings),
            clock=app_clock,
            azure_credential=credential,
            telemetry=telemetry,
        )
        runner = GatewayRunner(app, access_log=None, handler_cancellation=True)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        started.append(Gateway(runner, app))
        return started[-1]

    yield start
    for gw in started:
        await gw.close()


CHAT = {"model": "fake-model", "messages": [{"role": "user", "content": "Hello"}]}


async def chat(client: openai.AsyncOpenAI, **overrides: Any) -> Any:
    """A non-streamed completion with the raw response, so routing headers can be read."""
    return await client.chat.completions.with_raw_response.create(**{**CHAT, **overrides})
