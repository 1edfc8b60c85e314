"""The one-command demo: without DATABASE_URL the app keeps its history in an embedded SQLite file."""

from __future__ import annotations

import asyncio
import logging

from chat_client.app import create_app
from chat_client.settings import ChatSettings
from cryptography.fernet import Fernet

from tests.chat_client.chat_helpers import ChatBrowser, event_names


async def test_without_database_url_history_lives_in_a_sqlite_file(
    aiohttp_client, upstream, tmp_path, monkeypatch, caplog
):
    monkeypatch.chdir(tmp_path)
    model = await upstream(reply_text="stored in sqlite", token_delay=0.01)
    settings = ChatSettings(session_key=Fernet.generate_key().decode(), openai_base_url=model.openai_url)
    assert settings.database_url is None

    with caplog.at_level(logging.INFO):
        app = create_app(settings)
        browser = await ChatBrowser(await aiohttp_client(app), app).open()
    assert (
        f"DATABASE_URL is not set: using the embedded SQLite file {tmp_path / 'chat.sqlite3'}" in caplog.text
    )
    assert (tmp_path / "chat.sqlite3").exists()

    chat_id = await browser.new_chat()
    results = await asyncio.gather(*(browser.send(chat_id, f"q{n}") for n in range(3)))
    assert all(event_names(events)[-1] == "done" for events in results)
    messages = await browser.messages(chat_id)
    assert [m["role"] for m in messages] == ["user", "assistant"] * 3
    assert all(m["created_at"].endswith("+00:00") for m in messages)
    assert len(await browser.chats()) == 2  # the one the start form opened, and this one
    assert (await browser.client.get("/healthz")).status == 200
