"""Undoing an upstream's ``Content-Encoding`` (gzip, deflate) so what we relay is what the client can read.

We ask every backend for ``Accept-Encoding: identity``, yet some compress anyway (a proxy in front of Azure, a
misconfigured server). Relaying the compressed bytes without the header was undecodable; relaying them with it
would hide the usage we read and the size we cap. So they are decoded here, and the header is dropped.

Output is bounded per step: a small compressed chunk may inflate to gigabytes (a "zip bomb"), so each call
yields pieces of at most ``_PIECE`` bytes, letting the caller's size cap stop it early.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterator

_PIECE = 256 * 1024


class DecodingError(Exception):
    """The body is not valid for its Content-Encoding, or it ended before its encoding did."""


def decoder_for(content_encoding: str | None) -> Decoder | None:
    """A decoder for the header's value; None for identity (or no header). Raises DecodingError for an
    encoding we cannot undo (br, zstd...): relaying it under a header we drop would corrupt the answer."""
    if content_encoding is None:
        return None
    coding = content_encoding.strip().lower()
    if coding in ("", "identity"):
        return None
    if coding in ("gzip", "x-gzip"):
        return Decoder(zlib.MAX_WBITS | 16)
    if coding == "deflate":
        return Decoder(None)
    raise DecodingError(f"unsupported Content-Encoding {content_encoding!r}")


class Decoder:
    """Incremental gzip or deflate decoding. ``deflate`` is meant to be zlib-wrapped but some servers send raw
    deflate; the first bytes tell which (``wbits=None`` decides on the first chunk)."""

    __slots__ = ("_inflate", "_wbits")

    def __init__(self, wbits: int | None) -> None:
        self._wbits = wbits
        self._inflate: zlib._Decompress | None = None if wbits is None else zlib.decompressobj(wbits)

    def feed(self, data: bytes) -> Iterator[bytes]:
        """The decoded pieces of ``data`` (each at most ``_PIECE`` bytes)."""
        if self._inflate is None:
            if not data:
                return
            # A zlib header: CMF byte 0x?8 and (CMF*256 + FLG) divisible by 31; otherwise raw deflate.
            zlib_wrapped = len(data) >= 2 and data[0] & 0x0F == 8 and (data[0] << 8 | data[1]) % 31 == 0
            self._inflate = zlib.decompressobj(zlib.MAX_WBITS if zlib_wrapped else -zlib.MAX_WBITS)
        inflate = self._inflate
        try:
            piece = inflate.decompress(data, _PIECE)
            while True:
                if piece:
                    yield piece
                if not inflate.unconsumed_tail:
                    return
                piece = inflate.decompress(inflate.unconsumed_tail, _PIECE)
        except zlib.error as exc:
            raise DecodingError(f"undecodable body: {exc}") from None

    def finish(self) -> bytes:
        """What is left once the body has ended; raises DecodingError if the encoded stream was cut short."""
        if self._inflate is None:
            return b""  # an empty body
        try:
            rest = self._inflate.flush()
        except zlib.error as exc:
            raise DecodingError(f"undecodable body: {exc}") from None
        if not self._inflate.eof:
            raise DecodingError("compressed body cut short")
        return rest


def decode_whole(decoder: Decoder, body: bytes, limit: int) -> bytes | None:
    """``body`` decoded, or None when that would exceed ``limit`` bytes (decoding stops there)."""
    parts: list[bytes] = []
    size = 0
    for piece in decoder.feed(body):
        size += len(piece)
        if size > limit:
            return None
        parts.append(piece)
    rest = decoder.finish()
    if size + len(rest) > limit:
        return None
    parts.append(rest)
    return b"".join(parts)
