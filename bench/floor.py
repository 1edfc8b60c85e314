"""`python -m bench.floor --port P UPSTREAM_URL...`: the least an aiohttp proxy can do, as a benchmark target.

An aiohttp server that forwards each chat completion to the next upstream in turn over the gateway's own
HTTP/1.1 pool (``gateway.http1``) and relays the answer, streams included. Nothing else: no validation, routing
state, failover, logs or metrics. Measured beside the gateway it shows what the framework and the sockets cost
by themselves, i.e. how much of the gap to a Rust router no amount of work on the gateway's own code can close.
Not a product: a throttled or failing upstream's answer is passed back as it is.
"""

from __future__ import annotations

import argparse
import itertools
from collections.abc import AsyncIterator

from aiohttp import web

from gateway.__main__ import settle_garbage_collector
from gateway.http1 import ConnectionPool, Origin, request_head

POOL = web.AppKey("pool", ConnectionPool)


def make_app(upstreams: list[str]) -> web.Application:
    routes = []
    for url in upstreams:
        origin, target = Origin.of(url.rstrip("/") + "/v1/chat/completions")
        routes.append((origin, request_head("POST", target, origin, {"Content-Type": "application/json"})))
    turns = itertools.cycle(routes)

    async def chat_completions(request: web.Request) -> web.StreamResponse:
        body = await request.read()
        origin, head = next(turns)
        upstream = await request.app[POOL].request(origin, head, body, 60.0)
        try:
            content_type = upstream.headers.get("Content-Type", "application/json")
            if not content_type.startswith("text/event-stream"):
                return web.Response(status=upstream.status, body=await upstream.read(),
                                    headers={"Content-Type": content_type})
            response = web.StreamResponse(status=upstream.status, headers={"Content-Type": content_type})
            await response.prepare(request)
            async for chunk in upstream.iter_chunks():
                await response.write(chunk)
            await response.write_eof()
            return response
        finally:
            upstream.close()

    async def ready(request: web.Request) -> web.Response:
        return web.Response(text="ok")

    async def pool_ctx(app: web.Application) -> AsyncIterator[None]:
        app[POOL] = ConnectionPool(connect_timeout=5.0)
        yield
        await app[POOL].close()

    app = web.Application()
    app.cleanup_ctx.append(pool_ctx)
    app.on_startup.append(settle_garbage_collector)  # as the gateway does
    app.router.add_post("/v1/chat/completions", chat_completions)
    app.router.add_get("/ready", ready)
    return app


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.floor", description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("upstreams", nargs="+", help="base URLs of the upstreams (without /v1)")
    args = parser.parse_args()
    try:
        import uvloop
    except ImportError:  # pragma: no cover
        uvloop = None
    if uvloop is not None:
        uvloop.install()
    web.run_app(make_app(args.upstreams), host=args.host, port=args.port, access_log=None, print=None,
                handler_cancellation=True, backlog=4096)


if __name__ == "__main__":
    main()
