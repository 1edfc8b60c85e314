"""POST .../embeddings: deterministic vectors, as floats or base64, scripted like chat completions.

The same text always gets the same vector (a hash of model and input, spread over the dimensions and
normalised), so tests can compare what two paths returned. Values are float32, exactly as the base64 form
carries them: both encodings decode to the same numbers.
"""

from __future__ import annotations

import base64
import hashlib
import math
import struct
from typing import Any

import orjson
from aiohttp import web

from .chat import open_request, play_turn, send
from .responses import error_response

DEFAULT_DIMENSIONS = 16


def embedding_of(model: str, item: str | list[int], dimensions: int = DEFAULT_DIMENSIONS) -> list[float]:
    """The vector the fake answers for one input item."""
    seed = orjson.dumps([model, item])
    raw = b""
    counter = 0
    while len(raw) < 4 * dimensions:
        raw += hashlib.blake2b(seed + counter.to_bytes(4, "little"), digest_size=64).digest()
        counter += 1
    values = [(word / 0xFFFFFFFF) * 2 - 1 for word in struct.unpack(f"<{dimensions}I", raw[: 4 * dimensions])]
    norm = math.sqrt(sum(v * v for v in values)) or 1.0
    # Rounded through float32, so the float and the base64 answers are the same numbers.
    return list(struct.unpack(f"<{dimensions}f", struct.pack(f"<{dimensions}f", *(v / norm for v in values))))


def _items(value: object) -> list[str | list[int]] | None:
    """``input`` as a list of items (a string, or a list of token ids), or None when it is not valid."""
    if isinstance(value, str):
        return [value] if value else None
    if not isinstance(value, list) or not value:
        return None
    if all(isinstance(v, int) and not isinstance(v, bool) for v in value):
        return [value]
    if all(isinstance(v, str) and v for v in value):
        return list(value)
    if all(isinstance(v, list) and v and all(isinstance(t, int) for t in v) for v in value):
        return list(value)
    return None


async def embeddings(request: web.Request) -> web.StreamResponse:
    opened = await open_request(request)
    if isinstance(opened, web.StreamResponse):
        return opened
    upstream, record, body = opened
    items = _items(body.get("input"))
    if items is None:
        return error_response(400, "'input' must be a non-empty string, an array of strings, or token arrays.",
                              "invalid_request_error", "invalid_value", param="input")
    encoding = body.get("encoding_format", "float")
    if encoding not in ("float", "base64"):
        return error_response(400, "'encoding_format' must be float or base64.", "invalid_request_error",
                              "invalid_value", param="encoding_format")
    dimensions = body.get("dimensions", DEFAULT_DIMENSIONS)
    if not isinstance(dimensions, int) or isinstance(dimensions, bool) or not 1 <= dimensions <= 4096:
        return error_response(400, "'dimensions' must be an integer from 1 to 4096.", "invalid_request_error",
                              "invalid_value", param="dimensions")
    tokens = sum(max(1, len(item) // 4) if isinstance(item, str) else len(item) for item in items)
    played = await play_turn(request, upstream, record, tokens)
    if isinstance(played, web.StreamResponse):
        return played
    reply, headers = played
    model = body["model"] if isinstance(body.get("model"), str) else upstream.model
    data: list[dict[str, Any]] = []
    for index, item in enumerate(items):
        vector = embedding_of(model, item, dimensions)
        encoded: Any = vector
        if encoding == "base64":
            encoded = base64.b64encode(struct.pack(f"<{dimensions}f", *vector)).decode()
        data.append({"object": "embedding", "index": index, "embedding": encoded})
    payload = {"object": "list", "data": data, "model": model,
               "usage": {"prompt_tokens": tokens, "total_tokens": tokens}}
    return await send(request, record, reply, 200, headers, orjson.dumps(payload), "application/json")
