"""Gateway settings, read once at start-up from the environment (prefix ``GATEWAY_``) and an optional file.

Precedence, highest first: explicit keyword arguments (tests), environment variables, the config file named by
``GATEWAY_CONFIG_FILE`` (JSON or TOML, same field names without the prefix), defaults.
"""

from __future__ import annotations

import json
import os
import tomllib
from enum import StrEnum
from functools import cached_property
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)


class BackendKind(StrEnum):
    OPENAI = "openai"
    LLAMACPP = "llamacpp"
    # llama.cpp's own server: capacity (/props total_slots), readiness (/health) and load (/metrics) are read
    # from it, and its answers say how much of each prompt its cache held (gateway/llama_server.py).
    LLAMA_SERVER = "llama-server"
    AZURE = "azure"

    @property
    def is_llama_cpp(self) -> bool:
        """Either llama.cpp server: health-checked, and worth conversation affinity (its KV cache)."""
        return self in (BackendKind.LLAMACPP, BackendKind.LLAMA_SERVER)


class Api(StrEnum):
    """The model APIs a backend may serve (``apis``; defaults per kind in ``gateway.apis``)."""

    CHAT = "chat"
    RESPONSES = "responses"
    EMBEDDINGS = "embeddings"
    COMPLETIONS = "completions"


DEFAULT_APIS: dict[BackendKind, tuple[Api, ...]] = {
    BackendKind.OPENAI: (Api.CHAT, Api.RESPONSES, Api.EMBEDDINGS, Api.COMPLETIONS),
    BackendKind.AZURE: (Api.CHAT, Api.RESPONSES, Api.EMBEDDINGS, Api.COMPLETIONS),
    BackendKind.LLAMA_SERVER: (Api.CHAT, Api.EMBEDDINGS, Api.COMPLETIONS),
    BackendKind.LLAMACPP: (Api.CHAT, Api.COMPLETIONS),
}


class RoutingStrategy(StrEnum):
    # Round robin for backends of unknown capacity, least-outstanding for those with a max_concurrency:
    # a CPU llama.cpp server serves one request at a time, so piling onto a busy one while another idles
    # doubles latency for nothing.
    AUTO = "auto"
    ROUND_ROBIN = "round_robin"
    LEAST_OUTSTANDING = "least_outstanding"


class BackendConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.:-]+$")
    url: str
    kind: BackendKind = BackendKind.OPENAI
    api_key: str | None = Field(default=None, repr=False)
    deployment: str | None = None
    api_version: str | None = None
    priority: int = 0
    weight: int = Field(default=1, ge=1, le=1000)
    max_concurrency: int | None = Field(default=None, ge=1)
    models: tuple[str, ...] | None = None
    apis: tuple[Api, ...] | None = None  # None: the kind's defaults (DEFAULT_APIS)

    @field_validator("url")
    @classmethod
    def _url_is_http(cls, url: str) -> str:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ValueError(f"must be an http(s) URL, got {without_userinfo(url)!r}")
        return url.rstrip("/")

    @model_validator(mode="after")
    def _azure_needs_deployment(self) -> BackendConfig:
        if self.kind is BackendKind.AZURE and not self.deployment:
            raise ValueError(f"backend {self.name!r}: kind 'azure' needs a 'deployment'")
        return self

    @cached_property
    def host(self) -> str:
        """Host and port, for logs: never the URL's ``user:password@``."""
        return _host_port(urlsplit(self.url).netloc)

    @property
    def chat_completions_url(self) -> str:
        if self.kind is BackendKind.AZURE:
            return (
                f"{self.url}/openai/deployments/{self.deployment}/chat/completions"
                f"?api-version={self.api_version or AZURE_DEFAULT_API_VERSION}"
            )
        return f"{self.url}/chat/completions"

    def serves(self, model: str | None) -> bool:
        return model is None or self.models is None or model in self.models

    @cached_property
    def served_apis(self) -> frozenset[Api]:
        """``apis``, or the kind's defaults (``DEFAULT_APIS``; gateway/apis.py says why they are so)."""
        return frozenset(self.apis if self.apis is not None else DEFAULT_APIS[self.kind])


AZURE_DEFAULT_API_VERSION = "2024-10-21"
# Application Insights' own variable, not ours: when set, the gateway exports telemetry there
# (gateway/telemetry.py; the azure-monitor-opentelemetry distro reads it too).
APPINSIGHTS_CONNECTION_STRING = "APPLICATIONINSIGHTS_CONNECTION_STRING"


def _host_port(netloc: str) -> str:
    return netloc.rpartition("@")[2]


def without_userinfo(url: str) -> str:
    """``http://user:secret@h:1/v1`` → ``http://h:1/v1``: what may be shown of a URL (logs, errors, /readyz)."""
    parts = urlsplit(url)
    if "@" not in parts.netloc:
        return url
    return parts._replace(netloc=_host_port(parts.netloc)).geturl()


def _backends_from_text(raw: str) -> list[Any]:
    """Accept a JSON array of backend objects, or a plain comma-separated list of URLs."""
    raw = raw.strip()
    if not raw:
        return []
    if raw.startswith("["):
        parsed: list[Any] = json.loads(raw)  # a JSONDecodeError becomes a validation error naming the field
        return parsed
    backends = []
    for url in filter(None, (part.strip() for part in raw.split(","))):
        host = _host_port(urlsplit(url).netloc) or without_userinfo(url)
        backends.append({"name": host.replace("[", "").replace("]", ""), "url": url})
    return backends


class GatewaySettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="GATEWAY_", extra="forbid", frozen=True)

    host: str = "127.0.0.1"
    port: int = Field(default=8080, ge=0, le=65535)
    backends: Annotated[list[BackendConfig], NoDecode] = Field(min_length=1)
    api_keys: Annotated[tuple[str, ...], NoDecode] = Field(default=(), repr=False)
    # Inbound Entra ID access tokens, besides api_keys: on when a tenant (or an issuer and a JWKS URL) is set.
    entra_tenant_id: str | None = None
    entra_issuers: Annotated[tuple[str, ...], NoDecode] = ()  # default: the tenant's v1 and v2 issuers
    entra_audiences: Annotated[tuple[str, ...], NoDecode] = ()  # default: https://cognitiveservices.azure.com
    entra_jwks_url: str | None = None  # default: the tenant's keys at login.microsoftonline.com
    entra_allowed_clients: Annotated[tuple[str, ...], NoDecode] = ()  # appid / azp / oid; empty: any
    entra_leeway: float = Field(default=60.0, ge=0, le=600, description="clock skew allowed, seconds")
    entra_jwks_refresh: float = Field(default=300.0, ge=0, description="least seconds between JWKS refreshes")

    routing: RoutingStrategy = RoutingStrategy.AUTO
    # Conversation affinity: "auto" turns it on when any backend is llama.cpp (whose KV cache it exploits).
    affinity: Literal["auto", "on", "off"] = "auto"
    affinity_capacity: int = Field(default=10_000, ge=1, description="conversations remembered")
    max_attempts: int = Field(default=3, ge=1, le=20)
    cooldown_default: float = Field(default=10.0, gt=0, description="seconds, when a 429/503 names none")
    cooldown_max: float = Field(default=300.0, gt=0)
    eject_after_failures: int = Field(default=3, ge=1)
    eject_base: float = Field(default=5.0, gt=0)
    eject_max: float = Field(default=300.0, gt=0)
    queue_timeout: float = Field(default=30.0, ge=0, description="seconds to wait for a free slot")
    queue_max: int = Field(default=1000, ge=0)
    queue_aging: float = Field(
        default=5.0, ge=0, description="seconds after which a queued request outranks cached conversations"
    )

    connect_timeout: float = Field(default=5.0, gt=0)
    read_timeout: float = Field(default=300.0, gt=0, description="max silence between stream chunks")
    max_body_bytes: int = Field(default=4 * 1024 * 1024, ge=1024)
    # The upstream transport (gateway.transports): which client, how much of an answer is buffered, the pool.
    upstream_client: Literal["http1", "aiohttp"] = "http1"
    max_response_bytes: int = Field(
        default=32 * 1024 * 1024, ge=1024, description="a non-streamed answer larger than this is a 502"
    )
    upstream_idle_timeout: float = Field(
        default=4.0, gt=0, description="seconds a pooled connection may idle: below the backends' keep-alive"
    )
    # Each open stream holds a connection: the cap bounds file descriptors, not concurrency (1,000 streams are normal).
    upstream_max_connections: int = Field(default=1024, ge=1, description="open connections per backend")

    health_interval: float = Field(default=5.0, gt=0)
    health_timeout: float = Field(default=2.0, gt=0)

    # Shared routing state (README "Scaling out"): replicas and workers that name the same Redis act as one.
    state_url: str | None = Field(default=None, repr=False, description="redis:// or rediss://; unset: local")
    state_auth: Literal["url", "entra"] = "url"  # entra: a token of the managed identity as the password
    state_deadline: float = Field(default=0.05, gt=0, description="seconds before a request stops waiting for Redis")
    state_lease_ttl: float = Field(default=10.0, ge=0.5, description="seconds a dead replica's slots stay taken")
    state_affinity_ttl: float = Field(default=3600.0, gt=0, description="seconds a conversation stays pinned")

    expose_routing_headers: bool = True
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    workers: int = Field(default=1, ge=1, le=64)
    # On SIGTERM/SIGINT: how long requests in flight may take to finish before they are ended (gateway.drain).
    # Below 30 s, after which Azure Container Apps and Kubernetes send SIGKILL unless told otherwise.
    shutdown_grace: float = Field(default=25.0, ge=0, allow_inf_nan=False, description="seconds")

    @property
    def affinity_enabled(self) -> bool:
        if self.affinity == "auto":
            return any(backend.kind.is_llama_cpp for backend in self.backends)
        return self.affinity == "on"

    @field_validator("backends", mode="before")
    @classmethod
    def _parse_backends(cls, value: Any) -> Any:
        return _backends_from_text(value) if isinstance(value, str) else value

    @field_validator("backends")
    @classmethod
    def _names_are_unique(cls, backends: list[BackendConfig]) -> list[BackendConfig]:
        seen: set[str] = set()
        for backend in backends:
            if backend.name in seen:
                raise ValueError(f"backend name {backend.name!r} is used twice")
            seen.add(backend.name)
        return backends

    @field_validator("state_url")
    @classmethod
    def _state_url_is_redis(cls, url: str | None) -> str | None:
        if url is not None and (urlsplit(url).scheme not in ("redis", "rediss") or not urlsplit(url).hostname):
            raise ValueError("must be a redis:// or rediss:// URL with a host")
        return url or None

    @field_validator("api_keys", mode="before")
    @classmethod
    def _parse_api_keys(cls, value: Any) -> Any:
        if isinstance(value, str):
            return tuple(key.strip() for key in value.split(",") if key.strip())
        return value

    @field_validator("entra_issuers", "entra_audiences", "entra_allowed_clients", mode="before")
    @classmethod
    def _parse_entra_lists(cls, value: Any) -> Any:
        if isinstance(value, str):
            return tuple(item.strip() for item in value.split(",") if item.strip())
        return value

    @model_validator(mode="after")
    def _entra_is_complete(self) -> GatewaySettings:
        others = self.entra_issuers or self.entra_audiences or self.entra_allowed_clients or self.entra_jwks_url
        if not self.entra_tenant_id and others and not (self.entra_issuers and self.entra_jwks_url):
            raise ValueError("Entra ID tokens need GATEWAY_ENTRA_TENANT_ID, or both GATEWAY_ENTRA_ISSUERS "
                                 "and GATEWAY_ENTRA_JWKS_URL")
        return self

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings, env_settings, ConfigFileSource(settings_cls))


class ConfigFileSource(PydanticBaseSettingsSource):
    """Values from the JSON or TOML file named by GATEWAY_CONFIG_FILE, if any."""

    def get_field_value(self, field: Any, field_name: str) -> tuple[Any, str, bool]:  # pragma: no cover
        return None, field_name, False

    def __call__(self) -> dict[str, Any]:
        path = os.environ.get("GATEWAY_CONFIG_FILE")
        if not path:
            return {}
        return load_config_file(Path(path))


class ConfigError(Exception):
    """A configuration problem, worded for the person starting the gateway."""


def load_config_file(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"GATEWAY_CONFIG_FILE: cannot read {path}: {exc.strerror or exc}") from None
    try:
        data = tomllib.loads(text) if path.suffix == ".toml" else json.loads(text)
    except (tomllib.TOMLDecodeError, json.JSONDecodeError) as exc:
        raise ConfigError(f"GATEWAY_CONFIG_FILE: {path} is not valid {path.suffix[1:] or 'JSON'}: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"GATEWAY_CONFIG_FILE: {path} must hold an object of settings")
    return data


def load_settings(**overrides: Any) -> GatewaySettings:
    """Read the settings once; any problem becomes a ConfigError with a one-paragraph explanation."""
    try:
        return GatewaySettings(**overrides)
    except ValidationError as exc:
        raise ConfigError(describe_validation_error(exc)) from None
    except ValueError as exc:  # pydantic-settings raises plain ValueErrors for undecodable env values
        raise ConfigError(f"invalid gateway configuration: {exc}") from None


def _field_label(location: tuple[int | str, ...]) -> str:
    """('backends', 0, 'url') -> 'GATEWAY_BACKENDS[0].url': the name a person sets, then the path inside it."""
    if not location:
        return "settings"
    label = "GATEWAY_" + str(location[0]).upper()
    for part in location[1:]:
        label += f"[{part}]" if isinstance(part, int) else f".{part}"
    return label


def describe_validation_error(exc: ValidationError) -> str:
    problems = []
    for error in exc.errors():
        field = _field_label(error["loc"])
        if error["type"] == "missing" and error["loc"] == ("backends",):
            problems.append(
                "GATEWAY_BACKENDS is required: a JSON array such as "
                '[{"name": "a", "url": "http://127.0.0.1:8081/v1"}] or a comma-separated list of URLs'
            )
            continue
        problems.append(f"{field}: {error['msg']}")
    return "invalid gateway configuration: " + "; ".join(problems) + "."
