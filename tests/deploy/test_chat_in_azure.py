"""What the chat app does differently in Azure, run here: PostgreSQL with an Entra ID token as the password
(chat_client/entra_password.py, against the test PostgreSQL), and telemetry only with Application Insights
(chat_client/telemetry.py; its spans are tested with the gateway's, tests/gateway/test_telemetry.py)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import pytest
from sqlalchemy import text

TEST_DATABASE_URL = os.environ.get("TEST_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/test")


@dataclass
class Token:
    token: str
    expires_on: int = 0


class FakeCredential:
    """Stands in for the managed identity: hands out tokens and remembers the scopes asked for."""

    def __init__(self) -> None:
        self.scopes: list[tuple[str, ...]] = []

    async def get_token(self, *scopes: str) -> Token:
        self.scopes.append(scopes)
        return Token(f"token-{len(self.scopes)}")


async def test_every_new_connection_asks_for_a_postgres_token() -> None:
    from chat_client.entra_password import POSTGRES_SCOPE, open_engine
    from chat_client.settings import load_settings

    settings = load_settings(database_url=TEST_DATABASE_URL, database_azure_auth=True, dev_mode=True)
    credential = FakeCredential()
    async with open_engine(settings, credential) as engine:
        async with engine.connect() as connection:
            assert (await connection.execute(text("select 1"))).scalar() == 1
        assert credential.scopes == [(POSTGRES_SCOPE,)]
        await engine.dispose()  # a fresh connection next: a fresh token
        async with engine.connect() as connection:
            await connection.execute(text("select 1"))
    assert credential.scopes == [(POSTGRES_SCOPE,), (POSTGRES_SCOPE,)]


async def test_without_azure_auth_the_url_is_used_as_it_is() -> None:
    from chat_client.entra_password import open_engine
    from chat_client.settings import load_settings

    settings = load_settings(database_url=TEST_DATABASE_URL, dev_mode=True)
    assert settings.database_azure_auth is False
    credential = FakeCredential()
    async with open_engine(settings, credential) as engine, engine.connect() as connection:
        await connection.execute(text("select 1"))
    assert credential.scopes == []


def test_telemetry_exports_to_application_insights(monkeypatch: pytest.MonkeyPatch) -> None:
    import azure.monitor.opentelemetry
    from chat_client import telemetry

    configured: list[dict[str, Any]] = []
    monkeypatch.setattr(
        azure.monitor.opentelemetry, "configure_azure_monitor", lambda **kw: configured.append(kw)
    )
    monkeypatch.setenv(telemetry.CONNECTION_STRING, "InstrumentationKey=00000000-0000-0000-0000-000000000000")
    assert telemetry.setup_telemetry() is True
    (options,) = configured
    assert options["connection_string"].startswith("InstrumentationKey=")
    assert options["resource"].attributes["service.name"] == "chat"
    assert "http_client" in telemetry.client_options()


def test_the_database_url_of_the_template_makes_asyncpg_verify_the_server(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """sslmode=verify-full (DATABASE_URL) with PGSSLROOTCERT (the template sets the image's CA bundle): asyncpg
    checks the certificate chain and the host name, and needs no ~/.postgresql/root.crt."""
    import ssl

    from asyncpg import connect_utils
    from chat_client.settings import load_settings
    from sqlalchemy.engine import make_url

    from tests.deploy import bicep

    env = {item["name"]: item["value"] for item in bicep.app_env("chat") if "value" in item}
    monkeypatch.setenv("PGSSLROOTCERT", env["PGSSLROOTCERT"])
    monkeypatch.setenv("HOME", "/nonexistent")  # no ~/.postgresql to fall back on
    url = "postgresql://id-chat-abc@psql-abc.postgres.database.azure.com:5432/chat?sslmode=verify-full"
    settings = load_settings(database_url=url, database_azure_auth=True, dev_mode=True)
    query = dict(make_url(settings.resolved_database_url).query)
    assert query == {"ssl": "verify-full"}  # what SQLAlchemy hands asyncpg.connect(ssl=...)
    _addresses, params = connect_utils._parse_connect_dsn_and_args(
        dsn=None,
        host="psql-abc.postgres.database.azure.com",
        port=5432,
        user="id-chat-abc",
        password=None,
        passfile=None,
        database="chat",
        ssl=query["ssl"],
        service=None,
        servicefile=None,
        direct_tls=None,
        server_settings=None,
        target_session_attrs=None,
        krbsrvname=None,
        gsslib=None,
    )
    context = params.ssl
    assert isinstance(context, ssl.SSLContext)
    assert context.verify_mode is ssl.CERT_REQUIRED and context.check_hostname
    assert context.cert_store_stats()["x509_ca"] > 50  # the bundle was loaded
