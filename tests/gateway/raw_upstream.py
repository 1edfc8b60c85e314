"""Raw-socket upstreams scripted byte by byte: for the faults a well-behaved server never commits."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

Script = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


@asynccontextmanager
async def scripted(script: Script) -> AsyncIterator[tuple[str, list[asyncio.StreamWriter]]]:
    """A raw TCP server running ``script`` per connection; yields its URL and the connections it accepted."""
    accepted: list[asyncio.StreamWriter] = []

    async def on_connect(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        accepted.append(writer)
        try:
            await script(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(on_connect, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}/v1/chat/completions", accepted
    finally:
        server.close()
        for writer in accepted:
            writer.close()
        await server.wait_closed()


async def read_request(reader: asyncio.StreamReader) -> bytes:
    head = await reader.readuntil(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n"):
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    return head + await reader.readexactly(length)


def ok(body: bytes = b"ok", extra: bytes = b"") -> bytes:
    return b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n%s\r\n%s" % (len(body), extra, body)


def answering(answers: list[bytes | None], received: list[bytes] | None = None) -> Script:
    """A script answering the n-th request, on whichever connection it comes, with ``answers[n]``: None hangs,
    b"" closes the connection unanswered.
    (A client closes a connection whose answer it did not read whole, so the next request may come on a new one.)
    """
    requests = received if received is not None else []

    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            requests.append(await read_request(reader))  # every request is counted, scripted or not
            index = len(requests) - 1
            answer = answers[index] if index < len(answers) else None
            if answer is None:
                await reader.read()
                return
            if not answer:
                return
            writer.write(answer)
            await writer.drain()

    return script
