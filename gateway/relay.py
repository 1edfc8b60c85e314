"""Relaying an upstream's SSE stream to the client, chunk by chunk, and knowing whether it was complete.

The client's response is started only when the first chunk has arrived: until a byte has reached the client,
a broken stream can still fail over (the error is raised to the proxy). After that, an upstream failure ends
the stream with an SSE error event, which the openai SDK raises, instead of a silent cut.

A stream is complete only when the upstream said so: ``data: [DONE]``, or (for servers that omit it) a
non-null ``finish_reason``. A body that simply ends — the connection closed, with no Content-Length and no
chunked framing to tell a cut from an end — is an upstream failure like any other: the client gets the error
event, the attempt is counted and logged as failed. Otherwise the SDK would return truncated text as if whole.
A stream still running when the gateway's shutdown grace is over (``gateway.drain``) ends the same way.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass

from aiohttp import web
from multidict import CIMultiDict

from gateway.apis import StreamTranslation
from gateway.drain import DRAIN, CutByShutdown
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


_KEPT_CHUNKS = 3  # the finish_reason chunk, perhaps a usage chunk, [DONE]: however the reads cut them
# Chunks that left the tail are let go (and, in a Responses stream, searched) once this many have gathered: an
# append per chunk, one slice per batch (a chat stream's chunks are a few hundred bytes, and come by the thousand).
_BATCH_CHUNKS = 16
# What left the tail last is remembered this long, so that a marker cut in two as it leaves is still found.
_OVERLAP = 64
# A Responses stream's final event carries the whole response, so its "type" may be megabytes before the end:
# it is looked for in all that leaves the tail, not only in the tail.
_RESPONSES_END = re.compile(rb'"type"\s*:\s*"response\.(?:completed|incomplete|failed)"')


class StreamEnd:
    """Feed it the chunks as they pass; ``complete`` says whether the upstream ended the stream itself.

    The terminator is among the last events of a stream (the finish_reason chunk, perhaps a usage chunk, then
    [DONE]), so only a tail is searched for it, once, when the stream has ended: the last three chunks, and at
    most ``tail_bytes`` before the last one (a chunk larger than that leaves only its end, so a stream of huge
    reads holds no megabytes here). A finish_reason further back is not an end: more followed it (another
    choice, say), then it stopped. A Responses stream (told by its first chunk: ``response.created``) is also
    searched as it leaves the tail, for its final event, which may be far longer than the tail. A stream held
    open costs a few KiB here at most: sixteen chunks.
    """

    __slots__ = ("_carry", "_final_seen", "_kept", "_responses", "_size", "_tail_bytes")

    def __init__(self, tail_bytes: int = 16 * 1024) -> None:
        self._tail_bytes = tail_bytes
        self._kept: list[bytes] = []  # references, not copies
        self._size = 0
        self._carry = b""  # the last bytes that left the tail
        self._responses: bool | None = None  # a Responses API stream? Known from its first bytes.
        self._final_seen = False

    def feed(self, chunk: bytes) -> None:
        size = len(chunk)
        if self._responses is None:
            # (find, not in: see gateway.usage) the relay's first chunk is never empty
            self._responses = chunk.find(b"response.") >= 0
        if size >= self._tail_bytes:
            self._huge(chunk)
            return
        kept = self._kept
        kept.append(chunk)
        self._size += size
        if len(kept) >= _BATCH_CHUNKS or self._size - size >= self._tail_bytes:
            self._settle()

    def _settle(self) -> None:
        """Let go of what is no longer the tail."""
        kept = self._kept
        if not kept:
            return
        leaving = max(0, len(kept) - _KEPT_CHUNKS)
        size = self._size - sum(map(len, kept[:leaving])) if leaving else self._size
        while size - len(kept[leaving]) >= self._tail_bytes:  # rare: chunks of several KiB
            size -= len(kept[leaving])
            leaving += 1
        if leaving:
            self._leave(b"".join(kept[:leaving]) if self._responses else kept[leaving - 1])
            del kept[:leaving]
            self._size = size

    def _huge(self, chunk: bytes) -> None:
        """A chunk longer than the tail: all before it and all but its end leave the tail."""
        cut = len(chunk) - self._tail_bytes
        self._leave(b"".join(self._kept) + chunk[: min(cut, _OVERLAP)])  # a marker across the boundary
        if cut > _OVERLAP:
            if self._responses and not self._final_seen:
                self._final_seen = _RESPONSES_END.search(chunk, 0, cut) is not None  # in place, not copied
            self._carry = chunk[cut - _OVERLAP : cut]
        self._kept = [chunk[cut:]]
        self._size = self._tail_bytes

    def _leave(self, piece: bytes) -> None:
        """``piece`` leaves the tail: all of what left, in a Responses stream; its end, at least, otherwise."""
        window = self._carry + piece
        if self._responses and not self._final_seen:
            self._final_seen = _RESPONSES_END.search(window) is not None
        self._carry = window[-_OVERLAP:]

    @property
    def complete(self) -> bool:
        self._settle()
        if self._final_seen:
            return True
        tail = self._carry + b"".join(self._kept)
        # Nearly every stream ends with "data: [DONE]": a substring search, before the regex's slower scan.
        return tail.find(b"data: [DONE]") >= 0 or _TERMINATOR.search(tail) is not None


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
    except asyncio.CancelledError:
        if not request.app[DRAIN].expired:
            raise  # the client went away (handler cancellation)
        asyncio.current_task().uncancel()  # type: ignore[union-attr]  # answered here, as the shutdown wants
        error = CutByShutdown(backend)
    try:
        if error is not None:
            # Bytes already reached the client: no failover now. End with an error event the SDK raises.
            if isinstance(error, CutByShutdown):
                message, code = f"Stream ended early: {error.message}.", "gateway_shutting_down"
            else:
                message, code = f"Upstream stream interrupted: {error.message}", "stream_interrupted"
            await response.write(sse_error_event(message, code) if translation is None else translation.fail(message))
        elif translation is not None:
            await response.write(translation.finish())
        await response.write_eof()
    except ConnectionError:
        return Relayed(response, sniffer.usage, error, client_gone=True)
    return Relayed(response, sniffer.usage, error)
