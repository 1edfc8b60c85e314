"""Reading a client's embeddings request: validated, so a bad one is our 400 rather than an upstream's 500, and
forwarded as the original bytes to a backend that serves embeddings."""

from __future__ import annotations

from dataclasses import dataclass, field

from gateway.apis import PassThrough
from gateway.errors import BadRequest
from gateway.request_json import json_object, model_of, positive_int, with_deployment
from gateway.settings import Api


@dataclass(slots=True)
class EmbeddingsRequest(PassThrough):
    api: Api = field(default=Api.EMBEDDINGS, init=False, repr=False)
    translation: None = field(default=None, init=False, repr=False)
    body: bytes
    model: str | None
    stream: bool = False
    affinity_key: bytes | None = None


def parse_embeddings_request(raw: bytes, *, deployment: str | None = None) -> EmbeddingsRequest:
    payload = json_object(raw)
    model = model_of(payload)
    if "input" not in payload:
        raise BadRequest("'input' is required.", param="input", code="missing_required_parameter")
    if not valid_input(payload["input"]):
        raise BadRequest(
            "'input' must be a non-empty string, an array of non-empty strings, an array of token ids, or an "
            "array of token id arrays.",
            param="input",
        )
    encoding = payload.get("encoding_format")
    if encoding is not None and encoding not in ("float", "base64"):
        raise BadRequest("'encoding_format' must be 'float' or 'base64'.", param="encoding_format")
    positive_int(payload, "dimensions")
    raw, model = with_deployment(raw, payload, model, deployment)
    return EmbeddingsRequest(body=raw, model=model)


def valid_input(value: object) -> bool:
    """A string, strings, token ids, or arrays of token ids; never empty (the services answer those 400)."""
    if isinstance(value, str):
        return bool(value)
    if not isinstance(value, list) or not value:
        return False
    if all(isinstance(item, str) and item for item in value):
        return True
    if all(_is_token(item) for item in value):
        return True
    return all(isinstance(item, list) and item and all(_is_token(t) for t in item) for item in value)


def _is_token(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0
