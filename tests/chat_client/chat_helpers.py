"""What a browser does with the chat app, in test form: sessions, CSRF tokens, SSE streams."""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import os
import re
from collections.abc import Coroutine
from dataclasses import dataclass
from typing import Any

from aiohttp import web
from aiohttp.test_utils import TestClient


def in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


def run_sync(coroutine: Coroutine[Any, Any, Any]) -> Any:
    """Run a coroutine to completion on its own loop in a worker thread (safe from any fixture)."""
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(asyncio.run, coroutine).result()


@dataclass
class Event:
    name: str
    data: Any


def parse_sse(text: str) -> list[Event]:
    events = []
    for block in text.split("\n\n"):
        name, data = "message", []
        for line in block.splitlines():
            if line.startswith("event:"):
                name = line[6:].strip()
            elif line.startswith("data:"):
                data.append(line[5:].lstrip())
        if data:
            events.append(Event(name, json.loads("\n".join(data))))
    return events


CSRF_META = re.compile(r'<meta name="csrf-token" content="([^"]+)">')


class ChatBrowser:
    """One browser (one cookie jar) talking to the app, with the page's own conventions."""

    def __init__(self, client: TestClient, app: web.Application) -> None:
        self.client = client
        self.app = app
        self.csrf = ""

    async def open(self, name: str | None = "Ada") -> ChatBrowser:
        """Load the start page (creating the session) and, if given, the name."""
        page = await self.client.get("/")
        assert page.status == 200
        self.csrf = CSRF_META.search(await page.text()).group(1)  # type: ignore[union-attr]
        if name is not None:
            response = await self.client.post(
                "/chats", data={"name": name, "csrf_token": self.csrf}, allow_redirects=False
            )
            assert response.status == 303, await response.text()
        return self

    def headers(self, **extra: str) -> dict[str, str]:
        return {"X-CSRF-Token": self.csrf, **extra}

    async def new_chat(self, title: str | None = None) -> str:
        body = {} if title is None else {"title": title}
        response = await self.client.post("/api/chats", json=body, headers=self.headers())
        assert response.status == 201, await response.text()
        return (await response.json())["chat"]["id"]

    async def chats(self) -> list[dict[str, Any]]:
        response = await self.client.get("/api/chats")
        assert response.status == 200
        return (await response.json())["chats"]

    async def messages(self, chat_id: str) -> list[dict[str, Any]]:
        response = await self.client.get(f"/api/chats/{chat_id}/messages")
        assert response.status == 200, await response.text()
        return (await response.json())["messages"]

    async def send(self, chat_id: str, content: str) -> list[Event]:
        response = await self.client.post(
            f"/api/chats/{chat_id}/messages", json={"content": content}, headers=self.headers()
        )
        assert response.status == 200, await response.text()
        assert response.content_type == "text/event-stream"
        return parse_sse(await response.text())

    async def retry(self, chat_id: str, message_id: int) -> list[Event]:
        response = await self.client.post(
            f"/api/chats/{chat_id}/messages/{message_id}/retry", json={}, headers=self.headers()
        )
        assert response.status == 200, await response.text()
        return parse_sse(await response.text())


def event_names(events: list[Event]) -> list[str]:
    """The stream's shape: `html` snapshots (a few a second, interleaved with tokens) are left out."""
    names = [event.name for event in events if event.name != "html"]
    # Collapse the token run: ["user", "token", "token", "done"] -> ["user", "token", "done"]
    return [name for i, name in enumerate(names) if not (name == "token" and i and names[i - 1] == "token")]


def reply_text(events: list[Event]) -> str:
    return "".join(event.data["text"] for event in events if event.name == "token")
