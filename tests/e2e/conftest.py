"""Real llama.cpp backends for the end-to-end tests, and a gateway in front of them.

Every test that uses the backends runs against both kinds (the `backend_kind` parameter): llama.cpp's own
server (`python -m backends.llamacpp.llama_server`, 2 slots each, gateway kind "llama-server", capacity read
from /props) and llama-cpp-python's (`python -m backends.llamacpp`, one request at a time, kind "llamacpp",
max_concurrency 1). Two processes of the kind (1 thread each, the embedded SmolLM2) live while the tests of
that kind run; a test may kill one, and the `both_backends_up` fixture brings it back before the next test. A
test about one kind only says so with `@pytest.mark.parametrize("backend_kind", [...], indirect=True)`. The
gateway runs inside the test process on a real socket, so its state is fresh for every test.

Outside CI these tests skip, saying why, when llama.cpp (either kind) or the embedded model is missing; in CI
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

from backends.llamacpp.llama_server import BinaryMissing, find_binary
from backends.llamacpp.model import ModelFileError, default_model_path, served_name

STARTUP_TIMEOUT = 120.0
THREADS = 1
CTX = 2048
LLAMA_SERVER = "llama-server"
LLAMACPP = "llamacpp"
KINDS = (LLAMA_SERVER, LLAMACPP)
PARALLEL = 2  # llama-server slots per backend: enough to show batching, few enough for 2 shared cores


def _in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


def _missing_prerequisite(kind: str) -> str | None:
    try:
        if kind == LLAMA_SERVER:
            find_binary()
        elif importlib.util.find_spec("llama_cpp") is None:
            return "llama-cpp-python is not installed (scripts/bootstrap.sh installs it)"
        default_model_path()
    except (BinaryMissing, ModelFileError) as e:
        return str(e)
    return None


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class LlamaBackend:
    """One backend process on a fixed port, which can be killed and started again on the same port."""

    def __init__(self, kind: str, name: str, port: int, log_path: Path) -> None:
        self.kind = kind
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

    @property
    def ready_url(self) -> str:
        """llama-server: /health (503 while it loads the model); llama-cpp-python listens only once loaded."""
        return f"http://127.0.0.1:{self.port}/health" if self.kind == LLAMA_SERVER else f"{self.url}/models"

    @property
    def gateway_config(self) -> dict[str, object]:
        if self.kind == LLAMA_SERVER:
            return {"name": self.name, "url": self.url, "kind": "llama-server"}  # capacity: /props total_slots
        return {"name": self.name, "url": self.url, "kind": "llamacpp", "max_concurrency": 1}

    def start(self) -> None:
        if self.kind == LLAMA_SERVER:
            argv = [sys.executable, "-m", "backends.llamacpp.llama_server", "--port", str(self.port),
                    "--threads", str(THREADS), "--parallel", str(PARALLEL), "--ctx-per-slot", str(CTX)]
        else:
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
            if self.ready_status() == 200:
                return
            if time.monotonic() > deadline:
                pytest.fail(f"{self.name} was not ready ({self.ready_url}) within {timeout:g}s:\n{self.log_tail()}")
            time.sleep(0.05)

    def ready_status(self) -> int | None:
        """The status its readiness URL answers now (503: loading), None when nothing listens."""
        try:
            with urllib.request.urlopen(self.ready_url, timeout=2) as response:
                return response.status
        except urllib.error.HTTPError as e:
            return e.code
        except OSError:
            return None

    def kill(self) -> None:
        """SIGKILL: a crash, with no chance to close connections politely."""
        assert self._process is not None
        self._process.send_signal(signal.SIGKILL)
        self._process.wait()

    def terminate(self) -> None:
        """SIGTERM, without waiting: a stop asked for, as a supervisor or an orchestrator asks."""
        assert self._process is not None
        self._process.send_signal(signal.SIGTERM)

    def wait_exited(self, timeout: float) -> int | None:
        """Its exit code once it has exited, None if it is still running after `timeout` seconds."""
        assert self._process is not None
        try:
            return self._process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            return None

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


def _require(kind: str) -> None:
    """Skips (outside CI) or fails (in CI) when that kind of backend or the embedded model is missing."""
    reason = _missing_prerequisite(kind)
    if reason:
        if _in_ci():
            pytest.fail(f"the end-to-end tests must run in CI, but {reason}")
        pytest.skip(reason)


@pytest.fixture(scope="session")
def llama_cpp_installed() -> None:
    """Both kinds of llama.cpp backend and the embedded model are there (see _require)."""
    for kind in KINDS:
        _require(kind)


@pytest.fixture(scope="session", params=KINDS)
def backend_kind(request: pytest.FixtureRequest) -> str:
    _require(request.param)
    return request.param


@pytest.fixture(scope="session")
def llama_backends(backend_kind: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[LlamaBackend]]:
    logs = tmp_path_factory.mktemp(f"{backend_kind}-logs")
    backends = [LlamaBackend(backend_kind, f"llama-{i}", _free_port(), logs / f"llama-{i}.log") for i in (1, 2)]
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
        backends=[b.gateway_config for b in both_backends_up],
        # Notice a restarted backend within a fraction of a second, not the default 5 s.
        health_interval=0.2,
        # Four 16-token requests on two backends queue for a second or two at most.
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
