"""Configuration: read once from the environment; a bad value is one clear paragraph and a non-zero exit."""

from __future__ import annotations

import base64
import os
import subprocess
import sys

import pytest
from chat_client.settings import ConfigError, load_settings, normalize_database_url
from cryptography.fernet import Fernet

KEY = Fernet.generate_key().decode()


def test_defaults(monkeypatch):
    monkeypatch.setenv("CHAT_SESSION_KEY", KEY)
    settings = load_settings()
    assert (settings.host, settings.port) == ("127.0.0.1", 8000)
    assert settings.openai_host == "local"
    assert settings.resolved_base_url == "http://127.0.0.1:8080/v1"
    assert settings.chat_model == "smollm2-135m-instruct"
    assert settings.resolved_database_url == "sqlite+aiosqlite:///chat.sqlite3"
    # The history budget plus the reply fit the 2048-token context of the local llama backends.
    assert settings.context_tokens + settings.max_reply_tokens <= 2048
    assert settings.azure_openai_api_version == "2024-10-21"


def test_environment_is_read(monkeypatch):
    for name, value in {
        "CHAT_SESSION_KEY": KEY,
        "CHAT_HOST": "0.0.0.0",
        "CHAT_PORT": "9000",
        "CHAT_SYSTEM_PROMPT": "  Talk like a pirate.  ",
        "CHAT_CONTEXT_TOKENS": "900",
        "CHAT_MAX_REPLY_TOKENS": "100",
        "CHAT_MAX_MESSAGE_CHARS": "500",
        "CHAT_MAX_CHATS_PER_SESSION": "3",
        "CHAT_REQUEST_TIMEOUT": "2.5",
        "CHAT_SESSION_DAYS": "7",
        "OPENAI_HOST": "openai",
        "OPENAI_API_KEY": "sk-test",
        "OPENAI_MODEL": "gpt-4o-mini",
        "DATABASE_URL": "postgres://u:p@db:5432/chat?sslmode=require",
    }.items():
        monkeypatch.setenv(name, value)
    settings = load_settings()
    assert (settings.host, settings.port, settings.session_days) == ("0.0.0.0", 9000, 7)
    assert settings.system_prompt == "Talk like a pirate."
    assert (settings.context_tokens, settings.max_reply_tokens) == (900, 100)
    assert (settings.max_message_chars, settings.max_chats_per_session, settings.request_timeout) == (
        500,
        3,
        2.5,
    )
    assert settings.resolved_base_url is None  # the SDK's default: api.openai.com
    assert settings.chat_model == "gpt-4o-mini"
    assert settings.database_url == "postgresql+asyncpg://u:p@db:5432/chat?ssl=require"


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("postgresql://u:p@h:5432/d", "postgresql+asyncpg://u:p@h:5432/d"),
        ("postgres://u@h/d", "postgresql+asyncpg://u@h/d"),
        ("postgresql+asyncpg://u@h/d?ssl=require", "postgresql+asyncpg://u@h/d?ssl=require"),
        ("postgresql://u@h/d?sslmode=verify-full&application_name=chat", None),
        ("sqlite:///chat.sqlite3", "sqlite+aiosqlite:///chat.sqlite3"),
        ("sqlite+aiosqlite:////tmp/x.db", "sqlite+aiosqlite:////tmp/x.db"),
    ],
)
def test_database_url_forms(given, expected):
    result = normalize_database_url(given)
    if expected is None:
        assert result == "postgresql+asyncpg://u@h/d?ssl=verify-full&application_name=chat"
    else:
        assert result == expected


def test_unknown_database_scheme_is_refused(monkeypatch):
    monkeypatch.setenv("CHAT_SESSION_KEY", KEY)
    monkeypatch.setenv("DATABASE_URL", "mysql://root:hunter2@db/chat")
    with pytest.raises(ConfigError) as error:
        load_settings()
    assert "DATABASE_URL" in str(error.value) and "hunter2" not in str(error.value)


def test_session_key_is_required_outside_dev_mode():
    with pytest.raises(ConfigError, match="CHAT_SESSION_KEY is required outside dev mode"):
        load_settings()


def test_dev_mode_generates_a_key_and_warns(monkeypatch, caplog):
    monkeypatch.setenv("CHAT_DEV_MODE", "true")
    settings = load_settings()
    key = settings.session_key_bytes()
    Fernet(key)  # a valid key
    assert key != settings.session_key_bytes()  # fresh each time the app is created
    assert "CHAT_SESSION_KEY is not set" in caplog.text


@pytest.mark.parametrize(
    ("key", "problem"),
    [
        ("not base64 at all!!", "url-safe base64"),
        (base64.urlsafe_b64encode(b"short").decode(), "exactly 32 bytes"),
        (base64.urlsafe_b64encode(b"a" * 32).decode(), "weak"),
        (base64.urlsafe_b64encode(bytes(range(8)) * 4).decode(), "weak"),
    ],
)
def test_weak_or_malformed_session_keys_are_refused_even_in_dev_mode(monkeypatch, key, problem):
    monkeypatch.setenv("CHAT_SESSION_KEY", key)
    monkeypatch.setenv("CHAT_DEV_MODE", "1")
    with pytest.raises(ConfigError) as error:
        load_settings()
    assert "CHAT_SESSION_KEY" in str(error.value) and problem in str(error.value)
    assert key not in str(error.value)  # secrets are never echoed


@pytest.mark.parametrize(
    ("env", "missing"),
    [
        ({"OPENAI_HOST": "azure", "AZURE_OPENAI_CHAT_DEPLOYMENT": "gpt"}, "AZURE_OPENAI_ENDPOINT"),
        (
            {"OPENAI_HOST": "azure", "AZURE_OPENAI_ENDPOINT": "https://x.openai.azure.com"},
            "AZURE_OPENAI_CHAT_DEPLOYMENT",
        ),
        ({"OPENAI_HOST": "azure_custom", "AZURE_OPENAI_CHAT_DEPLOYMENT": "gpt"}, "AZURE_OPENAI_CUSTOM_URL"),
        ({"OPENAI_HOST": "openai"}, "OPENAI_API_KEY"),
    ],
)
def test_each_host_names_what_it_is_missing(monkeypatch, env, missing):
    monkeypatch.setenv("CHAT_SESSION_KEY", KEY)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(ConfigError, match=f"{missing} is required with OPENAI_HOST="):
        load_settings()


def test_bad_values_name_the_variable(monkeypatch):
    monkeypatch.setenv("CHAT_SESSION_KEY", KEY)
    monkeypatch.setenv("CHAT_PORT", "eighty")
    monkeypatch.setenv("OPENAI_HOST", "ollama")
    with pytest.raises(ConfigError) as error:
        load_settings()
    message = str(error.value)
    assert message.startswith("Invalid configuration: ")
    assert "CHAT_PORT" in message and "'eighty'" in message and "OPENAI_HOST" in message
    assert "\n" not in message


def test_model_api_limits_and_proxy_hops_are_read_and_checked(monkeypatch):
    monkeypatch.setenv("CHAT_SESSION_KEY", KEY)
    defaults = load_settings()
    assert (defaults.model_api, defaults.trusted_proxy_hops) == ("chat", 0)
    assert (defaults.sends_per_minute, defaults.sends_per_minute_per_address) == (20, 60)
    assert (defaults.chats_per_minute, defaults.chats_per_minute_per_address) == (10, 30)
    monkeypatch.setenv("CHAT_MODEL_API", "responses")
    monkeypatch.setenv("CHAT_TRUSTED_PROXY_HOPS", "1")
    monkeypatch.setenv("CHAT_SENDS_PER_MINUTE", "5")
    settings = load_settings()
    assert (settings.model_api, settings.trusted_proxy_hops, settings.sends_per_minute) == ("responses", 1, 5)
    monkeypatch.setenv("CHAT_MODEL_API", "assistants")
    monkeypatch.setenv("CHAT_SENDS_PER_MINUTE", "0")
    with pytest.raises(ConfigError) as error:
        load_settings()
    assert "CHAT_MODEL_API" in str(error.value) and "CHAT_SENDS_PER_MINUTE" in str(error.value)


def test_a_system_prompt_that_eats_the_budget_is_refused(monkeypatch):
    monkeypatch.setenv("CHAT_SESSION_KEY", KEY)
    monkeypatch.setenv("CHAT_CONTEXT_TOKENS", "100")
    monkeypatch.setenv("CHAT_SYSTEM_PROMPT", "word " * 100)
    with pytest.raises(ConfigError, match="CHAT_SYSTEM_PROMPT takes about"):
        load_settings()


def test_empty_values_count_as_unset(monkeypatch):
    monkeypatch.setenv("CHAT_SESSION_KEY", KEY)
    monkeypatch.setenv("DATABASE_URL", "")
    monkeypatch.setenv("OPENAI_BASE_URL", " ")
    settings = load_settings()
    assert settings.database_url is None and settings.resolved_base_url == "http://127.0.0.1:8080/v1"


def _run_cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    clean = {
        k: v for k, v in os.environ.items() if not k.startswith(("CHAT_", "OPENAI_", "AZURE_", "DATABASE_"))
    }
    return subprocess.run(
        [sys.executable, "-m", "chat_client", *args],
        env={**clean, **env},
        check=False,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_cli_bad_config_is_one_paragraph_and_exit_2():
    result = _run_cli(env={"CHAT_PORT": "nope"})
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("chat-client: Invalid configuration:")
    assert "CHAT_PORT" in lines[0] and "'nope'" in lines[0]


def test_cli_unreachable_database_is_one_line_and_exit_1():
    result = _run_cli(
        "migrate",
        env={"CHAT_SESSION_KEY": KEY, "DATABASE_URL": "postgresql://nobody:secret@127.0.0.1:9/none"},
    )
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert "could not start" in result.stderr and "DATABASE_URL" in result.stderr
    assert "secret" not in result.stderr


def test_cli_genkey_prints_a_usable_key():
    result = _run_cli("genkey", env={})
    assert result.returncode == 0
    key = result.stdout.strip()
    Fernet(key.encode())
    assert load_settings(session_key=key).session_key is not None
