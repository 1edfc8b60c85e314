"""What the load is sent to: a fake upstream directly (the limit), our gateway, and the installed peers.

Each target in front of the fakes is a server this module knows how to start over two upstream URLs. The peers
live in their own virtual environments under .venv/peers/, so their dependency pins never touch ours; a peer
that is not installed is skipped with the reason.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from bench.processes import HOST, Server, free_port

REPO = Path(__file__).resolve().parents[1]
PEERS = REPO / ".venv" / "peers"
CHAT_PATH = "/v1/chat/completions"
MODEL = "fake-model"


@dataclass(frozen=True)
class Target:
    name: str  # what --only takes and the tables show
    description: str
    version: str | None = None
    unavailable: str | None = None  # why it is skipped, when it is

    def server(self, upstreams: Sequence[str], port: int, workdir: Path) -> Server | None:
        """The process to start in front of `upstreams` (base URLs without /v1); None when there is none."""
        return None


@dataclass(frozen=True)
class Direct(Target):
    pass


@dataclass(frozen=True)
class Gateway(Target):
    workers: int = 1
    log_level: str = "info"  # as shipped: one JSON line per request
    upstream_client: str | None = None  # GATEWAY_UPSTREAM_CLIENT; None: the gateway's default
    shared_state: bool = False  # its own redis-server, and GATEWAY_STATE_URL set to it (bench/redis_gateway.py)
    max_concurrency: int | None = None  # on both backends: every request then takes a lease

    def server(self, upstreams: Sequence[str], port: int, workdir: Path) -> Server:
        backends = [{"name": f"up{i}", "url": f"{url}/v1"} for i, url in enumerate(upstreams)]
        if self.max_concurrency is not None:
            backends = [{**backend, "max_concurrency": self.max_concurrency} for backend in backends]
        return Server(
            name=self.name,
            argv=[sys.executable, "-m", "bench.redis_gateway" if self.shared_state else "gateway"],
            port=port,
            ready_path="/readyz",
            log_path=workdir / f"{self.name}.log",
            env={
                "GATEWAY_HOST": HOST,
                "GATEWAY_PORT": str(port),
                "GATEWAY_BACKENDS": json.dumps(backends),
                "GATEWAY_WORKERS": str(self.workers),
                # As shipped, one JSON log line per request is part of the product's cost.
                "GATEWAY_LOG_LEVEL": self.log_level,
            } | ({"GATEWAY_UPSTREAM_CLIENT": self.upstream_client} if self.upstream_client else {}),
            # Only what the bench sets: a GATEWAY_CONFIG_FILE or keys in the caller's environment stay out.
            private_prefix="GATEWAY_",
            cwd=REPO,
            start_timeout=60,
        )


@dataclass(frozen=True)
class AiohttpFloor(Target):
    def server(self, upstreams: Sequence[str], port: int, workdir: Path) -> Server:
        return Server(
            name=self.name,
            argv=[sys.executable, "-m", "bench.floor", "--host", HOST, "--port", str(port), *upstreams],
            port=port,
            ready_path="/ready",
            log_path=workdir / f"{self.name}.log",
            cwd=REPO,
        )


@dataclass(frozen=True)
class SglangRouter(Target):
    python: Path = PEERS / "sglang" / "bin" / "python"
    log_level: str = "info"  # its default: two lines per request

    def server(self, upstreams: Sequence[str], port: int, workdir: Path) -> Server:
        return Server(
            name=self.name,
            argv=[
                str(self.python), "-m", "sglang_router.launch_router",
                "--worker-urls", *upstreams,
                "--host", HOST, "--port", str(port),
                # Round robin like the gateway; its default (cache_aware) matches prompt prefixes per request.
                "--policy", "round_robin",
                "--log-level", self.log_level,
                # Its metrics exporter listens on a fixed port by default, which may be taken.
                "--prometheus-host", HOST, "--prometheus-port", str(free_port()),
            ],
            port=port,
            ready_path="/readiness",  # 200 once its workers answered their health checks
            log_path=workdir / f"{self.name}.log",
            start_timeout=60,
        )


@dataclass(frozen=True)
class LiteLLM(Target):
    executable: Path = PEERS / "litellm" / "bin" / "litellm"
    master_key: str = ""

    def server(self, upstreams: Sequence[str], port: int, workdir: Path) -> Server:
        config = workdir / f"{self.name}-{port}.yaml"
        config.write_text(litellm_config(upstreams))
        return Server(
            name=self.name,
            argv=[str(self.executable), "--config", str(config), "--host", HOST, "--port", str(port)],
            port=port,
            ready_path="/health/liveliness",
            log_path=workdir / f"{self.name}.log",
            env={
                # It refuses to start without a master key; the bench sends it to every target alike.
                "LITELLM_MASTER_KEY": self.master_key,
                "LITELLM_LOG": "ERROR",
                # Offline: use the model cost map in the package instead of fetching it.
                "LITELLM_LOCAL_MODEL_COST_MAP": "True",
                "LITELLM_TELEMETRY": "False",
            },
            cwd=workdir,
            start_timeout=180,  # it imports a great deal; tens of seconds on two busy cores
        )


def litellm_config(upstreams: Sequence[str]) -> str:
    """Two deployments of one model group, retried like the gateway (3 attempts)."""
    deployments = "".join(
        f"  - model_name: {MODEL}\n"
        f"    litellm_params:\n"
        f"      model: openai/{MODEL}\n"
        f"      api_base: {url}/v1\n"
        f"      api_key: fake\n"
        for url in upstreams
    )
    return (
        f"model_list:\n{deployments}"
        "litellm_settings:\n  telemetry: false\n"
        "router_settings:\n  routing_strategy: simple-shuffle\n  num_retries: 2\n"
    )


def _package_version(python: Path, package: str) -> tuple[str | None, str | None]:
    """(version, None) when `package` imports in that interpreter's environment, else (None, why not)."""
    if not python.exists():
        return None, f"not installed ({python} is missing)"
    probe = f"import importlib.metadata as m; print(m.version({package!r}))"
    try:
        done = subprocess.run([str(python), "-c", probe], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return None, f"cannot run {python}: {exc}"
    if done.returncode != 0:
        return None, f"{package} is not installed in {python.parent.parent}"
    return done.stdout.strip(), None


def git_revision() -> str:
    try:
        done = subprocess.run(["git", "describe", "--always", "--dirty"], cwd=REPO, capture_output=True,
                              text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    return done.stdout.strip() or "unknown"


# Shared routing state (issue 15): each "-redis" target against the same configuration without it.
SHARED_STATE = ("gateway-redis", "gateway-capped", "gateway-redis-capped", "gateway-3w", "gateway-redis-3w")
ALL = (
    "direct", "gateway", "gateway-http1", "gateway-aiohttp", "gateway-mw", "gateway-quiet", "sglang", "sglang-quiet",
    "litellm", "aiohttp-floor", *SHARED_STATE,
)
# The floor is a yardstick, the two upstream clients a comparison and the shared-state targets a question of
# their own: run when asked for (--only ...).
DEFAULT = tuple(
    name for name in ALL if name not in ("gateway-http1", "gateway-aiohttp", "aiohttp-floor", *SHARED_STATE)
)
SHARED_STATE_PAIRS = {"gateway-redis": "gateway", "gateway-redis-capped": "gateway-capped",
                      "gateway-redis-3w": "gateway-3w"}
CAPPED = 64  # max_concurrency of the -capped targets: above any concurrency the bench runs at c=32
# Each gateway against the peer configured alike: as shipped, both write a log line per request (the gateway
# one, sglang-router two); quiet, neither does.
PEER_OF = {"gateway": "sglang", "gateway-mw": "sglang", "gateway-quiet": "sglang-quiet"}


def make_targets(names: Sequence[str], *, workers: int, master_key: str) -> list[Target]:
    """The targets asked for, in a fixed order; peers not installed come back with `unavailable` set."""
    targets: list[Target] = []
    for name in ALL:
        if name not in names:
            continue
        if name == "direct":
            targets.append(Direct(name, "one fake upstream, no proxy (the limit)"))
        elif name == "gateway":
            targets.append(Gateway(name, "this gateway as shipped: 1 process, log level info (a line per "
                                   "request)", version=git_revision(), workers=1))
        elif name in ("gateway-http1", "gateway-aiohttp"):
            # The same gateway as shipped over each upstream client (GATEWAY_UPSTREAM_CLIENT), side by side.
            client = name.removeprefix("gateway-")
            targets.append(Gateway(name, f"this gateway as shipped, GATEWAY_UPSTREAM_CLIENT={client}",
                                   version=git_revision(), workers=1, upstream_client=client))
        elif name == "gateway-quiet":
            targets.append(Gateway(name, "this gateway, 1 process, log level warning (no line per request)",
                                   version=git_revision(), workers=1, log_level="warning"))
        elif name == "gateway-mw":
            # GATEWAY_WORKERS processes sharing the port (SO_REUSEPORT); sglang-router uses several threads.
            targets.append(Gateway(name, f"this gateway, GATEWAY_WORKERS={workers} (one port, SO_REUSEPORT), "
                                   "log level info", version=git_revision(), workers=workers))
        elif name in SHARED_STATE:
            redis = "-redis" in name
            workers_here = 3 if name.endswith("-3w") else 1
            capped = CAPPED if name.endswith("-capped") else None
            description = (
                f"this gateway, {workers_here} process{'es' if workers_here > 1 else ''}, log level info, "
                + ("routing state shared in a local redis-server" if redis else "routing state per process")
                + (f", max_concurrency {capped} on both backends (a lease per request)" if capped else "")
            )
            targets.append(Gateway(name, description, version=git_revision(), workers=workers_here,
                                   shared_state=redis, max_concurrency=capped))
        elif name == "aiohttp-floor":
            targets.append(AiohttpFloor(name, "aiohttp server + the gateway's HTTP/1.1 pool, round robin, nothing "
                                        "else (bench/floor.py): what any aiohttp proxy pays"))
        elif name in ("sglang", "sglang-quiet"):
            python = PEERS / "sglang" / "bin" / "python"
            version, why = _package_version(python, "sglang-router")
            if name == "sglang":
                level, description = "info", "as shipped: round_robin, log level info (two lines per request)"
            else:
                level, description = "warn", "round_robin, log level warn (no line per request)"
            targets.append(SglangRouter(name, f"sglang-router (Rust) {description}", version=version,
                                        unavailable=why, python=python, log_level=level))
        elif name == "litellm":
            executable = PEERS / "litellm" / "bin" / "litellm"
            version, why = _package_version(executable.parent / "python", "litellm")
            targets.append(LiteLLM(name, "LiteLLM proxy, 1 worker, simple-shuffle, num_retries 2, "
                                   "LITELLM_LOG=ERROR", version=version, unavailable=why,
                                   executable=executable, master_key=master_key))
    return targets
