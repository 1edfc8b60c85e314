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
from collections import deque
from collections.abc import AsyncIterator
from dataclasses import dataclass

from aiohttp import web
from multidict import CIMultiDict

from gateway.apis import StreamTranslation
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


# What left the tail last is remembered this long, so that a marker cut in two as it leaves is still found.
_OVERLAP = 64
# Markers that end a stream wherever they are seen: nothing valid follows [DONE], and a Responses stream's final
# event carries the whole response, so its "type" may be far more than the tail's bytes before the end.
_FINAL = re.compile(rb'data:\s*\[DONE\]|"type"\s*:\s*"response\.(?:completed|incomplete|failed)"')


class StreamEnd:
    """Feed it the chunks as they pass; ``complete`` says whether the upstream ended the stream itself.

    The terminator is among the last events of a stream (the finish_reason chunk, perhaps a usage chunk, then
    [DONE]), so only a tail of the stream is kept: whole chunks by reference while they are small (the common
    case costs an append), at most ``tail_bytes`` before the last chunk (a chunk larger than that leaves only its
    end), searched once, when the stream has ended. What leaves the tail is searched as it leaves, for the
    markers that are final wherever they are (a Responses stream's last event may be megabytes long); a
    finish_reason that far back is not an end: more followed it (another choice, say), and then it stopped.
    """

    __slots__ = ("_carry", "_final_seen", "_kept", "_size", "_tail_bytes")

    def __init__(self, tail_bytes: int = 64 * 1024) -> None:
        self._tail_bytes = tail_bytes
        self._kept: deque[bytes] = deque()
        self._size = 0
        self._carry = b""  # the last bytes that left the tail
        self._final_seen = False

    def feed(self, chunk: bytes) -> None:
        kept = self._kept
        limit = self._tail_bytes
        if len(chunk) >= limit:
            while kept:
                self._leaving(kept.popleft())
            cut = len(chunk) - limit
            self._leaving(chunk[: min(cut, _OVERLAP)])  # a marker across the boundary with what went before
            self._search(chunk, cut)  # in place: a huge chunk is not copied
            if cut > _OVERLAP:
                self._carry = chunk[cut - _OVERLAP : cut]
            chunk = chunk[cut:]
            self._size = 0
        kept.append(chunk)
        self._size += len(chunk)
        while self._size - len(kept[0]) >= limit:
            first = kept.popleft()
            self._size -= len(first)
            self._leaving(first)

    def _leaving(self, piece: bytes) -> None:
        window = self._carry + piece
        self._search(window, len(window))
        self._carry = window[-_OVERLAP:]

    def _search(self, data: bytes, end: int) -> None:
        if self._final_seen:
            return
        if data.find(b"[DONE]", 0, end) >= 0 or data.find(b"response.", 0, end) >= 0:
            self._final_seen = _FINAL.search(data, 0, end) is not None

    @property
    def complete(self) -> bool:
        if self._final_seen:
            return True
        tail = self._carry + b"".join(self._kept)
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
    translation: StreamTranslation | None = None,
) -> Relayed:
    """Relay ``chunks``; raises UpstreamError only while nothing has been sent (failover is still possible).

    With a ``translation`` the client gets the stream rewritten into its API; completeness and usage are still
    read from what the upstream sent."""
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
        if translation is None:
            await response.write(first)
            async for chunk in chunks:
                sniffer.feed(chunk)
                end.feed(chunk)
                await response.write(chunk)
        else:
            await response.write(translation.start() + translation.feed(first))
            async for chunk in chunks:
                sniffer.feed(chunk)
                end.feed(chunk)
                translated = translation.feed(chunk)
                if translated:
                    await response.write(translated)
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
            message = f"Upstream stream interrupted: {error.message}"
            await response.write(
                sse_error_event(message, "stream_interrupted") if translation is None else translation.fail(message)
            )
        elif translation is not None:
            await response.write(translation.finish())
        await response.write_eof()
    except ConnectionError:
        return Relayed(response, sniffer.usage, error, client_gone=True)
    return Relayed(response, sniffer.usage, error)
