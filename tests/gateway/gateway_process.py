"""``python -m gateway`` as a real process, for what only a process shows: signals, workers, exit codes."""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import openai


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@asynccontextmanager
async def gateway_process(
    env: dict[str, str],
) -> AsyncIterator[tuple[openai.AsyncOpenAI, subprocess.Popen[bytes]]]:
    """``python -m gateway`` as a real process on a free port; yields (client, process) once it serves."""
    port = _free_port()
    process = subprocess.Popen(  # noqa: ASYNC220 (returns at once: the process is waited for below, not here)
        [sys.executable, "-m", "gateway"],
        env={k: v for k, v in os.environ.items() if not k.startswith("GATEWAY_")} | env | {"GATEWAY_PORT": str(port)},
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )
    try:
        async with openai.AsyncOpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="x", max_retries=0) as client:
            deadline = time.monotonic() + 20
            while True:
                try:
                    await client.models.list()
                    break
                except openai.APIConnectionError:
                    if time.monotonic() > deadline:
                        raise
                    await asyncio.sleep(0.1)
            yield client, process
    finally:
        process.terminate()


async def workers_started(process: subprocess.Popen[bytes], workers: int) -> list[bytes]:
    """The output lines up to the last worker's start-up line. One worker answering is not all of them started:
    on a busy machine another may still be importing, and each writes its gateway_starting line before serving."""
    assert process.stdout is not None
    early: list[bytes] = []
    while sum(b'"gateway_starting"' in line for line in early) < workers:
        line = await asyncio.wait_for(asyncio.to_thread(process.stdout.readline), timeout=60)
        assert line, "the gateway's output ended before every worker had started"
        early.append(line)
    return early
