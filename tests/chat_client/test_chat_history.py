"""Chats and their history in PostgreSQL: create, list, reopen, order, isolate, limit."""

from __future__ import annotations

import asyncio
import uuid

from tests.chat_client.chat_helpers import event_names, reply_text


async def test_start_chat_from_the_page_then_reopen_it_with_its_history(chat_app, upstream):
    model = await upstream(reply_text="Hello Ada, nice to meet you.")
    browser = await chat_app(model)
    await browser.open(name=None)

    response = await browser.client.post(
        "/chats", data={"name": "Ada", "csrf_token": browser.csrf}, allow_redirects=False
    )
    assert response.status == 303
    chat_url = response.headers["Location"]
    chat_id = chat_url.rsplit("/", 1)[1]

    events = await browser.send(chat_id, "Hi, I am Ada")
    assert event_names(events) == ["user", "token", "done"]
    assert reply_text(events) == "Hello Ada, nice to meet you."

    # Later, same browser: the start page lists the chat, the chat page shows the whole conversation.
    index = await (await browser.client.get("/")).text()
    assert "Hello, Ada" in index and chat_url in index and "Hi, I am Ada" in index  # title from 1st message
    page = await (await browser.client.get(chat_url)).text()
    assert page.index("Hi, I am Ada") < page.index("Hello Ada, nice to meet you.")

    messages = await browser.messages(chat_id)
    assert [(m["role"], m["content"], m["complete"]) for m in messages] == [
        ("user", "Hi, I am Ada", True),
        ("assistant", "Hello Ada, nice to meet you.", True),
    ]


async def test_many_chats_listed_most_recent_activity_first(chat_app, upstream):
    browser = await (await chat_app(await upstream())).open()
    first = await browser.new_chat("first")
    second = await browser.new_chat("second")
    third = await browser.new_chat("third")
    assert [c["id"] for c in await browser.chats()][:3] == [third, second, first]

    await browser.send(first, "back to the first one")
    listed = await browser.chats()
    assert listed[0]["id"] == first
    assert {c["title"] for c in listed} >= {"first", "second", "third"}
    # The page opened by the form also counts; every chat is reachable.
    for chat in listed:
        assert (await browser.client.get(chat["url"])).status == 200


async def test_messages_keep_their_order_and_timestamps(chat_app, upstream):
    model = await upstream(reply_text="ok")
    browser = await (await chat_app(model)).open()
    chat_id = await browser.new_chat()
    for text in ["one", "two", "three"]:
        await browser.send(chat_id, text)

    messages = await browser.messages(chat_id)
    assert [m["content"] for m in messages] == ["one", "ok", "two", "ok", "three", "ok"]
    positions = [m["position"] for m in messages]
    assert positions == sorted(positions) and len(set(positions)) == 6
    times = [m["created_at"] for m in messages]
    assert times == sorted(times) and all(t.endswith("+00:00") for t in times)
    # The model saw the conversation so far, in order, each time.
    last_request = model.chat_requests[-1].json["messages"]
    assert [m["content"] for m in last_request[1:]] == ["one", "ok", "two", "ok", "three"]


async def test_two_sends_at_once_in_one_chat_keep_a_consistent_order(chat_app, upstream):
    model = await upstream(reply_text="a slow answer", token_delay=0.02)
    browser = await (await chat_app(model)).open()
    chat_id = await browser.new_chat()

    results = await asyncio.gather(*(browser.send(chat_id, f"question {n}") for n in range(4)))
    assert all(event_names(events)[-1] == "done" for events in results)

    messages = await browser.messages(chat_id)
    assert len(messages) == 8
    # Every reply sits right after the question it answers: user, assistant, user, assistant...
    assert [m["role"] for m in messages] == ["user", "assistant"] * 4
    for events in results:
        question = events[0].data["message"]
        answer = events[-1].data["message"]
        assert answer["position"] == question["position"] + 1
    assert sorted(m["content"] for m in messages if m["role"] == "user") == [
        f"question {n}" for n in range(4)
    ]


async def test_another_session_gets_404_never_data(chat_app, upstream, second_browser):
    model = await upstream(reply_text="secret answer")
    alice = await (await chat_app(model)).open("Alice")
    chat_id = await alice.new_chat("alice's chat")
    events = await alice.send(chat_id, "my secret")
    question_id = events[0].data["message"]["id"]

    mallory = await (await second_browser(alice)).open("Mallory")
    assert await mallory.chats() == [] or all(c["id"] != chat_id for c in await mallory.chats())
    for method, path, body in [
        ("GET", f"/api/chats/{chat_id}/messages", None),
        ("POST", f"/api/chats/{chat_id}/messages", {"content": "let me in"}),
        ("POST", f"/api/chats/{chat_id}/messages/{question_id}/retry", {}),
        ("GET", f"/chats/{chat_id}", None),
    ]:
        response = await mallory.client.request(method, path, json=body, headers=mallory.headers())
        text = await response.text()
        assert response.status == 404, (method, path, text)
        assert "secret" not in text and "alice" not in text.lower()

    # Nothing Mallory did reached Alice's chat or the model.
    assert [m["content"] for m in await alice.messages(chat_id)] == ["my secret", "secret answer"]
    assert model.chat_count == 1


async def test_unknown_or_malformed_ids_are_404(chat_app):
    browser = await (await chat_app()).open()
    chat_id = await browser.new_chat()
    for path in [f"/api/chats/{uuid.uuid4()}/messages", "/api/chats/not-a-uuid/messages", "/chats/nope"]:
        assert (await browser.client.get(path)).status == 404
    response = await browser.client.post(
        f"/api/chats/{chat_id}/messages/999999999/retry", json={}, headers=browser.headers()
    )
    assert response.status == 404
    assert (await response.json())["error"]["code"] == "not_found"


async def test_input_limits_answer_clearly_and_store_nothing(chat_app, upstream):
    model = await upstream()
    browser = await (await chat_app(model, max_message_chars=50, max_chats_per_session=2)).open()
    chat_id = (await browser.chats())[0]["id"]  # the one the start form opened

    for content, code in [
        ("x" * 51, "message_too_long"),
        ("   \n ", "message_empty"),
        (42, "invalid_message"),
    ]:
        response = await browser.client.post(
            f"/api/chats/{chat_id}/messages", json={"content": content}, headers=browser.headers()
        )
        assert response.status == 400
        error = (await response.json())["error"]
        assert error["code"] == code
    assert (
        "limit is 50"
        in (
            await (
                await browser.client.post(
                    f"/api/chats/{chat_id}/messages", json={"content": "y" * 60}, headers=browser.headers()
                )
            ).json()
        )["error"]["message"]
    )

    response = await browser.client.post(
        f"/api/chats/{chat_id}/messages", data="content=hi", headers=browser.headers()
    )
    assert response.status == 415

    await browser.new_chat()
    response = await browser.client.post("/api/chats", json={}, headers=browser.headers())
    assert response.status == 409
    assert "limit of 2 chats" in (await response.json())["error"]["message"]
    page = await browser.client.post("/chats", data={"csrf_token": browser.csrf})
    assert page.status == 409 and "limit of 2 chats" in await page.text()

    assert await browser.messages(chat_id) == []
    assert model.chat_count == 0


async def test_name_is_required_and_bounded(chat_app):
    browser = await (await chat_app()).open(name=None)
    for name, status in [("", 400), ("x" * 61, 400)]:
        response = await browser.client.post("/chats", data={"name": name, "csrf_token": browser.csrf})
        assert response.status == status
        assert "name" in (await response.text()).lower()
    assert await browser.chats() == []


async def test_healthz_checks_the_database(chat_app):
    browser = await chat_app()
    response = await browser.client.get("/healthz")
    assert response.status == 200
    assert await response.json() == {"status": "ok"}
    assert "Set-Cookie" not in response.headers  # probes don't get sessions
