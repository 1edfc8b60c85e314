"""The database engine and the migrations that shape it.

One async engine per app (opened and disposed in the app's cleanup context). Migrations are Alembic's,
applied in code: `migrate(engine)` at start-up and by `python -m chat_client migrate`.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import event, text
from sqlalchemy.engine import Connection, make_url
from sqlalchemy.engine.interfaces import DBAPIConnection
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

log = logging.getLogger(__name__)

MIGRATIONS = Path(__file__).parent / "migrations"
# Any constant that no other program on the same PostgreSQL uses for pg_advisory_xact_lock.
MIGRATION_LOCK_ID = 0x43_48_41_54  # "CHAT"


def create_engine(url: str, password: Callable[[], Awaitable[str]] | None = None) -> AsyncEngine:
    """An async engine for a normalized URL (see settings.normalize_database_url). `password`: called by
    asyncpg for every new PostgreSQL connection (an Entra ID token, see entra_password.py)."""
    if make_url(url).get_backend_name() == "sqlite":
        # Wait up to 15 s for another writer instead of failing at once with "database is locked".
        engine = create_async_engine(url, connect_args={"timeout": 15})
        event.listen(engine.sync_engine, "connect", _sqlite_pragmas)
        return engine
    connect_args = {} if password is None else {"password": password}
    return create_async_engine(url, pool_pre_ping=True, pool_size=5, max_overflow=5, connect_args=connect_args)


def _sqlite_pragmas(dbapi_connection: DBAPIConnection, _record: object) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA foreign_keys=ON")  # SQLite ignores foreign keys unless asked, per connection.
    cursor.execute("PRAGMA journal_mode=WAL")  # readers don't wait for the writer of a streamed reply.
    cursor.close()


def describe(url: str) -> str:
    """The URL without its password, for logs."""
    return make_url(url).render_as_string(hide_password=True)


def alembic_config() -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    return config


async def migrate(engine: AsyncEngine, revision: str = "head") -> None:
    """Bring the schema to `revision` ("head", or "base" to remove it), in one transaction.

    Several replicas may start at once (Azure Container Apps scales out): on PostgreSQL a transaction-scoped
    advisory lock makes them migrate one after the other, and each later one finds nothing left to do.
    """
    async with engine.begin() as connection:
        if connection.dialect.name == "postgresql":
            await connection.execute(text("SELECT pg_advisory_xact_lock(:id)"), {"id": MIGRATION_LOCK_ID})
        before = await connection.run_sync(_current_revision)
        await connection.run_sync(_run, revision)
        after = await connection.run_sync(_current_revision)
    if before != after:
        log.info("database migrated from %s to %s", before or "empty", after or "empty")
    else:
        log.info("database schema is up to date (%s)", after or "empty")


async def current_revision(engine: AsyncEngine) -> str | None:
    async with engine.connect() as connection:
        return await connection.run_sync(_current_revision)


def head_revision() -> str | None:
    return ScriptDirectory.from_config(alembic_config()).get_current_head()


def _current_revision(connection: Connection) -> str | None:
    return MigrationContext.configure(connection).get_current_revision()


def _run(connection: Connection, revision: str) -> None:
    config = alembic_config()
    config.attributes["connection"] = connection
    if revision == "base":
        command.downgrade(config, revision)
    else:
        command.upgrade(config, revision)
