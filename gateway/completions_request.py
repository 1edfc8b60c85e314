"""Reading a client's legacy text completion request: validated, forwarded as the original bytes to a backend
that serves completions; streamed or not like chat."""

from __future__ import annotations

from dataclasses import dataclass, field

from gateway.apis import PassThrough
from gateway.embeddings_request import valid_input
from gateway.errors import BadRequest
from gateway.request_json import json_object, model_of, positive_int, stream_of, with_deployment
from gateway.settings import Api


@dataclass(slots=True)
class CompletionsRequest(PassThrough):
    api: Api = field(default=Api.COMPLETIONS, init=False, repr=False)
    translation: None = field(default=None, init=False, repr=False)
    body: bytes
    model: str | None
    stream: bool
    affinity_key: bytes | None = None


def parse_completions_request(raw: bytes, *, deployment: str | None = None) -> CompletionsRequest:
    payload = json_object(raw)
    model = model_of(payload)
    if "prompt" not in payload:
        raise BadRequest("'prompt' is required.", param="prompt", code="missing_required_parameter")
    if not valid_input(payload["prompt"]):
        raise BadRequest("'prompt' must be a non-empty string, an array of strings, or token id arrays.",
                         param="prompt")
    stream = stream_of(payload)
    positive_int(payload, "max_tokens")
    for name in ("temperature", "top_p"):
        value = payload.get(name)
        if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))):
            raise BadRequest(f"'{name}' must be a number.", param=name)
    raw, model = with_deployment(raw, payload, model, deployment)
    return CompletionsRequest(body=raw, model=model, stream=stream)
