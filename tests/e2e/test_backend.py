"""The backends on their own (`python -m backends.llamacpp`, `python -m backends.llamacpp.llama_server`):
clean errors, and what makes them fit behind a load balancer."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
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


# ---- how the llama-server launcher stops it (backends/llamacpp/llama_server.py) -------------------------------


def start_launcher(tmp_path: Path, **env: str) -> tuple[subprocess.Popen[bytes], int]:
    """`python -m backends.llamacpp.llama_server` on a free port, its own session as a supervisor starts it."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with (tmp_path / "launcher.log").open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "backends.llamacpp.llama_server", "--port", str(port), "--parallel", "1"],
            stdout=log, stderr=subprocess.STDOUT, env={**os.environ, **env}, start_new_session=True,
        )
    return process, port


def wait_healthy(process: subprocess.Popen[bytes], port: int) -> None:
    deadline = time.monotonic() + 60
    while True:
        assert process.poll() is None, f"the launcher exited with code {process.returncode}"
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        assert time.monotonic() < deadline, "llama-server did not become ready"
        time.sleep(0.05)


def listening(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_an_idle_llama_server_stops_cleanly_at_once(llama_cpp_installed, tmp_path: Path, sig: int) -> None:
    process, port = start_launcher(tmp_path)
    wait_healthy(process, port)

    started = time.monotonic()
    os.killpg(process.pid, sig)  # as the supervisor (or a Ctrl-C in its terminal) sends it: to the group
    code = process.wait(timeout=10)

    assert code == 0, "one signal, passed on once: llama-server's own clean exit"
    assert time.monotonic() - started < 1.0
    assert not listening(port)


def test_a_killed_launcher_takes_llama_server_with_it(llama_cpp_installed, tmp_path: Path) -> None:
    process, port = start_launcher(tmp_path)
    wait_healthy(process, port)

    process.kill()  # only the launcher: llama-server is in a process group of its own
    process.wait()

    deadline = time.monotonic() + 2
    while listening(port):
        assert time.monotonic() < deadline, "llama-server outlived its launcher"
        time.sleep(0.02)


def test_a_llama_server_killed_by_a_signal_kills_its_launcher_with_the_same(
    llama_cpp_installed, tmp_path: Path
) -> None:
    crashing = tmp_path / "llama-server"
    crashing.write_text("#!/bin/sh\nkill -SEGV $$\n")
    crashing.chmod(0o755)

    process, _ = start_launcher(tmp_path, LLAMA_SERVER_BIN=str(crashing))

    assert process.wait(timeout=30) == -signal.SIGSEGV  # what a supervisor reports is the crash itself
