"""docker-compose.yml: valid for the Compose Specification, wired consistently, and configuring each app with
exactly what it reads, checked by building the apps' real settings from the file."""

from __future__ import annotations

import base64
import importlib.resources
import json
import os
import re
import secrets
import shlex
from typing import Any
from urllib.parse import urlsplit

import jsonschema
import pytest

from tests.deploy import dockerfiles, llama_server_cli
from tests.deploy.apps import App
from tests.deploy.compose import (
    COMPOSE_FILE,
    ENV_EXAMPLE,
    InterpolationError,
    interpolate,
    load_compose,
    read_env_file,
    variables_used,
)
from tests.deploy.llama_server_cli import ServerCommand

SECRETS = ("POSTGRES_PASSWORD", "CHAT_SESSION_KEY", "LLM_GATEWAY_API_KEY")
APP_SERVICES = {"gateway": "gateway", "chat": "chat", "llama-1": "llama", "llama-2": "llama"}


def filled_env(**overrides: str) -> dict[str, str]:
    """.env.example with its secrets filled in the way its comments say to generate them."""
    env = read_env_file()
    env["POSTGRES_PASSWORD"] = secrets.token_hex(24)
    env["CHAT_SESSION_KEY"] = base64.urlsafe_b64encode(os.urandom(32)).decode()
    env["LLM_GATEWAY_API_KEY"] = secrets.token_urlsafe(32)
    env.update(overrides)
    return env


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return interpolate(load_compose(), filled_env())


def service_env(service: dict[str, Any]) -> dict[str, str]:
    environment = service.get("environment") or {}
    if isinstance(environment, list):
        environment = dict(item.split("=", 1) for item in environment)
    return {key: "" if value is None else str(value) for key, value in environment.items()}


def test_valid_against_the_compose_specification(compose: dict[str, Any]) -> None:
    # The schema Compose itself validates with, as vendored by check-jsonschema (never fetched).
    schema_file = importlib.resources.files("check_jsonschema.builtin_schemas.vendor") / "compose-spec.json"
    schema = json.loads(schema_file.read_text(encoding="utf-8"))
    validator = jsonschema.Draft202012Validator(schema, format_checker=jsonschema.FormatChecker())
    errors = sorted(validator.iter_errors(compose), key=lambda e: list(e.path))
    assert not errors, "\n".join(f"{'/'.join(map(str, e.path))}: {e.message}" for e in errors)


def test_the_expected_services(compose: dict[str, Any]) -> None:
    assert set(compose["services"]) == {"postgres", "redis", "llama-1", "llama-2", "gateway", "chat"}


def test_every_service_has_a_healthcheck(compose: dict[str, Any]) -> None:
    for name, service in compose["services"].items():
        check = service.get("healthcheck") or {}
        assert check.get("test") and not check.get("disable"), f"{name} has no healthcheck"


def test_healthchecks_probe_the_port_the_app_listens_on(
    compose: dict[str, Any], app_specs: dict[str, App]
) -> None:
    for name, service in compose["services"].items():
        if name not in APP_SERVICES:
            continue
        ports = {int(p) for p in re.findall(r"127\.0\.0\.1:(\d+)/", " ".join(service["healthcheck"]["test"]))}
        assert ports == {listening_port(name, service, app_specs)}, name


def listening_port(name: str, service: dict[str, Any], app_specs: dict[str, App]) -> int:
    if APP_SERVICES[name] == "llama":
        port = llama_args(service).port
        assert port is not None, f"{name}: no --port"
        return port
    prefix = {"gateway": "GATEWAY_", "chat": "CHAT_"}[name]
    return int(service_env(service).get(f"{prefix}PORT", app_specs[name].port))


def test_only_the_chat_app_and_gateway_are_published_and_on_loopback_by_default(
    compose: dict[str, Any],
) -> None:
    published = {
        name: service["ports"] for name, service in compose["services"].items() if service.get("ports")
    }
    assert set(published) == {"chat", "gateway"}
    assert published["chat"] == ["127.0.0.1:8000:8000"]
    assert published["gateway"] == ["127.0.0.1:8080:8080"]


def test_the_database_and_model_servers_have_no_way_out(compose: dict[str, Any]) -> None:
    assert compose["networks"]["private"]["internal"] is True
    for name in ("postgres", "redis", "llama-1", "llama-2"):
        assert compose["services"][name]["networks"] == ["private"], name
    for name in ("gateway", "chat"):
        assert set(compose["services"][name]["networks"]) == {"private", "edge"}, name


def test_postgres_keeps_its_data_in_a_volume(compose: dict[str, Any]) -> None:
    postgres = compose["services"]["postgres"]
    assert re.fullmatch(r"postgres:16(\.\d+)?-\w+", postgres["image"]), (
        "a pinned official PostgreSQL 16 image"
    )
    volume, _, target = postgres["volumes"][0].partition(":")
    assert volume in compose["volumes"] and target == "/var/lib/postgresql/data"


def test_the_chat_app_waits_for_a_healthy_database_and_gateway(compose: dict[str, Any]) -> None:
    depends = compose["services"]["chat"]["depends_on"]
    assert depends == {
        "postgres": {"condition": "service_healthy"},
        "gateway": {"condition": "service_healthy"},
    }


def test_images_build_from_the_repository_root_with_existing_dockerfiles(compose: dict[str, Any]) -> None:
    for name in APP_SERVICES:
        build = compose["services"][name]["build"]
        assert build["context"] == "."
        assert (COMPOSE_FILE.parent / build["dockerfile"]).resolve() == dockerfiles.DOCKERFILES[
            APP_SERVICES[name]
        ]


# ---- secrets and .env.example ---------------------------------------------------------------------------


def test_no_secret_is_written_in_the_file() -> None:
    raw = load_compose()
    for name, service in raw["services"].items():
        for key, value in service_env(service).items():
            if re.search(r"PASSWORD|SECRET|KEY|DATABASE_URL", key):
                secret_variables = variables_used(value) & set(SECRETS)
                assert secret_variables, f"{name}: {key} must come from .env, not the file"


def test_the_secrets_are_required_and_have_no_default() -> None:
    with pytest.raises(InterpolationError, match="POSTGRES_PASSWORD|CHAT_SESSION_KEY|LLM_GATEWAY_API_KEY"):
        interpolate(load_compose(), read_env_file())  # .env.example as shipped: secrets left empty
    for secret in SECRETS:
        env = filled_env()
        del env[secret]
        with pytest.raises(InterpolationError, match=secret):
            interpolate(load_compose(), env)


def test_env_example_lists_exactly_the_variables_the_file_uses() -> None:
    used = variables_used(COMPOSE_FILE.read_text(encoding="utf-8"))
    assert used == set(read_env_file())
    for secret in SECRETS:
        assert read_env_file()[secret] == "", f"{ENV_EXAMPLE.name} must not ship a value for {secret}"


# ---- what the apps read ---------------------------------------------------------------------------------


def dockerfile_env(service_name: str) -> dict[str, str]:
    return dockerfiles.env(dockerfiles.final_stage(dockerfiles.DOCKERFILES[APP_SERVICES[service_name]]))


@pytest.mark.parametrize("service_name", ["gateway", "chat", "llama-1", "llama-2"])
def test_sets_what_the_app_needs_and_nothing_it_does_not_read(
    compose: dict[str, Any], app_specs: dict[str, App], service_name: str
) -> None:
    app = app_specs[APP_SERVICES[service_name]]
    environment = service_env(compose["services"][service_name])
    unread = set(environment) - app.reads
    assert not unread, f"{service_name} sets variables its app never reads: {sorted(unread)}"
    missing = app.required - set(environment) - set(dockerfile_env(service_name))
    assert not missing, f"{service_name} leaves required variables unset: {sorted(missing)}"


def apply_env(monkeypatch: pytest.MonkeyPatch, app: App, environment: dict[str, str]) -> None:
    for name in app.reads:
        monkeypatch.delenv(name, raising=False)
    for name, value in environment.items():
        monkeypatch.setenv(name, value)


def test_gateway_settings_load_from_the_file(
    compose: dict[str, Any], app_specs: dict[str, App], monkeypatch: pytest.MonkeyPatch
) -> None:
    from gateway.settings import BackendKind, load_settings

    gateway = compose["services"]["gateway"]
    apply_env(monkeypatch, app_specs["gateway"], {**dockerfile_env("gateway"), **service_env(gateway)})
    settings = load_settings()
    assert settings.host == "0.0.0.0"
    assert settings.api_keys == (service_env(gateway)["GATEWAY_API_KEYS"],)
    backends = {b.name: b for b in settings.backends}
    assert set(backends) == {"llama-1", "llama-2"}
    for name, backend in backends.items():
        assert backend.kind is BackendKind.LLAMA_SERVER
        host, _, port = backend.host.partition(":")
        service = compose["services"][host]
        assert host == name and int(port) == llama_args(service).port
        assert backend.url.endswith("/v1")
    # Every gateway process shares its routing state through the stack's Redis.
    assert settings.state_url is not None and urlsplit(settings.state_url).hostname == "redis"
    assert "redis" in compose["services"] and "redis" in gateway["depends_on"]


def test_the_documented_extra_backend_example_loads(
    app_specs: dict[str, App], monkeypatch: pytest.MonkeyPatch
) -> None:
    from gateway.settings import BackendKind, load_settings

    example = re.search(r"^#\s+EXTRA_BACKENDS='(.*)'$", ENV_EXAMPLE.read_text(encoding="utf-8"), re.MULTILINE)
    assert example, ".env.example shows how to add an Azure OpenAI backend"
    compose = interpolate(load_compose(), filled_env(EXTRA_BACKENDS=example.group(1)))
    environment = {**dockerfile_env("gateway"), **service_env(compose["services"]["gateway"])}
    apply_env(monkeypatch, app_specs["gateway"], environment)
    backends = load_settings().backends
    assert [b.kind for b in backends] == [BackendKind.LLAMA_SERVER, BackendKind.LLAMA_SERVER, BackendKind.AZURE]
    assert backends[2].priority > backends[0].priority


def test_chat_settings_load_from_the_file(
    compose: dict[str, Any], app_specs: dict[str, App], monkeypatch: pytest.MonkeyPatch
) -> None:
    from chat_client.settings import load_settings

    chat = compose["services"]["chat"]
    apply_env(monkeypatch, app_specs["chat"], {**dockerfile_env("chat"), **service_env(chat)})
    settings = load_settings()
    assert settings.host == "0.0.0.0"
    assert settings.resolved_database_url.startswith("postgresql+asyncpg://chat:")
    assert "@postgres:5432/chat" in settings.resolved_database_url
    # The chat app asks the gateway for the model the llama.cpp servers serve, with the gateway's key.
    assert settings.chat_model == llama_args(compose["services"]["llama-1"]).alias
    gateway = compose["services"]["gateway"]
    assert settings.azure_openai_api_key.get_secret_value() == service_env(gateway)["GATEWAY_API_KEYS"]
    assert settings.azure_openai_custom_url.startswith("http://gateway:8080/")


def llama_args(service: dict[str, Any]) -> ServerCommand:
    """llama-server's command line: the image's ENTRYPOINT followed by the service's command (its CMD's stead)."""
    command = service["command"]
    command = shlex.split(command) if isinstance(command, str) else command
    return llama_server_cli.image_command([str(word) for word in command])


@pytest.mark.parametrize("service_name", ["llama-1", "llama-2"])
def test_llama_command_is_accepted_by_llama_server(compose: dict[str, Any], service_name: str) -> None:
    from backends.llamacpp.llama_server import DEFAULT_CTX_PER_SLOT, DEFAULT_PARALLEL

    args = llama_args(compose["services"][service_name])
    assert args.host == "0.0.0.0" and args.port == 8080
    assert args.alias == "smollm2-135m-instruct"
    assert args.threads == int(read_env_file()["LLAMA_THREADS"])
    # The slots and context of `make up`'s backends (the launcher's defaults), so both stacks behave alike.
    assert args.parallel == DEFAULT_PARALLEL
    assert args.ctx_size == DEFAULT_PARALLEL * DEFAULT_CTX_PER_SLOT


def test_no_made_up_names_in_the_apps_namespaces(app_specs: dict[str, App]) -> None:
    """A .env variable named like a setting (GATEWAY_…, CHAT_…) must be that setting, passed through as is."""
    for name in read_env_file():
        for app, prefix in (("gateway", "GATEWAY_"), ("chat", "CHAT_")):
            if name.startswith(prefix):
                assert name in app_specs[app].reads, f"{name} looks like a {app} setting but is none"
