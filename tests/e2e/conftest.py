"""Real llama.cpp backends for the end-to-end tests, and a gateway in front of them.

Two `python -m backends.llamacpp` processes (1 thread each, the embedded SmolLM2) live for the whole session;
a test may kill one, and the `both_backends_up` fixture brings it back before the next test. The gateway
runs inside the test process on a real socket, so its state is fresh for every test.

Outside CI these tests skip, saying why, when llama-cpp-python or the embedded model is missing; in CI
(CI=true) that is a failure instead: CI must exercise the real thing.
"""

from __future__ import annotations

import asyncio
import collections
import importlib.util
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from openai import AsyncOpenAI

from backends.llamacpp.model import ModelFileError, default_model_path, served_name

STARTUP_TIMEOUT = 120.0
THREADS = 1
CTX = 2048


def _in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


def _missing_prerequisite() -> str | None:
    if importlib.util.find_spec("llama_cpp") is None:
        return "llama-cpp-python is not installed (scripts/bootstrap.sh installs it)"
    try:
        default_model_path()
    except ModelFileError as e:
        return str(e)
    return None


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class LlamaBackend:
    """One backend process on a fixed port, which can be killed and started again on the same port."""

    def __init__(self, name: str, port: int, log_path: Path) -> None:
        self.name = name
        self.port = port
        self.log_path = log_path
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    @property
    def alive(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def start(self) -> None:
        argv = [sys.executable, "-m", "backends.llamacpp", "--port", str(self.port),
                "--threads", str(THREADS), "--ctx", str(CTX)]
        with self.log_path.open("ab") as log:
            # Its own session, so that a Ctrl-C on pytest doesn't kill it behind the fixtures' back.
            self._process = subprocess.Popen(
                argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )

    def wait_ready(self, timeout: float = STARTUP_TIMEOUT) -> None:
        deadline = time.monotonic() + timeout
        while True:
            if not self.alive:
                pytest.fail(f"{self.name} exited with code {self._process.returncode}:\n{self.log_tail()}")
            try:
                with urllib.request.urlopen(f"{self.url}/models", timeout=2) as response:
                    if response.status == 200:
                        return
            except (urllib.error.URLError, OSError):
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"{self.name} did not serve /v1/models within {timeout:g}s:\n{self.log_tail()}")
            time.sleep(0.1)

    def kill(self) -> None:
        """SIGKILL: a crash, with no chance to close connections politely."""
        assert self._process is not None
        self._process.send_signal(signal.SIGKILL)
        self._process.wait()

    def stop(self) -> None:
        if self._process is None:
            return
        if self._process.poll() is None:
            self._process.terminate()
            try:
                self._process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()

    def log_tail(self, lines: int = 30) -> str:
        with self.log_path.open(errors="replace") as f:
            return "".join(collections.deque(f, maxlen=lines))


@pytest.fixture(scope="session")
def llama_cpp_installed() -> None:
    """Skips (outside CI) or fails (in CI) when llama-cpp-python or the embedded model is missing."""
    reason = _missing_prerequisite()
    if reason:
        if _in_ci():
            pytest.fail(f"the end-to-end tests must run in CI, but {reason}")
        pytest.skip(reason)


@pytest.fixture(scope="session")
def llama_backends(
    llama_cpp_installed: None, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[list[LlamaBackend]]:
    logs = tmp_path_factory.mktemp("llama-logs")
    backends = [LlamaBackend(f"llama-{i}", _free_port(), logs / f"llama-{i}.log") for i in (1, 2)]
    try:
        for backend in backends:  # both load the model at the same time
            backend.start()
        for backend in backends:
            backend.wait_ready()
        yield backends
    finally:
        for backend in backends:
            backend.stop()


@pytest.fixture
async def both_backends_up(llama_backends: list[LlamaBackend]) -> list[LlamaBackend]:
    """The session's backends, restarted first if an earlier test killed one."""
    for backend in llama_backends:
        if not backend.alive:
            backend.start()
            await asyncio.to_thread(backend.wait_ready)
    return llama_backends


@pytest.fixture
async def gateway_client(
    both_backends_up: list[LlamaBackend], aiohttp_server, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[AsyncOpenAI]:
    """The official SDK pointed at a fresh gateway in front of both backends; no SDK-side retries."""
    from gateway.app import create_app
    from gateway.settings import GatewaySettings

    # Only what the test says configures the gateway: none of the developer's GATEWAY_* variables.
    for name in [n for n in os.environ if n.startswith("GATEWAY_")]:
        monkeypatch.delenv(name)
    settings = GatewaySettings(
        backends=[
            {"name": b.name, "url": b.url, "kind": "llamacpp", "max_concurrency": 1} for b in both_backends_up
        ],
        # Notice a restarted backend within a fraction of a second, not the default 5 s.
        health_interval=0.2,
        # Four 16-token requests on two one-at-a-time backends queue for a second or two at most.
        queue_timeout=60,
    )
    server = await aiohttp_server(create_app(settings))
    client = AsyncOpenAI(base_url=str(server.make_url("/v1")), api_key="e2e", max_retries=0, timeout=60)
    yield client
    await client.close()


@pytest.fixture(scope="session")
def model_id(llama_backends: list[LlamaBackend]) -> str:
    """The id the backends serve: derived from the model file, as the backends themselves do."""
    return served_name(default_model_path())


@pytest.fixture
def ask(gateway_client: AsyncOpenAI, model_id: str):
    """`await ask(prompt)` -> (name of the backend that answered, text): one non-streaming chat completion."""

    async def ask(prompt: str, *, max_tokens: int = 16) -> tuple[str, str]:
        raw = await gateway_client.chat.completions.with_raw_response.create(
            model=model_id,
            messages=[{"role": "user", "content": prompt}],
            max_tokens=max_tokens,
            temperature=0,
        )
        completion = raw.parse()
        return raw.headers["x-gateway-backend"], completion.choices[0].message.content or ""

    return ask
