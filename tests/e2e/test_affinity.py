"""Conversation affinity on real llama-server backends, measured: each turn of a chat goes back to the backend
that holds its history, which then reads only the new part of the prompt (its `timings.cache_n`)."""

from __future__ import annotations

import orjson
import pytest
from openai import AsyncOpenAI

pytestmark = [pytest.mark.e2e, pytest.mark.parametrize("backend_kind", ["llama-server"], indirect=True)]

QUESTIONS = ["Name a colour.", "Why that one?", "Name another."]


async def test_each_turn_of_a_chat_reuses_its_history_from_the_same_backend(
    gateway_client: AsyncOpenAI, model_id: str, capfd
) -> None:
    messages: list[dict[str, str]] = [{"role": "system", "content": "You are a helpful assistant. " * 8}]
    capfd.readouterr()
    for question in QUESTIONS:
        messages.append({"role": "user", "content": question})
        reply = await gateway_client.chat.completions.create(model=model_id, messages=messages, max_tokens=8,
                                                             temperature=0)
        messages.append({"role": "assistant", "content": reply.choices[0].message.content or ""})

    logged = [orjson.loads(line) for line in capfd.readouterr().out.splitlines() if line.startswith("{")]
    lines = [line for line in logged if line.get("event") == "request"]
    assert [line["affinity"] for line in lines] == ["new", "hit", "hit"]
    assert len({line["backend"] for line in lines}) == 1
    assert [line["prompt_reuse"] > 0.7 for line in lines[1:]] == [True, True], lines
