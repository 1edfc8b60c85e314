"""The one way to the model: the official `openai` SDK, pointed at the gateway by configuration.

OPENAI_HOST picks the client, as in Azure's chat app samples:

    local         AsyncOpenAI      -> OPENAI_BASE_URL (the gateway, http://127.0.0.1:8080/v1)
    openai        AsyncOpenAI      -> api.openai.com, or OPENAI_BASE_URL
    azure         AsyncAzureOpenAI -> AZURE_OPENAI_ENDPOINT/openai/deployments/{deployment}/…
    azure_custom  AsyncAzureOpenAI -> AZURE_OPENAI_CUSTOM_URL/openai/deployments/{deployment}/…
                                      (another endpoint in Azure's shape: the gateway, an APIM gateway)

CHAT_MODEL_API picks the API that writes replies: `chat` (chat completions, the default) or `responses`
(`client.responses.stream`, as Microsoft's current chat samples do; for the Azure hosts through the v1 API,
AZURE_OPENAI_ENDPOINT/openai/v1/, which needs no api-version). `stream_text` hides the difference.

Azure hosts use AZURE_OPENAI_API_KEY when set, otherwise an Entra token from DefaultAzureCredential
(AZURE_CLIENT_ID selects a user-assigned managed identity). The SDK's own retries are off: the gateway
retries on another backend, and the user gets a Retry button instead of a silent wait.

`describe_failure` turns every SDK error into the sentence the page shows.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Literal

import openai
from openai import AsyncAzureOpenAI, AsyncOpenAI
from openai.types.chat import (
    ChatCompletionAssistantMessageParam,
    ChatCompletionMessageParam,
    ChatCompletionSystemMessageParam,
    ChatCompletionUserMessageParam,
)
from openai.types.responses import EasyInputMessageParam, ResponseInputParam

from chat_client.settings import ChatSettings, ModelAPI
from chat_client.telemetry import client_options

log = logging.getLogger(__name__)

ENTRA_SCOPE = "https://cognitiveservices.azure.com/.default"
# The local gateway has no auth, but the SDK insists on a key.
PLACEHOLDER_KEY = "no-key-needed"


@dataclass(frozen=True)
class ChatModel:
    client: AsyncOpenAI
    model: str
    max_tokens: int
    timeout: float
    api: ModelAPI = "chat"


class StreamFailed(Exception):
    """The model service ended a Responses stream with an `error` or `response.failed` event."""


@asynccontextmanager
async def open_chat_model(settings: ChatSettings) -> AsyncIterator[ChatModel]:
    """The app's one client (and Entra credential, if any), closed when the app stops."""
    credential = None
    client: AsyncOpenAI
    target: str | None
    timeout, max_retries = settings.request_timeout, 0
    telemetry = client_options()  # {} or the instrumented http_client
    if settings.openai_host in ("azure", "azure_custom"):
        api_key: str | None = None
        token_provider: Callable[[], Awaitable[str]] | None = None
        if settings.azure_openai_api_key is not None:
            api_key = settings.azure_openai_api_key.get_secret_value()
        else:
            from azure.identity.aio import DefaultAzureCredential, get_bearer_token_provider

            credential = DefaultAzureCredential(managed_identity_client_id=settings.azure_client_id)
            token_provider = get_bearer_token_provider(credential, ENTRA_SCOPE)
        endpoint = settings.azure_endpoint
        assert endpoint is not None  # the settings require it for the Azure hosts
        if settings.model_api == "responses":
            # The v1 API: a plain OpenAI client, the token provider in place of a key.
            client = AsyncOpenAI(
                base_url=endpoint.rstrip("/") + "/openai/v1/",
                api_key=api_key or token_provider,
                timeout=timeout,
                max_retries=max_retries,
                **telemetry,
            )
            target = str(client.base_url)
        else:
            client = AsyncAzureOpenAI(
                azure_endpoint=endpoint,
                api_version=settings.azure_openai_api_version,
                api_key=api_key,
                azure_ad_token_provider=token_provider,
                timeout=timeout,
                max_retries=max_retries,
                **telemetry,
            )
            target = endpoint
    else:
        key = settings.openai_api_key.get_secret_value() if settings.openai_api_key else PLACEHOLDER_KEY
        client = AsyncOpenAI(
            base_url=settings.resolved_base_url,
            api_key=key,
            timeout=timeout,
            max_retries=max_retries,
            **telemetry,
        )
        target = str(client.base_url)
    log.info(
        "model: %s via OPENAI_HOST=%s at %s (%s API, %s)",
        settings.chat_model,
        settings.openai_host,
        target,
        settings.model_api,
        "Entra ID token" if credential is not None else "API key",
    )
    try:
        yield ChatModel(
            client=client,
            model=settings.chat_model,
            max_tokens=settings.max_reply_tokens,
            timeout=settings.request_timeout,
            api=settings.model_api,
        )
    finally:
        await client.close()
        if credential is not None:
            await credential.close()


async def stream_text(model: ChatModel, messages: Sequence[Mapping[str, str]]) -> AsyncIterator[str]:
    """The reply's text as it arrives, from whichever API the settings chose.

    Cancelling the consumer closes the HTTP stream: the gateway sees the client leave and frees the backend.
    """
    if model.api == "responses":
        instructions, turns = responses_input(messages)
        async with model.client.responses.stream(
            model=model.model,
            input=turns,
            instructions=instructions or None,
            max_output_tokens=model.max_tokens,
            store=False,
        ) as events:
            async for event in events:
                if event.type == "response.output_text.delta":
                    if event.delta:
                        yield event.delta
                elif event.type in ("error", "response.failed"):
                    raise StreamFailed(event.type)
        return
    stream = await model.client.chat.completions.create(
        model=model.model,
        messages=chat_messages(messages),
        max_tokens=model.max_tokens,
        stream=True,
    )
    async with stream:
        async for chunk in stream:
            for choice in chunk.choices:
                text = choice.delta.content if choice.delta else None
                if text:
                    yield text


def chat_messages(messages: Sequence[Mapping[str, str]]) -> list[ChatCompletionMessageParam]:
    """The prompt's `{"role", "content"}` messages as the chat completions API's (the same JSON)."""
    typed: list[ChatCompletionMessageParam] = []
    for message in messages:
        role, content = _role(message["role"]), message["content"]
        if role == "system":
            typed.append(ChatCompletionSystemMessageParam(role=role, content=content))
        elif role == "user":
            typed.append(ChatCompletionUserMessageParam(role=role, content=content))
        else:
            typed.append(ChatCompletionAssistantMessageParam(role=role, content=content))
    return typed


def responses_input(messages: Sequence[Mapping[str, str]]) -> tuple[str, ResponseInputParam]:
    """The Responses API's `instructions` (the system prompt) and `input` (the conversation)."""
    instructions = "\n\n".join(m["content"] for m in messages if m["role"] == "system")
    turns: ResponseInputParam = [
        EasyInputMessageParam(role=_role(m["role"]), content=m["content"])
        for m in messages
        if m["role"] != "system"
    ]
    return instructions, turns


def _role(role: str) -> Literal["system", "user", "assistant"]:
    """A prompt's role (the database allows only user and assistant; the system prompt comes from settings)."""
    if role == "system":
        return "system"
    if role == "user":
        return "user"
    if role == "assistant":
        return "assistant"
    raise ValueError(f"a prompt message with the role {role!r}")


@dataclass(frozen=True)
class Failure:
    """Why a reply failed, for the page: a stable `code` and a sentence for a person."""

    code: str
    message: str
    retry_after: float | None = None


def describe_failure(exc: BaseException, timeout: float, *, started: bool = False) -> Failure:
    """`started`: some of the reply had already arrived when `exc` happened."""
    transport_error = type(exc).__module__.split(".")[0] in ("httpx", "httpx2", "httpcore", "httpcore2")
    if started and (isinstance(exc, openai.APIConnectionError) or transport_error):
        # Older SDKs let the transport's own errors out of a stream; newer ones wrap them.
        if isinstance(exc, openai.APITimeoutError) or "Timeout" in type(exc).__name__:
            return Failure("timeout", f"The model stopped sending for more than {timeout:g} seconds.")
        return Failure("interrupted", "The connection to the model broke off in the middle of the reply.")
    if isinstance(exc, openai.RateLimitError):
        retry_after = _retry_after(exc.response.headers)
        wait = f" Try again in {retry_after:g} s." if retry_after else " Try again in a moment."
        return Failure("rate_limited", "The model is busy (too many requests)." + wait, retry_after)
    if isinstance(exc, openai.APITimeoutError):
        return Failure("timeout", f"The model did not answer within {timeout:g} seconds.")
    if isinstance(exc, openai.APIConnectionError):
        return Failure("unreachable", "Could not reach the model service.")
    if isinstance(exc, openai.APIStatusError):
        if exc.status_code >= 500:
            return Failure("upstream_error", f"The model service failed (HTTP {exc.status_code}).")
        return Failure(
            "rejected",
            f"The model service refused the request (HTTP {exc.status_code}): {_short(exc.message)}",
        )
    if isinstance(exc, openai.APIError | StreamFailed):
        # An error event inside an already started stream. Its text names gateway internals (backend
        # names, upstream errors) that mean nothing to the person reading; the logs have it.
        return Failure("upstream_error", "The model service stopped with an error.")
    return Failure("internal", "Something went wrong while writing the reply.")


def _retry_after(headers: object) -> float | None:
    """Seconds from `retry-after-ms` or a numeric `retry-after` (an HTTP date is left to the gateway)."""
    get = getattr(headers, "get", None)
    if get is None:
        return None
    for name, scale in (("retry-after-ms", 0.001), ("retry-after", 1.0)):
        value = get(name)
        if value:
            try:
                seconds = float(value) * scale
            except ValueError:
                continue
            if 0 <= seconds < 3600:
                return round(seconds, 1)
    return None


def _short(text: str, limit: int = 200) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 1] + "…"
