"""What each process of a local stack is: its command, environment, port and readiness URL.

Shared by `scripts.stack` (make up) and `bench.llamacpp`, so both run the pieces exactly the same way.
"""

from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path

from backends.llamacpp.llama_server import DEFAULT_PARALLEL
from backends.llamacpp.model import DEFAULT_MODEL_FILE, served_name
from scripts.supervisor import Child, Console

MODEL = served_name(Path(DEFAULT_MODEL_FILE))
# Loading the model takes seconds; the first import after a fresh install can take much longer.
BACKEND_START_TIMEOUT = 120.0
SERVICE_START_TIMEOUT = 60.0


@dataclass(frozen=True)
class Service:
    name: str
    argv: list[str]
    host: str
    port: int
    ready_path: str
    timeout: float
    env: dict[str, str] = field(default_factory=dict)
    # Whether the stack is pointless without it. A backend is not: the gateway routes around a dead one,
    # which is worth watching happen (kill -9 one and keep chatting).
    essential: bool = True
    # A backend's entry in the gateway's GATEWAY_BACKENDS (None: not a backend).
    gateway_entry: dict[str, object] | None = None
    # Seconds from SIGTERM to SIGKILL when the stack stops.
    stop_grace: float = 5.0

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def ready_url(self) -> str:
        return self.base_url + self.ready_path

    def child(self, console: Console) -> Child:
        return Child(self.name, self.argv, console, env=self.env, stop_grace=self.stop_grace)


def _model_args(model: Path | None) -> list[str]:
    return [] if model is None else ["--model", str(model)]


def llama_backend(name: str, *, host: str, port: int, threads: int, model: Path | None = None) -> Service:
    """llama-cpp-python's server: one request at a time (max_concurrency 1 in the gateway)."""
    return Service(
        name=name,
        argv=[sys.executable, "-m", "backends.llamacpp", "--host", host, "--port", str(port),
              "--threads", str(threads), *_model_args(model)],
        host=host,
        port=port,
        ready_path="/v1/models",
        timeout=BACKEND_START_TIMEOUT,
        essential=False,
        gateway_entry={"name": name, "url": f"http://{host}:{port}/v1", "kind": "llamacpp", "max_concurrency": 1},
    )


def llama_server(name: str, *, host: str, port: int, threads: int, parallel: int = DEFAULT_PARALLEL,
                 model: Path | None = None) -> Service:
    """llama.cpp's own server: `parallel` slots; the gateway reads its capacity from /props."""
    return Service(
        name=name,
        argv=[sys.executable, "-m", "backends.llamacpp.llama_server", "--host", host, "--port", str(port),
              "--threads", str(threads), "--parallel", str(parallel), *_model_args(model)],
        host=host,
        port=port,
        ready_path="/health",  # 503 while it loads the model, 200 once it serves
        timeout=BACKEND_START_TIMEOUT,
        essential=False,
        gateway_entry={"name": name, "url": f"http://{host}:{port}/v1", "kind": "llama-server"},
    )


def gateway(*, host: str, port: int, backends: list[Service]) -> Service:
    """The gateway in front of llama.cpp backends."""
    config = [b.gateway_entry for b in backends if b.gateway_entry is not None]
    return Service(
        name="gateway",
        argv=[sys.executable, "-m", "gateway"],
        host=host,
        port=port,
        ready_path="/readyz",
        timeout=SERVICE_START_TIMEOUT,
        env={"GATEWAY_BACKENDS": json.dumps(config), "GATEWAY_HOST": host, "GATEWAY_PORT": str(port)},
        # On SIGTERM it lets requests in flight finish for its grace, then ends the rest (with an error event
        # for a stream): SIGKILL must come only after that, or clients would see streams cut bare.
        stop_grace=gateway_shutdown_grace() + GATEWAY_STOP_MARGIN,
    )


# Past the grace the gateway gives its last answers up to 1 s, then closes its connections and exits.
GATEWAY_STOP_MARGIN = 5.0


def gateway_shutdown_grace() -> float:
    """GATEWAY_SHUTDOWN_GRACE as the gateway will read it from this environment (its default when unset)."""
    from gateway.settings import GatewaySettings  # only here: pydantic is not needed by the rest of the stack

    default = GatewaySettings.model_fields["shutdown_grace"].default
    try:
        return max(float(os.environ.get("GATEWAY_SHUTDOWN_GRACE", default)), 0.0)
    except ValueError:
        return float(default)  # the gateway refuses to start with it, and says why


def chat_app(*, host: str, port: int, gateway_service: Service) -> Service:
    return Service(
        name="chat",
        argv=[sys.executable, "-m", "chat_client"],
        host=host,
        port=port,
        ready_path="/healthz",
        timeout=SERVICE_START_TIMEOUT,
        env={
            "OPENAI_HOST": "local",
            "OPENAI_BASE_URL": f"{gateway_service.base_url}/v1",
            "OPENAI_MODEL": MODEL,
            "CHAT_DEV_MODE": "true",
            "CHAT_HOST": host,
            "CHAT_PORT": str(port),
        },
    )
