"""The backends on their own (`python -m backends.llamacpp`, `python -m backends.llamacpp.llama_server`):
clean errors, and what makes them fit behind a load balancer."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from pathlib import Path

import aiohttp
import pytest
from openai import AsyncOpenAI

pytestmark = pytest.mark.e2e


LLAMACPP_ONLY = pytest.mark.parametrize("backend_kind", ["llamacpp"], indirect=True)


def run_backend(*args: str, module: str = "backends.llamacpp", **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", module, "--port", "1", *args],
        capture_output=True, text=True, timeout=60, env={**os.environ, **env}, check=False,
    )


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (None, "model file not found"),
        (b"<html>not a model</html>", "not a GGUF model file"),
        (b"GGUF" + b"\0" * 60, "cannot load"),  # the right magic bytes, then garbage: llama.cpp refuses it
    ],
    ids=["missing", "not-gguf", "corrupt-gguf"],
)
def test_an_unusable_model_file_is_one_line_and_exit_code_2(
    llama_cpp_installed: None, tmp_path: Path, content: bytes | None, expected: str
) -> None:
    model = tmp_path / "model.gguf"
    if content is not None:
        model.write_bytes(content)

    result = run_backend("--model", str(model))

    assert result.returncode == 2
    assert result.stderr.count("\n") == 1, result.stderr
    assert expected in result.stderr and str(model) in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(
    ("content", "expected"),
    [(None, "model file not found"), (b"<html>not a model</html>", "not a GGUF model file")],
    ids=["missing", "not-gguf"],
)
def test_llama_server_refuses_an_unusable_model_file_in_one_line(
    llama_cpp_installed: None, tmp_path: Path, content: bytes | None, expected: str
) -> None:
    model = tmp_path / "model.gguf"
    if content is not None:
        model.write_bytes(content)

    result = run_backend("--model", str(model), module="backends.llamacpp.llama_server")

    assert result.returncode == 2
    assert result.stderr.count("\n") == 1, result.stderr
    assert expected in result.stderr and str(model) in result.stderr


def test_llama_server_without_its_binary_says_how_to_build_it(llama_cpp_installed: None, tmp_path: Path) -> None:
    result = run_backend(module="backends.llamacpp.llama_server", LLAMA_SERVER_BIN=str(tmp_path / "none"))

    assert result.returncode == 2
    assert result.stderr.count("\n") == 1, result.stderr
    assert "LLAMA_SERVER_BIN" in result.stderr


async def test_the_model_list_answers_at_once_while_a_stream_runs_to_its_end(
    both_backends_up, model_id: str
) -> None:
    backend = both_backends_up[0]
    async with AsyncOpenAI(base_url=backend.url, api_key="unused", max_retries=0) as client:
        stream = await client.chat.completions.create(
            model=model_id, messages=[{"role": "user", "content": "Write a long story about a dragon."}],
            max_tokens=60, temperature=0, stream=True,
        )
        finish_reasons = []

        async def read_stream() -> None:
            async for chunk in stream:
                finish_reasons.extend(c.finish_reason for c in chunk.choices if c.finish_reason)

        reader = asyncio.create_task(read_stream())
        await asyncio.sleep(0.3)  # mid-generation
        started = time.perf_counter()
        models = await client.models.list()
        waited = time.perf_counter() - started
        await reader

    assert [m.id for m in models.data] == [model_id]
    assert waited < 0.5, "a health probe must not wait for the running generation"
    assert finish_reasons == ["length"], "the probe must not cut the running stream short"


@LLAMACPP_ONLY  # llama-cpp-python's own quirks, answered by the ASGI wrappers of backends/llamacpp/asgi.py
async def test_a_request_naming_no_model_is_answered_with_the_served_name(both_backends_up, model_id) -> None:
    body = {"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 2}
    # A request id that is not a UUID, as gateways send: llama-cpp-python alone would answer 400.
    headers = {"X-Request-ID": "0123456789abcdef01234567"}
    url = f"{both_backends_up[0].url}/chat/completions"
    async with aiohttp.ClientSession() as session:
        async with session.post(url, json=body, headers=headers) as r:
            assert r.status == 200
            completion = await r.json()
        async with session.post(url, data=b"{not json") as r:
            assert r.status == 400
            error = await r.json()

    assert completion["model"] == model_id
    assert error["error"]["type"] == "invalid_request_error"
