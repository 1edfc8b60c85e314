"""The model client: one per app, the right shape per OPENAI_HOST, errors in words a person understands."""

from __future__ import annotations

import time
from typing import ClassVar

try:  # the openai SDK's HTTP library: httpx2 since openai 3, httpx before
    import httpx2 as httpx
except ImportError:  # pragma: no cover
    import httpx  # type: ignore[no-redef]

import openai
import pytest
from azure.core.credentials import AccessToken
from chat_client.llm import describe_failure, open_chat_model, stream_text
from chat_client.settings import ChatSettings
from cryptography.fernet import Fernet

from tests.chat_client.scripted_model import ScriptedModel

KEY = Fernet.generate_key().decode()


class FakeCredential:
    """Stands in for DefaultAzureCredential: hands out a token and records that it was closed."""

    instances: ClassVar[list[FakeCredential]] = []

    def __init__(self, **kwargs: object) -> None:
        self.kwargs = kwargs
        self.scopes: list[str] = []
        self.closed = False
        FakeCredential.instances.append(self)

    async def get_token(self, *scopes: str, **_: object) -> AccessToken:
        self.scopes.extend(scopes)
        return AccessToken("entra-token", int(time.time()) + 3600)

    async def close(self) -> None:
        self.closed = True


async def test_azure_without_key_uses_an_entra_token_from_the_managed_identity(upstream, monkeypatch):
    monkeypatch.setattr("azure.identity.aio.DefaultAzureCredential", FakeCredential)
    FakeCredential.instances.clear()
    model = await upstream(reply_text="hi", deployment="gpt-deploy")
    settings = ChatSettings(
        session_key=KEY,
        openai_host="azure",
        azure_openai_endpoint=model.base_url,
        azure_openai_chat_deployment="gpt-deploy",
        azure_client_id="11111111-2222-3333-4444-555555555555",
    )
    async with open_chat_model(settings) as chat_model:
        reply = await chat_model.client.chat.completions.create(
            model=chat_model.model, messages=[{"role": "user", "content": "x"}]
        )
    assert reply.choices[0].message.content == "hi"
    (credential,) = FakeCredential.instances
    assert credential.kwargs == {"managed_identity_client_id": "11111111-2222-3333-4444-555555555555"}
    assert credential.scopes == ["https://cognitiveservices.azure.com/.default"]
    assert credential.closed  # closed with the app, like the client
    request = model.chat_requests[0]
    assert request.headers["authorization"] == "Bearer entra-token"
    assert request.path == "/openai/deployments/gpt-deploy/chat/completions"


async def test_sdk_retries_are_off_the_gateway_owns_retrying(upstream):
    model = await upstream(script=[500])
    settings = ChatSettings(session_key=KEY, openai_base_url=model.openai_url, request_timeout=7)
    async with open_chat_model(settings) as chat_model:
        assert chat_model.client.max_retries == 0
        assert chat_model.client.timeout == 7
        with pytest.raises(openai.InternalServerError):
            await chat_model.client.chat.completions.create(
                model=chat_model.model, messages=[{"role": "user", "content": "x"}]
            )
    assert model.chat_count == 1


def _status_error(status: int, headers: dict[str, str] | None = None, message: str = "boom") -> Exception:
    request = httpx.Request("POST", "http://gateway/v1/chat/completions")
    response = httpx.Response(status, headers=headers or {}, request=request)
    cls = openai.RateLimitError if status == 429 else openai.APIStatusError
    return cls(message, response=response, body=None)


@pytest.mark.parametrize(
    ("headers", "retry_after", "says"),
    [
        ({"retry-after-ms": "2500"}, 2.5, "Try again in 2.5 s."),
        ({"retry-after": "3"}, 3.0, "Try again in 3 s."),
        ({"retry-after": "Wed, 21 Oct 2015 07:28:00 GMT"}, None, "Try again in a moment."),
        ({}, None, "Try again in a moment."),
    ],
)
def test_rate_limit_messages(headers, retry_after, says):
    failure = describe_failure(_status_error(429, headers), 60)
    assert failure.code == "rate_limited" and failure.retry_after == retry_after
    assert failure.message == "The model is busy (too many requests). " + says


def test_other_failures():
    request = httpx.Request("POST", "http://gateway/v1/chat/completions")
    assert describe_failure(_status_error(503), 60).message == "The model service failed (HTTP 503)."
    rejected = describe_failure(_status_error(400, message="context length exceeded"), 60)
    assert rejected.code == "rejected" and "context length exceeded" in rejected.message
    assert describe_failure(openai.APITimeoutError(request), 2.5).message == (
        "The model did not answer within 2.5 seconds."
    )
    assert describe_failure(openai.APIConnectionError(request=request), 60).code == "unreachable"
    assert (
        describe_failure(openai.APIConnectionError(request=request), 60, started=True).code == "interrupted"
    )
    assert describe_failure(openai.APITimeoutError(request), 60, started=True).code == "timeout"
    assert describe_failure(httpx.RemoteProtocolError("cut"), 60, started=True).code == "interrupted"
    assert describe_failure(RuntimeError("bug"), 60).code == "internal"


async def test_responses_api_on_azure_goes_through_the_v1_api_with_an_entra_token(monkeypatch):
    monkeypatch.setattr("azure.identity.aio.DefaultAzureCredential", FakeCredential)
    FakeCredential.instances.clear()
    async with ScriptedModel(["Hi", " there"]).serve() as model:
        settings = ChatSettings(
            session_key=KEY,
            openai_host="azure_custom",
            azure_openai_custom_url=model.root,
            azure_openai_chat_deployment="gpt-deploy",
            model_api="responses",
        )
        async with open_chat_model(settings) as chat_model:
            text = [piece async for piece in stream_text(chat_model, [{"role": "user", "content": "x"}])]
    assert text == ["Hi", " there"]
    assert model.seen == [("/openai/v1/responses", "Bearer entra-token")]
    assert model.requests[0][1]["model"] == "gpt-deploy"
    assert FakeCredential.instances[0].closed
