"""The chat app under test: a real PostgreSQL, a real app on a socket, fake model servers on sockets.

PostgreSQL comes from TEST_DATABASE_URL (`make test` sets it). The session gets a throwaway database
`chat_test_<random>` created at the start and dropped at the end, so these tests never see anyone else's
tables. Without TEST_DATABASE_URL the database tests skip on a developer's machine and fail in CI.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest
from aiohttp.test_utils import TestClient
from chat_client.app import create_app
from chat_client.settings import ENV_NAMES, ChatSettings
from cryptography.fernet import Fernet

from backends.fake import FakeUpstream
from tests.chat_client.chat_helpers import ChatBrowser, in_ci, run_sync

# aiohttp >= 3.12 warns about string keys in request storage; aiohttp-session (2.12.1, its latest release)
# stores its state under string keys. Ignored for exactly that message from exactly that package.
AIOHTTP_SESSION_KEY_WARNING = (
    "ignore:It is recommended to use web.RequestKey:aiohttp.web_exceptions.NotAppKeyWarning:aiohttp_session"
)
HERE = Path(__file__).parent


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if HERE in item.path.parents:
            item.add_marker(pytest.mark.filterwarnings(AIOHTTP_SESSION_KEY_WARNING))


@pytest.fixture(autouse=True)
def _clean_chat_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """No configuration leaks in from the environment of whoever runs the tests."""
    for name in list(os.environ):
        if name in ENV_NAMES.values() or name.startswith(("CHAT_", "AZURE_OPENAI_", "OPENAI_")):
            monkeypatch.delenv(name)


def _with_database(url: str, name: str) -> str:
    """The same server, another database, in the plain form both asyncpg and the app accept."""
    parts = urlsplit(url)
    return urlunsplit(("postgresql", parts.netloc, "/" + name, parts.query, parts.fragment))


async def _admin(url: str, statement: str) -> None:
    connection = await asyncpg.connect(_with_database(url, urlsplit(url).path.lstrip("/")))
    try:
        await connection.execute(statement)
    finally:
        await connection.close()


class Postgres:
    """Creates and drops throwaway databases on the server of TEST_DATABASE_URL."""

    def __init__(self, admin_url: str) -> None:
        self.admin_url = admin_url
        self.created: list[str] = []

    def create(self) -> str:
        name = f"chat_test_{secrets.token_hex(6)}"
        run_sync(_admin(self.admin_url, f'CREATE DATABASE "{name}"'))
        self.created.append(name)
        return _with_database(self.admin_url, name)

    def drop_all(self) -> None:
        for name in self.created:
            run_sync(_admin(self.admin_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        self.created.clear()


@pytest.fixture(scope="session")
def postgres() -> Iterator[Postgres]:
    url = os.environ.get("TEST_DATABASE_URL")
    if not url:
        if in_ci():
            pytest.fail("TEST_DATABASE_URL is not set: CI must run the chat app tests against PostgreSQL")
        pytest.skip("TEST_DATABASE_URL is not set (e.g. postgresql://postgres@127.0.0.1:5432/test)")
    server = Postgres(url)
    try:
        yield server
    finally:
        server.drop_all()


@pytest.fixture(scope="session")
def database_url(postgres: Postgres) -> str:
    """One migrated-on-first-use database shared by the session; tests are isolated by browser session."""
    return postgres.create()


SESSION_KEY = Fernet.generate_key().decode()


@pytest.fixture
def make_settings(database_url: str) -> Callable[..., ChatSettings]:
    def make(**overrides: Any) -> ChatSettings:
        values: dict[str, Any] = {
            "session_key": SESSION_KEY,
            "database_url": database_url,
            "openai_base_url": "http://127.0.0.1:9/v1",  # discard port: tests that talk to a model set theirs
        }
        values.update(overrides)
        return ChatSettings(**values)

    return make


@pytest.fixture
async def upstream() -> AsyncIterator[Callable[..., Awaitable[FakeUpstream]]]:
    """`await upstream(reply_text=..., script=[...])`: a running fake OpenAI-compatible model server."""
    async with AsyncExitStack() as stack:

        async def start(**config: Any) -> FakeUpstream:
            config.setdefault("model", "smollm2-135m-instruct")
            fake = FakeUpstream(**config)
            await stack.enter_async_context(fake.serve())
            return fake

        yield start


@pytest.fixture
def chat_app(
    aiohttp_client: Callable[..., Awaitable[TestClient]], make_settings: Callable[..., ChatSettings]
) -> Callable[..., Awaitable[ChatBrowser]]:
    """`await chat_app(model=fake, **settings)` → a ChatBrowser on a fresh app (another: second_browser)."""

    async def start(
        model: FakeUpstream | None = None, *, clock: Callable[[], float] | None = None, **overrides: Any
    ) -> ChatBrowser:
        if model is not None:
            overrides.setdefault("openai_base_url", model.openai_url)
        app = create_app(make_settings(**overrides), **({"clock": clock} if clock else {}))
        client = await aiohttp_client(app)
        return ChatBrowser(client, app)

    return start


@pytest.fixture
def second_browser(
    aiohttp_client: Callable[..., Awaitable[TestClient]],
) -> Callable[[ChatBrowser], Awaitable[ChatBrowser]]:
    """Another browser (its own cookie jar) on the same running app."""

    async def make(first: ChatBrowser) -> ChatBrowser:
        client = await aiohttp_client(first.client.server)
        return ChatBrowser(client, first.app)

    return make
