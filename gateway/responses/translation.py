"""A Responses request on its way through the proxy: native where the backend speaks the API, translated to a
chat completion where it does not, pinned to its backend when it continues a stored response."""

from __future__ import annotations

from functools import cached_property

import orjson

from gateway.apis import Outbound, Rewritten, serves
from gateway.errors import BadRequest, GatewayError, ModelNotFound
from gateway.responses.answer import response_from_chat
from gateway.responses.native import NativeResponses
from gateway.responses.owners import ResponseOwners
from gateway.responses.request import ResponsesRequest, chat_body
from gateway.responses.stream import ResponsesStream
from gateway.settings import Api, BackendConfig, BackendKind


class ChatAsResponses:
    """Turns a chat completion answer (whole or streamed) into the Responses answer for ``request``."""

    __slots__ = ("_request",)

    def __init__(self, request: ResponsesRequest) -> None:
        self._request = request

    def answer(self, body: bytes) -> bytes:
        return orjson.dumps(response_from_chat(self._request, orjson.loads(body)))

    def stream(self) -> ResponsesStream:
        return ResponsesStream(self._request)


class ResponsesCall:
    """The ``Proxied`` of a Responses request."""

    api = None  # native on some backends, translated on others: ``served_by`` decides for each

    def __init__(self, request: ResponsesRequest, owners: ResponseOwners, affinity_key: bytes | None) -> None:
        self.request = request
        self.model = request.model
        self.stream = request.stream
        self.affinity_key = affinity_key
        self._owners = owners
        previous = request.payload.get("previous_response_id")
        self._pinned_to = owners.owner(previous) if isinstance(previous, str) else None

    def served_by(self, backend: BackendConfig) -> bool:
        if self.request.stateful:
            # Only the backend holding the stored response can continue it; translation has no history.
            native = serves(backend, Api.RESPONSES)
            return native and (self._pinned_to is None or backend.name == self._pinned_to)
        return serves(backend, Api.RESPONSES) or serves(backend, Api.CHAT)

    def unserved(self) -> GatewayError:
        model = f" for model {self.model!r}" if self.model else ""
        if self.request.stateful:
            return BadRequest(
                "'previous_response_id' (and 'conversation') continue a response stored by a backend, and no "
                f"backend{model} serves the Responses API natively. This gateway stores nothing: send the whole "
                "conversation as 'input' instead.",
                param="previous_response_id",
            )
        return ModelNotFound(f"No backend{model} serves the Responses API or chat completions.")

    def for_backend(self, backend: BackendConfig) -> Outbound:
        if serves(backend, Api.RESPONSES):
            body = self.request.body
            if backend.kind is BackendKind.AZURE and backend.deployment and self.model != backend.deployment:
                # Azure's v1 API names the deployment as the model.
                body = orjson.dumps({**self.request.payload, "model": backend.deployment})
            return Rewritten(Api.RESPONSES, body, NativeResponses(self._owners, backend.name))
        return Rewritten(Api.CHAT, self._chat_body, ChatAsResponses(self.request))

    @cached_property
    def _chat_body(self) -> bytes:
        return chat_body(self.request)
