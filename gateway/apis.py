"""Which backend speaks which API, where each API lives on it, and what goes out on one attempt.

A request for an API goes natively to a backend that serves it. The one API the gateway also translates is
Responses: a backend that serves chat completions but not Responses gets the request rewritten as a chat
completion, and its answer rewritten back (``gateway.responses``). Embeddings and legacy completions are only
passed through, to backends that serve them.

Defaults per kind (``gateway.settings.DEFAULT_APIS``), overridden by a backend's ``apis``:

    openai        chat, responses, embeddings, completions    (OpenAI itself, vLLM, LiteLLM, another gateway)
    azure         chat, responses, embeddings, completions    (the deployment's model decides what answers)
    llama-server  chat, embeddings, completions               (Responses translated: see below; embeddings
                                                               need --embeddings, which backends.llamacpp's
                                                               launcher passes)
    llamacpp      chat, completions                           (llama-cpp-python's server: no Responses API,
                                                               embeddings only for a model loaded for them)

llama-server does answer ``/v1/responses`` itself, but (build b1-0c1e570, the one scripts/build_llamacpp.sh
makes) its stream events carry no ``output_index``, ``content_index`` or ``sequence_number``, and the official
SDK's ``responses.stream()`` — what Microsoft's samples call — fails on them with a TypeError. Translated, the
same backend streams events the SDK reads. ``tests/e2e/test_endpoints.py`` checks both facts, so a llama.cpp
that fixes its stream shows up there; ``"apis": [..., "responses"]`` sends Responses to it natively anyway.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from gateway.errors import GatewayError, ModelNotFound
from gateway.settings import AZURE_DEFAULT_API_VERSION, Api, BackendConfig, BackendKind

_PATHS = {Api.CHAT: "chat/completions", Api.RESPONSES: "responses", Api.EMBEDDINGS: "embeddings",
          Api.COMPLETIONS: "completions"}


def serves(backend: BackendConfig, api: Api) -> bool:
    return api in backend.served_apis  # worked out once per backend: this is on every request's path


def api_url(backend: BackendConfig, api: Api) -> str:
    """Where ``api`` lives on ``backend``. Azure: the deployment's classic path, except Responses, which Azure
    serves on its v1 API (``/openai/v1/responses``, the deployment named as ``model``)."""
    if backend.kind is BackendKind.AZURE:
        if api is Api.RESPONSES:
            return f"{backend.url}/openai/v1/responses"
        version = backend.api_version or AZURE_DEFAULT_API_VERSION
        return f"{backend.url}/openai/deployments/{backend.deployment}/{_PATHS[api]}?api-version={version}"
    return f"{backend.url}/{_PATHS[api]}"


class StreamTranslation(Protocol):
    """Rewrites one upstream stream into the client's API as it passes (``gateway.relay``)."""

    def start(self) -> bytes: ...
    def feed(self, chunk: bytes) -> bytes: ...
    def finish(self) -> bytes: ...
    def fail(self, message: str) -> bytes: ...


class Translation(Protocol):
    """How an answer in the upstream's API becomes one in the client's."""

    def answer(self, body: bytes) -> bytes:
        """A whole answer; raises ValueError or TypeError when the upstream's is not what it should be."""
        ...

    def stream(self) -> StreamTranslation: ...


class Outbound(Protocol):
    """What one attempt sends: to which API of the backend, which bytes, and how the answer comes back."""

    @property
    def api(self) -> Api: ...

    @property
    def body(self) -> bytes: ...

    @property
    def translation(self) -> Translation | None:
        """None: the answer is relayed as it is."""
        ...


@dataclass(slots=True)
class Rewritten:
    """An ``Outbound`` made for one backend: another API, other bytes, or a translation of the answer."""

    api: Api
    body: bytes
    translation: Translation | None = None


class PassThrough:
    """The ``Proxied`` methods of a request relayed as it is, to backends that serve its ``api``: it is its own
    ``Outbound`` everywhere (no copy made per attempt)."""

    # Each subclass is a slotted dataclass whose ``api`` and ``translation`` are fields it sets itself: read on
    # every request, a slot is a fast attribute (a class attribute read through an instance is not).
    __slots__ = ()
    api: Api
    translation: None
    body: bytes
    model: str | None

    def served_by(self, backend: BackendConfig) -> bool:
        return self.api in backend.served_apis

    def unserved(self) -> GatewayError:
        model = f" for model {self.model!r}" if self.model else ""
        return ModelNotFound(f"No backend{model} serves the {self.api} API.")

    def for_backend(self, backend: BackendConfig) -> Outbound:
        return self
