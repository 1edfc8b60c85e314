"""Cost limits: sends and new chats per session and per client address, with clear 429s; delete is the
way out of a full session."""

from __future__ import annotations

import uuid

import asyncpg
from aiohttp.test_utils import make_mocked_request
from chat_client.ratelimit import SlidingWindow, client_address

from tests.chat_client.chat_helpers import ChatBrowser


class ManualClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_sliding_window_counts_events_in_any_window():
    window = SlidingWindow(limit=2, window=60)
    assert window.wait("k", 0) == 0
    window.record("k", 0)
    window.record("k", 10)
    assert window.wait("k", 59) == 1  # the first event leaves the window at 60
    assert window.wait("other", 59) == 0
    assert window.wait("k", 60) == 0


def test_client_address_trusts_forwarded_for_only_as_configured():
    request = make_mocked_request("GET", "/", headers={"X-Forwarded-For": "6.6.6.6, 1.2.3.4"})
    assert client_address(request, 0) != "1.2.3.4"  # the socket's peer, whatever the header says
    assert client_address(request, 1) == "1.2.3.4"  # what the one trusted proxy appended
    assert client_address(request, 2) == "6.6.6.6"
    assert client_address(make_mocked_request("GET", "/"), 1) == client_address(
        make_mocked_request("GET", "/"), 0
    )


async def test_sends_are_limited_per_session_with_a_clear_429(chat_app, upstream):
    model = await upstream(reply_text="ok")
    clock = ManualClock()
    app = await chat_app(model, sends_per_minute=2, clock=clock)
    browser = await app.open()
    chat_id = await browser.new_chat()
    await browser.send(chat_id, "one")
    await browser.send(chat_id, "two")
    clock.now += 30
    response = await browser.client.post(
        f"/api/chats/{chat_id}/messages", json={"content": "three"}, headers=browser.headers()
    )
    assert response.status == 429
    assert response.headers["Retry-After"] == "30"
    error = (await response.json())["error"]
    assert error["code"] == "rate_limited"
    assert error["message"] == "Too many messages in a short time. Wait 30 s and try again."
    assert len(model.chat_requests) == 2  # the refused send cost no model call
    assert [m["content"] for m in await browser.messages(chat_id) if m["role"] == "user"] == ["one", "two"]
    clock.now += 30
    await browser.send(chat_id, "three")


async def test_a_fresh_cookie_does_not_reset_the_address_limit(chat_app, second_browser):
    clock = ManualClock()
    app = await chat_app(chats_per_minute_per_address=3, clock=clock)
    first = await app.open()  # the name form creates a chat: 1
    await first.new_chat()  # 2
    second = await (await second_browser(first)).open()  # 3: a new session, the same address
    response = await second.client.post("/api/chats", json={}, headers=second.headers())
    assert response.status == 429
    assert "new chats" in (await response.json())["error"]["message"]
    # The page's form answers with a readable page, not a blank one.
    page = await second.client.post("/chats", data={"csrf_token": second.csrf}, allow_redirects=False)
    assert page.status == 429 and "Too many new chats" in await page.text()


async def test_sends_are_limited_per_address_behind_a_trusted_proxy(chat_app, upstream, second_browser):
    model = await upstream(reply_text="ok")
    app = await chat_app(model, sends_per_minute_per_address=1, trusted_proxy_hops=1, clock=ManualClock())
    first = await app.open()
    second = await (await second_browser(first)).open()
    chats = [await first.new_chat(), await second.new_chat()]

    async def send(browser: ChatBrowser, chat_id: str, address: str) -> int:
        response = await browser.client.post(
            f"/api/chats/{chat_id}/messages",
            json={"content": "hi"},
            headers=browser.headers(**{"X-Forwarded-For": address}),
        )
        await response.read()
        return response.status

    assert await send(first, chats[0], "10.0.0.1") == 200
    assert await send(second, chats[1], "10.0.0.1") == 429  # another session, the same client
    assert await send(second, chats[1], "10.0.0.2") == 200  # another client


async def test_a_full_session_deletes_a_chat_and_starts_another(chat_app, upstream, database_url):
    model = await upstream(reply_text="an answer")
    browser = await (await chat_app(model, max_chats_per_session=2)).open()  # the form made chat 1
    chat_id = await browser.new_chat()
    await browser.send(chat_id, "hello")
    response = await browser.client.post("/api/chats", json={}, headers=browser.headers())
    assert response.status == 409
    assert "Delete a chat" in (await response.json())["error"]["message"]

    deleted = await browser.client.delete(f"/api/chats/{chat_id}", headers=browser.headers())
    assert deleted.status == 204
    connection = await asyncpg.connect(database_url)
    try:
        key = uuid.UUID(chat_id)
        assert await connection.fetchval("SELECT count(*) FROM chats WHERE id = $1", key) == 0
        assert await connection.fetchval("SELECT count(*) FROM messages WHERE chat_id = $1", key) == 0
    finally:
        await connection.close()
    assert (await browser.client.get(f"/api/chats/{chat_id}/messages")).status == 404
    await browser.new_chat()  # room again


async def test_delete_and_rename_are_scoped_and_guarded(chat_app, second_browser):
    owner = await (await chat_app()).open()
    chat_id = await owner.new_chat()
    stranger = await (await second_browser(owner)).open()
    for method in ("DELETE", "PATCH"):
        response = await stranger.client.request(
            method, f"/api/chats/{chat_id}", json={"title": "mine"}, headers=stranger.headers()
        )
        assert response.status == 404, method
        response = await owner.client.request(method, f"/api/chats/{chat_id}", json={"title": "x"})
        assert response.status == 403, method  # no CSRF token
    # Nor can another session watch the chat, or stop or regenerate its replies.
    assert (await stranger.client.get(f"/api/chats/{chat_id}/live")).status == 404
    for action in ("stop", "regenerate"):
        response = await stranger.client.post(
            f"/api/chats/{chat_id}/messages/1/{action}", json={}, headers=stranger.headers()
        )
        assert response.status == 404, action
    response = await owner.client.patch(
        f"/api/chats/{chat_id}", json={"title": "  "}, headers=owner.headers()
    )
    assert response.status == 400 and (await response.json())["error"]["code"] == "title_empty"
    response = await owner.client.patch(
        f"/api/chats/{chat_id}", json={"title": "Trip  plans"}, headers=owner.headers()
    )
    assert response.status == 200 and (await response.json())["chat"]["title"] == "Trip plans"
    assert [chat["title"] for chat in await owner.chats() if chat["id"] == chat_id] == ["Trip plans"]
