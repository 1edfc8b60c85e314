"""Alembic migrations on a real, empty PostgreSQL database."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys

import asyncpg
from chat_client.database import create_engine, current_revision, head_revision, migrate
from chat_client.settings import normalize_database_url
from cryptography.fernet import Fernet

from tests.chat_client.chat_helpers import run_sync


async def _columns(url: str) -> dict[str, dict[str, str]]:
    connection = await asyncpg.connect(url)
    try:
        rows = await connection.fetch(
            "SELECT table_name, column_name, data_type FROM information_schema.columns "
            "WHERE table_schema = 'public' ORDER BY table_name, ordinal_position"
        )
        tables: dict[str, dict[str, str]] = {}
        for row in rows:
            tables.setdefault(row["table_name"], {})[row["column_name"]] = row["data_type"]
        return tables
    finally:
        await connection.close()


async def _constraints(url: str) -> set[str]:
    connection = await asyncpg.connect(url)
    try:
        rows = await connection.fetch(
            "SELECT conname FROM pg_constraint JOIN pg_namespace n ON n.oid = connamespace "
            "WHERE nspname = 'public'"
        )
        indexes = await connection.fetch("SELECT indexname FROM pg_indexes WHERE schemaname = 'public'")
        return {r["conname"] for r in rows} | {r["indexname"] for r in indexes}
    finally:
        await connection.close()


async def test_migrations_from_empty_up_down_and_up_again(postgres):
    url = postgres.create()
    assert await _columns(url) == {}
    engine = create_engine(normalize_database_url(url))
    try:
        assert await current_revision(engine) is None
        await migrate(engine)
        assert await current_revision(engine) == head_revision() == "0002"

        tables = await _columns(url)
        assert tables["chats"] == {
            "id": "uuid",
            "session_id": "character varying",
            "title": "character varying",
            "next_position": "integer",
            "created_at": "timestamp with time zone",
            "updated_at": "timestamp with time zone",
        }
        assert tables["messages"] == {
            "id": "bigint",
            "chat_id": "uuid",
            "role": "character varying",
            "content": "text",
            "position": "integer",
            "complete": "boolean",
            "created_at": "timestamp with time zone",
            "stopped": "boolean",
        }
        assert {
            "pk_chats",
            "pk_messages",
            "uq_messages_chat_id_position",
            "ck_messages_role",
            "fk_messages_chat_id_chats",
            "ix_chats_session_id_updated_at",
        } <= await _constraints(url)

        await migrate(engine)  # nothing left to do: a no-op, not an error
        await migrate(engine, "base")
        assert set(await _columns(url)) == {"alembic_version"}
        await migrate(engine)
        assert {"chats", "messages"} <= set(await _columns(url))
    finally:
        await engine.dispose()


async def test_replicas_starting_together_migrate_once(postgres):
    url = normalize_database_url(postgres.create())
    engines = [create_engine(url) for _ in range(3)]
    try:
        await asyncio.gather(*(migrate(engine) for engine in engines))
        assert {await current_revision(engine) for engine in engines} == {"0002"}
    finally:
        for engine in engines:
            await engine.dispose()


async def test_schema_guards_order_and_roles(postgres):
    url = postgres.create()
    engine = create_engine(normalize_database_url(url))
    try:
        await migrate(engine)
    finally:
        await engine.dispose()
    connection = await asyncpg.connect(url)
    try:
        chat_id = await connection.fetchval(
            "INSERT INTO chats (id, session_id, created_at, updated_at) "
            "VALUES (gen_random_uuid(), 's', now(), now()) RETURNING id"
        )
        insert = (
            "INSERT INTO messages (chat_id, role, content, position, created_at) "
            "VALUES ($1, $2, 'x', $3, now())"
        )
        await connection.execute(insert, chat_id, "user", 1)
        for role, position, error in [
            ("user", 1, asyncpg.UniqueViolationError),  # one message per position
            ("system", 2, asyncpg.CheckViolationError),  # roles are user / assistant
        ]:
            try:
                await connection.execute(insert, chat_id, role, position)
            except error:
                pass
            else:
                raise AssertionError(f"{role}@{position} was accepted")
        assert await connection.fetchval("SELECT title FROM chats") == ""
        assert await connection.fetchval("SELECT complete FROM messages") is True
        assert await connection.fetchval("SELECT stopped FROM messages") is False
    finally:
        await connection.close()


def test_migrate_command(postgres):
    url = postgres.create()
    env = {
        k: v for k, v in os.environ.items() if not k.startswith(("CHAT_", "OPENAI_", "AZURE_", "DATABASE_"))
    }
    env.update(DATABASE_URL=url, CHAT_SESSION_KEY=Fernet.generate_key().decode())
    result = subprocess.run(
        [sys.executable, "-m", "chat_client", "migrate"],
        env=env,
        check=False,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert "database migrated from empty to 0002" in result.stderr
    assert run_sync(_columns(url)).keys() >= {"chats", "messages", "alembic_version"}
