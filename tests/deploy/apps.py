"""What each app reads from its environment, taken from the apps' own code rather than written down again.

- gateway: every field of `GatewaySettings` under its env prefix, the variables its modules look up with
  os.environ, and azure-identity's when it authenticates with DefaultAzureCredential;
- chat: the validation alias of every `ChatSettings` field, likewise;
- llama: nothing from the environment that a deployment sets (llama-server reads LLAMA_ARG_* variables; its
  base image sets LLAMA_ARG_HOST=0.0.0.0, which the entrypoint's --host says too); its command line is
  checked against llama-server's own flags instead (tests/deploy/llama_server_cli.py).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

_ENVIRON_LOOKUP = re.compile(
    r"""environ(?:\.get)?\(\s*["']([A-Z][A-Z0-9_]*)["']|environ\[\s*["']([A-Z][A-Z0-9_]*)["']"""
)
# What DefaultAzureCredential consults; AZURE_CLIENT_ID is the one our deployments set (to pick the
# user-assigned managed identity).
AZURE_IDENTITY_VARIABLES = frozenset(
    {
        "AZURE_CLIENT_ID",
        "AZURE_TENANT_ID",
        "AZURE_CLIENT_SECRET",
        "AZURE_CLIENT_CERTIFICATE_PATH",
        "AZURE_FEDERATED_TOKEN_FILE",
        "AZURE_AUTHORITY_HOST",
    }
)


# What asyncpg reads besides its arguments (libpq's names); the template sets PGSSLROOTCERT so that
# sslmode=verify-full checks the server against the image's CA bundle.
ASYNCPG_VARIABLES = frozenset({"PGSSLROOTCERT", "PGSSLMODE", "PGSSLCERT", "PGSSLKEY", "PGSSLCRL"})
# What the Azure Monitor OpenTelemetry distro reads (the apps' telemetry modules pass nothing else).
AZURE_MONITOR_VARIABLES = frozenset({"APPLICATIONINSIGHTS_CONNECTION_STRING"})


@dataclass(frozen=True)
class App:
    name: str
    reads: frozenset[str]
    # Must be set by every deployment: no default, or a default that is wrong in a container, or our policy
    # (the gateway always demands an API key, so the chat app must present one).
    required: frozenset[str]
    port: int


def _source_reads(package: Path) -> tuple[set[str], bool]:
    names: set[str] = set()
    uses_azure_identity = False
    for path in package.rglob("*.py"):
        text = path.read_text(encoding="utf-8")
        for match in _ENVIRON_LOOKUP.finditer(text):
            names.add(match.group(1) or match.group(2))
        uses_azure_identity |= "DefaultAzureCredential(" in text
        if "configure_azure_monitor(" in text:
            names |= AZURE_MONITOR_VARIABLES
    return names, uses_azure_identity


def gateway() -> App:
    from gateway.settings import GatewaySettings

    prefix = GatewaySettings.model_config.get("env_prefix", "")
    reads = {f"{prefix}{name}".upper() for name in GatewaySettings.model_fields}
    extra, uses_identity = _source_reads(REPO / "gateway")
    reads |= extra | (AZURE_IDENTITY_VARIABLES if uses_identity else set())
    required = {
        f"{prefix}{name}".upper()
        for name, field in GatewaySettings.model_fields.items()
        if field.is_required()
    }
    required |= {f"{prefix}HOST", f"{prefix}API_KEYS"}
    return App("gateway", frozenset(reads), frozenset(required), GatewaySettings.model_fields["port"].default)


def chat() -> App:
    from chat_client.settings import ChatSettings

    reads = {str(field.validation_alias) for field in ChatSettings.model_fields.values()}
    extra, uses_identity = _source_reads(REPO / "chat-client" / "chat_client")
    reads |= extra | (AZURE_IDENTITY_VARIABLES if uses_identity else set()) | ASYNCPG_VARIABLES
    required = {
        "CHAT_HOST",  # 127.0.0.1 by default
        "CHAT_SESSION_KEY",  # required outside dev mode
        "DATABASE_URL",  # SQLite by default: a file inside one container
        "OPENAI_HOST",
        "AZURE_OPENAI_CUSTOM_URL",
        "AZURE_OPENAI_CHAT_DEPLOYMENT",
        "AZURE_OPENAI_API_KEY",  # the gateway's key
    }
    port = ChatSettings.model_fields["port"].default
    return App("chat", frozenset(reads), frozenset(required), port)


def llama() -> App:
    return App("llama", frozenset(), frozenset(), 8080)


def all_apps() -> dict[str, App]:
    return {app.name: app for app in (gateway(), chat(), llama())}
