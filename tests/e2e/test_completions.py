"""Plain and streamed chat completions through the gateway, answered by real llama.cpp backends."""

from __future__ import annotations

import pytest
from openai import AsyncOpenAI

pytestmark = pytest.mark.e2e

BACKEND_NAMES = {"llama-1", "llama-2"}


async def test_a_completion_has_text_and_names_its_backend(ask) -> None:
    backend, text = await ask("What is the capital of France? Answer in one word.")

    assert text.strip()
    assert backend in BACKEND_NAMES


async def test_a_streamed_completion_arrives_in_chunks_and_finishes(
    gateway_client: AsyncOpenAI, model_id: str
) -> None:
    raw = await gateway_client.chat.completions.with_raw_response.create(
        model=model_id,
        messages=[{"role": "user", "content": "Name three colours."}],
        max_tokens=16,
        temperature=0,
        stream=True,
    )
    assert raw.headers["x-gateway-backend"] in BACKEND_NAMES
    assert raw.headers["content-type"].startswith("text/event-stream")

    pieces, finish_reasons = [], []
    async for chunk in raw.parse():
        for choice in chunk.choices:
            pieces.append(choice.delta.content or "")
            if choice.finish_reason:
                finish_reasons.append(choice.finish_reason)

    assert len([p for p in pieces if p]) > 1, "the answer should come in several chunks"
    assert "".join(pieces).strip()
    assert finish_reasons in (["length"], ["stop"])
