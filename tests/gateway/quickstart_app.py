"""A chat app written the way Microsoft's openai-chat-app-quickstart is, as an aiohttp app: the Azure OpenAI v1
base URL, a bearer token provider from azure-identity, the Responses API streamed with ``store=False``, the reply
sent on as NDJSON deltas. The tests point ``AZURE_OPENAI_ENDPOINT`` at the gateway and change nothing else (the
credential is theirs to give: a managed identity in Azure, a local signer in the tests)."""

from __future__ import annotations

import json
import os
from collections.abc import AsyncIterator

import openai
from aiohttp import web
from azure.core.credentials_async import AsyncTokenCredential
from azure.identity.aio import get_bearer_token_provider
from openai import AsyncOpenAI

CLIENT = web.AppKey("openai_client", AsyncOpenAI)
MODEL = web.AppKey("openai_model", str)


def create_app(credential: AsyncTokenCredential) -> web.Application:
    app = web.Application()

    async def openai_client(app: web.Application) -> AsyncIterator[None]:
        token_provider = get_bearer_token_provider(credential, "https://cognitiveservices.azure.com/.default")
        app[CLIENT] = AsyncOpenAI(
            base_url=os.environ["AZURE_OPENAI_ENDPOINT"].rstrip("/") + "/openai/v1/",
            api_key=token_provider,
        )
        app[MODEL] = os.environ["AZURE_OPENAI_CHAT_DEPLOYMENT"]
        yield
        await app[CLIENT].close()

    app.cleanup_ctx.append(openai_client)
    app.router.add_post("/chat/stream", chat_handler)
    return app


async def chat_handler(request: web.Request) -> web.StreamResponse:
    request_messages = (await request.json())["messages"]
    all_messages = [{"role": "system", "content": "You are a helpful assistant."}, *request_messages]
    response = web.StreamResponse(headers={"Content-Type": "application/x-ndjson"})
    await response.prepare(request)
    client, model = request.app[CLIENT], request.app[MODEL]
    try:
        async with client.responses.stream(model=model, input=all_messages, store=False) as stream:
            async for event in stream:
                if event.type == "response.output_text.delta":
                    line = json.dumps({"delta": {"content": event.delta, "role": "assistant"}}, ensure_ascii=False)
                    await response.write(line.encode() + b"\n")
    except openai.OpenAIError as error:  # the quickstart sends the error to the page as the last line
        await response.write(json.dumps({"error": str(error)}).encode() + b"\n")
    await response.write_eof()
    return response
