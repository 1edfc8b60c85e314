"""A backend that crashes (SIGKILL) or is stopped (SIGTERM) while it is generating: what clients see, and how the gateway recovers.

What is promised, honestly:
- a non-streaming answer is sent whole at the end, so when its backend dies nothing has reached the client
  yet: the gateway retries it on another backend and the client never notices;
- a stream that has already delivered tokens cannot move: the client gets an error event (the SDK raises
  it), never a silently truncated answer;
- every request made after the crash succeeds on the surviving backend, and the crashed one, restarted on
  the same port, takes traffic again once the gateway's health check sees it;
- a backend asked to stop (SIGTERM) while it streams exits within seconds, and the stream it was serving ends
  with an error event, not a clean end and not a stall until someone kills the backend;
- a backend still loading its model (llama-server answers /health with 503 meanwhile; llama-cpp-python does
  not listen yet) gets no request until it is ready.
"""

from __future__ import annotations

import asyncio
import time

import openai
import pytest
from openai import AsyncOpenAI

pytestmark = pytest.mark.e2e

# A prompt the model answers at length (it stops only at max_tokens): SmolLM2 on one thread writes about
# 50 tokens/s here, so a generation runs for about 3 s, long after the crash, and the suite stays quick.
LONG_PROMPT = "Write a long story about a dragon."
LONG_MAX_TOKENS = 150
SHORT_PROMPT = "Say hello."
RETURN_DEADLINE = 30.0


async def long_stream(gateway_client: AsyncOpenAI, model_id: str, max_tokens: int, backends):
    """A long streamed answer just started, and the backend producing it (from x-gateway-backend)."""
    raw = await gateway_client.chat.completions.with_raw_response.create(
        model=model_id,
        messages=[{"role": "user", "content": LONG_PROMPT}],
        max_tokens=max_tokens,
        temperature=0,
        stream=True,
    )
    return raw, next(b for b in backends if b.name == raw.headers["x-gateway-backend"])


async def wait_until_used_again(ask, name: str) -> set[str]:
    """Send pairs of concurrent requests until `name` answers one; return the backends of the last pair."""
    deadline = time.monotonic() + RETURN_DEADLINE
    while True:
        answers = await asyncio.gather(ask(SHORT_PROMPT), ask(SHORT_PROMPT))
        seen = {backend for backend, _ in answers}
        if name in seen or time.monotonic() > deadline:
            return seen
        await asyncio.sleep(0.2)


async def test_requests_in_flight_on_a_crashed_backend_fail_over_and_it_comes_back(
    ask, both_backends_up
) -> None:
    llama_2 = both_backends_up[1]

    # Two long requests at once: one on each backend (see test_balancing).
    in_flight = [asyncio.create_task(ask(LONG_PROMPT, max_tokens=LONG_MAX_TOKENS)) for _ in range(2)]
    await asyncio.sleep(0.5)
    assert not any(task.done() for task in in_flight), "a generation ended before the crash: make it longer"
    llama_2.kill()

    answers = await asyncio.gather(*in_flight)
    assert [backend for backend, _ in answers] == ["llama-1", "llama-1"], "llama-2's request moved to llama-1"
    assert all(text.strip() for _, text in answers)

    # While llama-2 is down every request succeeds on llama-1.
    answers = await asyncio.gather(*(ask(SHORT_PROMPT) for _ in range(4)))
    assert {backend for backend, _ in answers} == {"llama-1"}
    assert all(text.strip() for _, text in answers)

    # Restarted on the same port, it is noticed by the health check and used again.
    llama_2.start()
    await asyncio.to_thread(llama_2.wait_ready)
    assert await wait_until_used_again(ask, "llama-2") == {"llama-1", "llama-2"}


async def test_a_stream_cut_by_a_crash_ends_with_an_error_and_later_requests_succeed(
    gateway_client: AsyncOpenAI, model_id: str, both_backends_up, ask
) -> None:
    raw, victim = await long_stream(gateway_client, model_id, LONG_MAX_TOKENS, both_backends_up)

    received = []
    with pytest.raises(openai.APIError):
        async for chunk in raw.parse():
            for choice in chunk.choices:
                assert choice.finish_reason is None, "the generation ended before the crash: make it longer"
                received.append(choice.delta.content or "")
            if victim.alive and "".join(received).strip():
                victim.kill()  # tokens have reached us: this stream can no longer move to another backend
    assert not victim.alive

    for _ in range(3):
        backend, text = await ask(SHORT_PROMPT)
        assert backend != victim.name
        assert text.strip()


# Stopped mid-stream, llama-server stops generating at once and would then wait forever for the client of the
# stream to hang up, had its launcher not repeated the signal after 1 s (backends/llamacpp/llama_server.py);
# llama-cpp-python's server lets a stream run 2 s more (uvicorn's graceful shutdown), then cuts it.
STOP_MAX_TOKENS = 1000  # ~20 s of generation: only the stop can end it within the test
STOP_DEADLINE = 4.0


async def test_a_backend_stopped_mid_stream_exits_within_seconds_and_the_stream_ends_with_an_error(
    gateway_client: AsyncOpenAI, model_id: str, both_backends_up, ask
) -> None:
    raw, victim = await long_stream(gateway_client, model_id, STOP_MAX_TOKENS, both_backends_up)

    received: list[str] = []
    stopped_at = 0.0
    with pytest.raises(openai.APIError):
        async for chunk in raw.parse():
            for choice in chunk.choices:
                assert choice.finish_reason is None, "the generation ended before the stop: make it longer"
                received.append(choice.delta.content or "")
            if not stopped_at and "".join(received).strip():
                victim.terminate()
                stopped_at = time.monotonic()
    error_after = time.monotonic() - stopped_at
    exit_code = await asyncio.to_thread(victim.wait_exited, STOP_DEADLINE)
    exited_after = time.monotonic() - stopped_at

    assert stopped_at, "no token arrived before the stream ended"
    assert exit_code is not None, f"{victim.name} still running {STOP_DEADLINE:g}s after SIGTERM"
    assert exited_after < STOP_DEADLINE
    assert error_after < STOP_DEADLINE
    backend, text = await ask(SHORT_PROMPT)
    assert backend != victim.name
    assert text.strip()


async def test_a_backend_still_loading_its_model_gets_no_request_until_it_is_ready(
    ask, both_backends_up, backend_kind
) -> None:
    llama_2 = both_backends_up[1]
    llama_2.kill()
    llama_2.start()

    statuses, served_while_loading = [], []
    deadline = time.monotonic() + RETURN_DEADLINE
    while (status := await asyncio.to_thread(llama_2.ready_status)) != 200:
        assert time.monotonic() < deadline, "llama-2 did not finish loading"
        statuses.append(status)
        backend, text = await ask(SHORT_PROMPT, max_tokens=1)
        assert text.strip()
        if await asyncio.to_thread(llama_2.ready_status) != 200:  # sent and answered while it was loading
            served_while_loading.append(backend)

    assert served_while_loading, "llama-2 loaded before a request could be sent: the test proves nothing"
    assert set(served_while_loading) == {"llama-1"}
    if backend_kind == "llama-server":
        assert 503 in statuses, "llama-server answers 503 while it loads its model"
    assert await wait_until_used_again(ask, "llama-2") == {"llama-1", "llama-2"}
