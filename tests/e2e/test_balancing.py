"""Concurrent requests are spread over the backends: none gets a second request while another is idle.

A llama-cpp-python backend takes one request at a time (max_concurrency=1); a llama-server backend as many as
its slots (2 here, read from its /props): in both cases the least loaded backend takes the next request.
"""

from __future__ import annotations

import asyncio
import collections

import pytest

pytestmark = pytest.mark.e2e

# One prompt for all: at temperature 0 every request takes as long as the others, so a backend finishing
# first cannot take two queued requests while the other is still on its first.
PROMPT = "Write one sentence about the sea."


async def test_two_concurrent_requests_go_one_to_each_backend(ask) -> None:
    answers = await asyncio.gather(*(ask(PROMPT) for _ in range(2)))

    assert collections.Counter(backend for backend, _ in answers) == {"llama-1": 1, "llama-2": 1}
    assert all(text.strip() for _, text in answers)


async def test_four_concurrent_requests_are_split_two_and_two(ask) -> None:
    answers = await asyncio.gather(*(ask(PROMPT) for _ in range(4)))

    assert collections.Counter(backend for backend, _ in answers) == {"llama-1": 2, "llama-2": 2}
    assert all(text.strip() for _, text in answers)
