"""An upstream made of a bare socket, for the faults a well-behaved HTTP server never commits: it reads each
request, writes exactly the bytes it was given, and closes the connection."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from tests.gateway.raw_upstream import read_request


class RawUpstream:
    def __init__(self, answer: bytes) -> None:
        self.answer = answer
        self.requests: list[bytes] = []
        self.url = ""

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            self.requests.append(await read_request(reader))
            writer.write(self.answer)
            await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()


@asynccontextmanager
async def raw_upstream(answer: bytes) -> AsyncIterator[RawUpstream]:
    upstream = RawUpstream(answer)
    server = await asyncio.start_server(upstream.serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    upstream.url = f"http://127.0.0.1:{port}/v1"
    async with server:
        yield upstream


def closed_port() -> int:
    """A loopback port nothing listens on: connecting to it is refused."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def sse_chunk(content: str, finish_reason: str | None = None) -> bytes:
    finish = "null" if finish_reason is None else f'"{finish_reason}"'
    return (
        b'data: {"id":"c1","object":"chat.completion.chunk","created":1,"model":"m","choices":[{"index":0,'
        b'"delta":{"content":"%s"},"finish_reason":%s}]}\n\n' % (content.encode(), finish.encode())
    )


# A stream whose end is the connection closing: no Content-Length, not chunked (HTTP/1.1 allows it).
SSE_HEAD = b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nConnection: close\r\n\r\n"
