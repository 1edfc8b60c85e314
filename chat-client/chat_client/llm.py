"""The one way to the model: the official `openai` SDK, pointed at the gateway by configuration.

OPENAI_HOST picks the client, as in Azure's chat app samples:

    local         AsyncOpenAI      -> OPENAI_BASE_URL (the gateway, http://127.0.0.1:8080/v1)
    openai        AsyncOpenAI      -> api.openai.com, or OPENAI_BASE_URL
    azure         AsyncAzureOpenAI -> AZURE_OPENAI_ENDPOINT/openai/deployments/{deployment}/…
    azure_custom  AsyncAzureOpenAI -> AZURE_OPENAI_CUSTOM_URL/openai/deployments/{deployment}/…
                                      (another endpoint in Azure's shape: the gateway, an APIM gateway)

Azure hosts use AZURE_OPENAI_API_KEY when set, otherwise an Entra token from DefaultAzureCredential
(AZURE_CLIENT_ID selects a user-assigned managed identity). The SDK's own retries are off: the gateway
retries on another backend, and the user gets a Retry button instead of a silent wait.

`describe_failure` turns every SDK error into the sentence the page shows.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

import openai
from openai import AsyncAzureOpenAI, AsyncOpenAI

from chat_client.settings import ChatSettings
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


@asynccontextmanager
async def open_chat_model(settings: ChatSettings) -> AsyncIterator[ChatModel]:
    """The app's one client (and Entra credential, if any), closed when the app stops."""
    credential = None
    client: AsyncOpenAI
    common = {"timeout": settings.request_timeout, "max_retries": 0, **client_options()}
    if settings.openai_host in ("azure", "azure_custom"):
        auth: dict[str, object]
        if settings.azure_openai_api_key is not None:
            auth = {"api_key": settings.azure_openai_api_key.get_secret_value()}
        else:
            from azure.identity.aio import DefaultAzureCredential, get_bearer_token_provider

            credential = DefaultAzureCredential(managed_identity_client_id=settings.azure_client_id)
            auth = {"azure_ad_token_provider": get_bearer_token_provider(credential, ENTRA_SCOPE)}
        endpoint = settings.azure_endpoint
        client = AsyncAzureOpenAI(
            azure_endpoint=endpoint, api_version=settings.azure_openai_api_version, **auth, **common
        )
        target = endpoint
    else:
        key = settings.openai_api_key.get_secret_value() if settings.openai_api_key else PLACEHOLDER_KEY
        client = AsyncOpenAI(base_url=settings.resolved_base_url, api_key=key, **common)
        target = str(client.base_url)
    log.info(
        "model: %s via OPENAI_HOST=%s at %s (%s)",
        settings.chat_model,
        settings.openai_host,
        target,
        "Entra ID token" if credential is not None else "API key",
    )
    try:
        yield ChatModel(
            client=client,
            model=settings.chat_model,
            max_tokens=settings.max_reply_tokens,
            timeout=settings.request_timeout,
        )
    finally:
        await client.close()
        if credential is not None:
            await credential.close()


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
    if isinstance(exc, openai.APIError):
        # An error event inside an already started stream.
        return Failure("upstream_error", f"The model service stopped with an error: {_short(exc.message)}")
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
