"""Relaying an upstream's SSE stream to the client, chunk by chunk, and knowing whether it was complete.

The client's response is started only when the first chunk has arrived: until a byte has reached the client,
a broken stream can still fail over (the error is raised to the proxy). After that, an upstream failure ends
the stream with an SSE error event, which the openai SDK raises, instead of a silent cut.

A stream is complete only when the upstream said so: ``data: [DONE]``, or (for servers that omit it) a
non-null ``finish_reason``. A body that simply ends — the connection closed, with no Content-Length and no
chunked framing to tell a cut from an end — is an upstream failure like any other: the client gets the error
event, the attempt is counted and logged as failed. Otherwise the SDK would return truncated text as if whole.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from dataclasses import dataclass

from aiohttp import web
from multidict import CIMultiDict

from gateway.errors import sse_error_event
from gateway.settings import BackendConfig
from gateway.upstream import UpstreamConnectionError, UpstreamError
from gateway.usage import StreamUsageSniffer, Usage

SSE_HEADERS = {
    "Content-Type": "text/event-stream",
    "Cache-Control": "no-cache",
    # nginx (and Azure Front Door / App Gateway setups built on it) would otherwise buffer the whole stream.
    "X-Accel-Buffering": "no",
}

# The end of a chat completion stream, and of a Responses API stream (``response.completed``/``.incomplete``
# are final events too; ``.failed`` is final but an error the client sees in the stream itself).
_TERMINATOR = re.compile(
    rb'data:\s*\[DONE\]|"finish_reason"\s*:\s*"|"type"\s*:\s*"response\.(?:completed|incomplete|failed)"'
)


class StreamEnd:
    """Feed it the chunks as they pass; ``complete`` says whether the upstream ended the stream itself.

    The terminator is among the last events of a stream (the finish_reason chunk, perhaps a usage chunk, then
    [DONE]), so only the last three chunks are kept (references, not copies: a stream held open costs a few
    hundred bytes here) and searched once, when the stream has ended.
    """

    __slots__ = ("_first", "_second", "_third")

    def __init__(self) -> None:
        self._first = self._second = self._third = b""

    def feed(self, chunk: bytes) -> None:
        self._first, self._second, self._third = self._second, self._third, chunk

    @property
    def complete(self) -> bool:
        tail = self._first + self._second + self._third
        # Nearly every stream ends with "data: [DONE]": a substring search, before the regex's slower scan.
        return b"data: [DONE]" in tail or _TERMINATOR.search(tail) is not None


@dataclass(slots=True)
class Relayed:
    response: web.StreamResponse
    usage: Usage | None
    error: UpstreamError | None = None  # the upstream failed after bytes reached the client
    client_gone: bool = False


def truncated(backend: BackendConfig) -> UpstreamError:
    return UpstreamConnectionError(backend, f"{backend.name} ended the stream before its end ([DONE])")


async def relay_stream(
    request: web.Request,
    status: int,
    headers: CIMultiDict[str],
    chunks: AsyncIterator[bytes],
    backend: BackendConfig,
) -> Relayed:
    """Relay ``chunks``; raises UpstreamError only while nothing has been sent (failover is still possible)."""
    sniffer = StreamUsageSniffer()
    end = StreamEnd()
    first = b""
    async for first in chunks:
        if first:
            break
    if not first:
        raise truncated(backend)  # not a byte of an answer: another backend may still give one
    headers.update(SSE_HEADERS)
    response = web.StreamResponse(status=status, headers=headers)
    await response.prepare(request)
    error: UpstreamError | None = None
    try:
        sniffer.feed(first)
        end.feed(first)
        await response.write(first)
        async for chunk in chunks:
            sniffer.feed(chunk)
            end.feed(chunk)
            await response.write(chunk)
        if not end.complete:
            error = truncated(backend)
    except UpstreamError as failure:
        error = failure
    except ConnectionError:
        # The client went away; the caller closes the upstream response, which frees its slot.
        return Relayed(response, sniffer.usage, client_gone=True)
    try:
        if error is not None:
            # Bytes already reached the client: no failover now. End with an error event the SDK raises.
            await response.write(sse_error_event(f"Upstream stream interrupted: {error.message}", "stream_interrupted"))
        await response.write_eof()
    except ConnectionError:
        return Relayed(response, sniffer.usage, error, client_gone=True)
    return Relayed(response, sniffer.usage, error)
