"""Configuration, read once from the environment.

`load_settings()` is the only place that reads environment variables; everything else receives a
`ChatSettings`. A bad value becomes `ConfigError`, whose message is one paragraph that names the variable,
so `python -m chat_client` can print it and exit non-zero instead of showing a traceback.
"""

from __future__ import annotations

import base64
import binascii
import logging
import secrets
from typing import Any, Literal
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from chat_client.context import estimate_tokens

log = logging.getLogger(__name__)

OpenAIHost = Literal["local", "azure", "azure_custom", "openai"]
# Which OpenAI API writes the replies: chat completions, or the Responses API (`client.responses.stream`).
ModelAPI = Literal["chat", "responses"]

LOCAL_BASE_URL = "http://127.0.0.1:8080/v1"
SQLITE_DEFAULT_URL = "sqlite+aiosqlite:///chat.sqlite3"
# A key whose 32 bytes use fewer distinct values than this is a pattern, not a random key (a random key has
# about 28); it catches "aaaa…", "0123…0123…" and keys typed by hand.
MIN_DISTINCT_KEY_BYTES = 16


class ConfigError(Exception):
    """Invalid configuration; the message is meant for a person, not a traceback."""


class ChatSettings(BaseSettings):
    """Every setting of the chat app. Field docs are the env var table of the README."""

    model_config = SettingsConfigDict(
        case_sensitive=False, extra="ignore", populate_by_name=True, frozen=True, env_file=None
    )

    host: str = Field("127.0.0.1", validation_alias="CHAT_HOST")
    port: int = Field(8000, ge=0, le=65535, validation_alias="CHAT_PORT")
    session_key: SecretStr | None = Field(None, validation_alias="CHAT_SESSION_KEY")
    dev_mode: bool = Field(False, validation_alias="CHAT_DEV_MODE")
    session_days: int = Field(30, ge=1, le=400, validation_alias="CHAT_SESSION_DAYS")
    system_prompt: str = Field(
        "You are a helpful assistant. Answer clearly and briefly.", validation_alias="CHAT_SYSTEM_PROMPT"
    )
    # The local llama.cpp backends have a 2048-token context: 512 for the reply, the rest for the system
    # prompt and history, minus a margin because the token count is an estimate.
    context_tokens: int = Field(1400, ge=64, validation_alias="CHAT_CONTEXT_TOKENS")
    max_reply_tokens: int = Field(512, ge=1, validation_alias="CHAT_MAX_REPLY_TOKENS")
    max_message_chars: int = Field(4000, ge=1, validation_alias="CHAT_MAX_MESSAGE_CHARS")
    max_chats_per_session: int = Field(100, ge=1, validation_alias="CHAT_MAX_CHATS_PER_SESSION")
    request_timeout: float = Field(60.0, gt=0, validation_alias="CHAT_REQUEST_TIMEOUT")
    model_api: ModelAPI = Field("chat", validation_alias="CHAT_MODEL_API")
    # Cost limits, per minute: each send is a model call, each chat a row. Counted per browser session and
    # per client address (a new cookie does not reset the address's count).
    sends_per_minute: int = Field(20, ge=1, validation_alias="CHAT_SENDS_PER_MINUTE")
    sends_per_minute_per_address: int = Field(60, ge=1, validation_alias="CHAT_SENDS_PER_MINUTE_PER_ADDRESS")
    chats_per_minute: int = Field(10, ge=1, validation_alias="CHAT_CHATS_PER_MINUTE")
    chats_per_minute_per_address: int = Field(30, ge=1, validation_alias="CHAT_CHATS_PER_MINUTE_PER_ADDRESS")
    # How many reverse proxies in front of the app append to X-Forwarded-For (Azure Container Apps' ingress:
    # 1). 0: forwarded headers are ignored, the client address is the socket's and X-Forwarded-Host is not
    # trusted by the cross-site check.
    trusted_proxy_hops: int = Field(0, ge=0, le=10, validation_alias="CHAT_TRUSTED_PROXY_HOPS")

    database_url: str | None = Field(None, validation_alias="DATABASE_URL")
    # true: the PostgreSQL password is an Entra ID token of the app's identity (entra_password.py).
    database_azure_auth: bool = Field(False, validation_alias="DATABASE_AZURE_AUTH")

    openai_host: OpenAIHost = Field("local", validation_alias="OPENAI_HOST")
    openai_base_url: str | None = Field(None, validation_alias="OPENAI_BASE_URL")
    openai_api_key: SecretStr | None = Field(None, validation_alias="OPENAI_API_KEY")
    openai_model: str = Field("smollm2-135m-instruct", min_length=1, validation_alias="OPENAI_MODEL")
    azure_openai_endpoint: str | None = Field(None, validation_alias="AZURE_OPENAI_ENDPOINT")
    azure_openai_custom_url: str | None = Field(None, validation_alias="AZURE_OPENAI_CUSTOM_URL")
    azure_openai_api_key: SecretStr | None = Field(None, validation_alias="AZURE_OPENAI_API_KEY")
    azure_openai_api_version: str = Field("2024-10-21", validation_alias="AZURE_OPENAI_API_VERSION")
    azure_openai_chat_deployment: str | None = Field(None, validation_alias="AZURE_OPENAI_CHAT_DEPLOYMENT")
    azure_client_id: str | None = Field(None, validation_alias="AZURE_CLIENT_ID")

    @field_validator(
        "database_url",
        "openai_base_url",
        "azure_openai_endpoint",
        "azure_openai_custom_url",
        "azure_openai_chat_deployment",
        "azure_client_id",
        "session_key",
        "openai_api_key",
        "azure_openai_api_key",
        mode="before",
    )
    @classmethod
    def _empty_is_unset(cls, value: object) -> object:
        # `FOO=` in a compose file or an azd output means "not set", not "the empty string".
        if isinstance(value, str) and not value.strip():
            return None
        return value

    @field_validator("system_prompt")
    @classmethod
    def _prompt_stripped(cls, value: str) -> str:
        return value.strip()

    @field_validator("database_url")
    @classmethod
    def _normalize_database_url(cls, value: str | None) -> str | None:
        return None if value is None else normalize_database_url(value)

    @field_validator("session_key")
    @classmethod
    def _strong_key(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None:
            check_session_key(value.get_secret_value())
        return value

    @model_validator(mode="after")
    def _consistent(self) -> ChatSettings:
        if self.session_key is None and not self.dev_mode:
            raise ValueError(
                "CHAT_SESSION_KEY is required outside dev mode: it signs and encrypts the session "
                "cookie. Generate one with `python -m chat_client genkey` (or set CHAT_DEV_MODE=true "
                "to use a throwaway one)"
            )
        if self.openai_host == "azure":
            _require(self, "azure_openai_endpoint", "AZURE_OPENAI_ENDPOINT", "OPENAI_HOST=azure")
            _require(
                self, "azure_openai_chat_deployment", "AZURE_OPENAI_CHAT_DEPLOYMENT", "OPENAI_HOST=azure"
            )
        elif self.openai_host == "azure_custom":
            _require(self, "azure_openai_custom_url", "AZURE_OPENAI_CUSTOM_URL", "OPENAI_HOST=azure_custom")
            _require(
                self,
                "azure_openai_chat_deployment",
                "AZURE_OPENAI_CHAT_DEPLOYMENT",
                "OPENAI_HOST=azure_custom",
            )
        elif self.openai_host == "openai":
            _require(self, "openai_api_key", "OPENAI_API_KEY", "OPENAI_HOST=openai")
        prompt_tokens = estimate_tokens(self.system_prompt)
        if prompt_tokens > self.context_tokens // 2:
            raise ValueError(
                f"CHAT_SYSTEM_PROMPT takes about {prompt_tokens} tokens, more than half of "
                f"CHAT_CONTEXT_TOKENS ({self.context_tokens}); shorten it or raise the budget"
            )
        return self

    # Derived values: the rest of the app reads these, not the raw fields.

    @property
    def resolved_database_url(self) -> str:
        return self.database_url or SQLITE_DEFAULT_URL

    @property
    def resolved_base_url(self) -> str | None:
        """Base URL for OPENAI_HOST=local|openai (None: the SDK's default, api.openai.com)."""
        if self.openai_base_url:
            return self.openai_base_url
        return LOCAL_BASE_URL if self.openai_host == "local" else None

    @property
    def azure_endpoint(self) -> str | None:
        """The `azure_endpoint` of the Azure hosts; the SDK appends /openai/deployments/{deployment}/….

        AZURE_OPENAI_CUSTOM_URL is the custom endpoint's root, as in Azure's chat app samples (for the
        gateway: http://127.0.0.1:8080); a trailing /openai is accepted too.
        """
        if self.openai_host == "azure":
            return self.azure_openai_endpoint
        if self.openai_host == "azure_custom" and self.azure_openai_custom_url:
            return self.azure_openai_custom_url.rstrip("/").removesuffix("/openai")
        return None

    @property
    def chat_model(self) -> str:
        """The `model` of each request: the Azure deployment name for the Azure hosts."""
        if self.openai_host in ("azure", "azure_custom"):
            assert self.azure_openai_chat_deployment is not None
            return self.azure_openai_chat_deployment
        return self.openai_model

    def session_key_bytes(self) -> bytes:
        """The Fernet key; in dev mode without CHAT_SESSION_KEY a fresh one (sessions end with the app)."""
        if self.session_key is not None:
            return self.session_key.get_secret_value().encode("ascii")
        log.warning(
            "CHAT_DEV_MODE: CHAT_SESSION_KEY is not set, using a random key: sessions end with the app. "
            "Set CHAT_SESSION_KEY (python -m chat_client genkey) outside development."
        )
        return base64.urlsafe_b64encode(secrets.token_bytes(32))


def _require(settings: ChatSettings, field: str, env: str, because: str) -> None:
    if getattr(settings, field) is None:
        raise ValueError(f"{env} is required with {because}")


def check_session_key(key: str) -> None:
    """A Fernet key: 32 random bytes in url-safe base64. Raise ValueError for anything weaker."""
    hint = "generate one with `python -m chat_client genkey`"
    try:
        raw = base64.urlsafe_b64decode(key.strip().encode("ascii"))
    except (binascii.Error, UnicodeEncodeError, ValueError):
        raise ValueError(f"CHAT_SESSION_KEY is not url-safe base64; {hint}") from None
    if len(raw) != 32:
        raise ValueError(f"CHAT_SESSION_KEY must encode exactly 32 bytes (it encodes {len(raw)}); {hint}")
    if len(set(raw)) < MIN_DISTINCT_KEY_BYTES:
        raise ValueError(f"CHAT_SESSION_KEY is weak (a pattern, not random bytes); {hint}")


def normalize_database_url(url: str) -> str:
    """Accept the URL forms people paste and return the async driver's form.

    postgres://, postgresql:// and postgresql+asyncpg:// become postgresql+asyncpg://; libpq's
    `sslmode=` (what Azure shows) becomes asyncpg's `ssl=`. sqlite:// becomes sqlite+aiosqlite://.
    """
    url = url.strip()
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme in ("postgres", "postgresql", "postgresql+asyncpg"):
        query = [
            ("ssl", v) if k == "sslmode" else (k, v)
            for k, v in parse_qsl(parts.query, keep_blank_values=True)
        ]
        return urlunsplit(("postgresql+asyncpg", parts.netloc, parts.path, urlencode(query), parts.fragment))
    if scheme in ("sqlite", "sqlite+aiosqlite"):
        return "sqlite+aiosqlite" + url[len(parts.scheme) :]
    raise ValueError(
        f"DATABASE_URL must be a PostgreSQL URL (postgresql://user:password@host:5432/db) or a SQLite URL "
        f"(sqlite:///path/to/file.sqlite3), not {scheme or 'a URL without a scheme'}://…"
    )


# Field name -> environment variable, for error messages.
ENV_NAMES = {name: str(field.validation_alias) for name, field in ChatSettings.model_fields.items()}


def load_settings(**overrides: Any) -> ChatSettings:
    """Read the environment once. Raise ConfigError with a one-paragraph, person-readable message."""
    try:
        return ChatSettings(**overrides)
    except ValidationError as exc:
        raise ConfigError(describe_validation_error(exc)) from None


def describe_validation_error(exc: ValidationError) -> str:
    problems = []
    for error in exc.errors(include_url=False):
        location = error.get("loc") or ()
        names = [ENV_NAMES.get(str(part), str(part)) for part in location]
        message = error["msg"].removeprefix("Value error, ")
        if names:
            value = error.get("input")
            shown = "" if any(secret in names[0] for secret in ("KEY", "URL")) else f" (got {value!r})"
            problems.append(f"{names[0]}: {message}{shown}")
        else:
            problems.append(message)
    return "Invalid configuration: " + "; ".join(problems) + "."
