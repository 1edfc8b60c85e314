"""Stop, regenerate, live updates, delete mid-reply and the Responses API setting, through the JSON API."""

from __future__ import annotations

import asyncio
import json
import uuid
from typing import Any

import asyncpg
import pytest
from aiohttp import ClientResponse
from chat_client.markdown import render_markdown

from tests.chat_client.chat_helpers import ChatBrowser, Event, event_names, parse_sse, reply_text
from tests.chat_client.scripted_model import ScriptedModel

PIECES = ["one", " two", " three", " four", " five"]


async def next_event(response: ClientResponse, skip: tuple[str, ...] = ("html",)) -> Event:
    """The next event of a stream, leaving out `skip` (html snapshots come at the writer's own pace)."""
    while True:
        block = (await asyncio.wait_for(response.content.readuntil(b"\n\n"), 5)).decode()
        events = parse_sse(block)
        if events and events[0].name not in skip:
            return events[0]


async def start_send(browser: ChatBrowser, chat_id: str, content: str, tab: str = "tab-a") -> ClientResponse:
    response = await browser.client.post(
        f"/api/chats/{chat_id}/messages",
        json={"content": content},
        headers=browser.headers(**{"X-Tab-Id": tab}),
    )
    assert response.status == 200, await response.text()
    return response


async def test_stop_cancels_the_model_request_and_keeps_the_text_marked_stopped(chat_app, database_url):
    async with ScriptedModel(PIECES, hold_after=2).serve() as model:
        browser = await (await chat_app(openai_base_url=model.url)).open()
        chat_id = await browser.new_chat()
        response = await start_send(browser, chat_id, "count")
        question = (await next_event(response)).data["message"]
        assert [(await next_event(response)).data["text"] for _ in range(2)] == ["one", " two"]

        stop = await browser.client.post(
            f"/api/chats/{chat_id}/messages/{question['id']}/stop", json={}, headers=browser.headers()
        )
        assert stop.status == 200 and await stop.json() == {"stopped": True}
        error = await next_event(response)
        assert (
            error.name == "error" and error.data["code"] == "stopped" and error.data["message"] == "Stopped."
        )
        assert error.data["partial"]["content"] == "one two" and error.data["partial"]["stopped"] is True
        for _ in range(100):  # the model sees its client leave (the gateway would free the slot)
            if model.disconnects:
                break
            await asyncio.sleep(0.02)
        assert model.disconnects == 1

        stored = (await browser.messages(chat_id))[-1]
        assert (stored["content"], stored["complete"], stored["stopped"]) == ("one two", False, True)
        page = await (await browser.client.get(f"/chats/{chat_id}")).text()
        assert "Stopped." in page and 'class="retry"' in page
        # Nothing left to stop.
        again = await browser.client.post(
            f"/api/chats/{chat_id}/messages/{question['id']}/stop", json={}, headers=browser.headers()
        )
        assert await again.json() == {"stopped": False}


async def test_regenerate_replaces_only_the_last_answer(chat_app):
    async with ScriptedModel(["first answer"]).serve() as model:
        browser = await (await chat_app(openai_base_url=model.url)).open()
        chat_id = await browser.new_chat()
        first = (await browser.send(chat_id, "q1"))[0].data["message"]["id"]
        model.pieces = ["second answer"]
        second = (await browser.send(chat_id, "q2"))[0].data["message"]["id"]

        model.pieces = ["a better answer"]
        response = await browser.client.post(
            f"/api/chats/{chat_id}/messages/{second}/regenerate", json={}, headers=browser.headers()
        )
        events = parse_sse(await response.text())
        assert event_names(events) == ["user", "token", "done"] and reply_text(events) == "a better answer"
        assert [m["content"] for m in await browser.messages(chat_id)] == [
            "q1", "first answer", "q2", "a better answer"
        ]  # fmt: skip
        # The model was not shown the answer it is replacing.
        assert [m["content"] for m in model.requests[-1][1]["messages"][1:]] == ["q1", "first answer", "q2"]

        response = await browser.client.post(
            f"/api/chats/{chat_id}/messages/{first}/regenerate", json={}, headers=browser.headers()
        )
        assert response.status == 409 and (await response.json())["error"]["code"] == "not_last"


async def test_live_stream_shows_other_tabs_and_a_reply_in_progress_but_not_the_tabs_own(chat_app):
    async with ScriptedModel(PIECES, hold_after=2).serve() as model:
        browser = await (await chat_app(openai_base_url=model.url)).open()
        chat_id = await browser.new_chat()
        watcher = await browser.client.get(f"/api/chats/{chat_id}/live?tab=tab-b")
        assert watcher.status == 200 and watcher.content_type == "text/event-stream"
        assert (await next_event(watcher)).name == "hello"
        sender = await browser.client.get(f"/api/chats/{chat_id}/live?tab=tab-a")
        assert (await next_event(sender)).name == "hello"

        response = await start_send(browser, chat_id, "hello there", tab="tab-a")
        user = await next_event(watcher)
        assert user.name == "user" and user.data["message"]["content"] == "hello there"
        assert user.data["chat_title"] == "hello there"
        reply = await next_event(watcher)
        assert reply.name == "reply" and reply.data["text"] == ""
        position = reply.data["position"]
        assert [(await next_event(watcher)).data for _ in range(2)] == [
            {"position": position, "text": "one"},
            {"position": position, "text": " two"},
        ]
        # A tab opened now (a reload) starts with the text so far.
        late = await browser.client.get(f"/api/chats/{chat_id}/live?tab=tab-c")
        assert (await next_event(late)).name == "hello"
        snapshot = await next_event(late)
        assert snapshot.name == "reply" and snapshot.data["text"] == "one two"

        model.release()
        await response.read()
        names = []
        while not names or names[-1] != "message":
            names.append((await next_event(watcher)).name)
        assert names == ["token", "token", "token", "message"]
        assert (await next_event(late)).name == "token"

        rename = await browser.client.patch(
            f"/api/chats/{chat_id}",
            json={"title": "Renamed"},
            headers=browser.headers(**{"X-Tab-Id": "tab-a"}),
        )
        assert rename.status == 200
        renamed = await next_event(watcher)
        assert renamed.name == "renamed" and renamed.data == {"title": "Renamed"}
        deleted = await browser.client.delete(f"/api/chats/{chat_id}", headers=browser.headers())
        assert deleted.status == 204
        assert (await next_event(watcher)).name == "deleted"
        # The sending tab heard of nothing it did itself (its own stream showed it), only of the deletion.
        assert (await next_event(sender)).name == "deleted"
        for stream in (watcher, sender, late):
            stream.close()


async def test_deleting_a_chat_mid_reply_cancels_the_reply_and_removes_every_row(chat_app, database_url):
    async with ScriptedModel(PIECES, hold_after=2).serve() as model:
        browser = await (await chat_app(openai_base_url=model.url)).open()
        chat_id = await browser.new_chat()
        response = await start_send(browser, chat_id, "count")
        for _ in range(3):
            await next_event(response)
        deleted = await browser.client.delete(f"/api/chats/{chat_id}", headers=browser.headers())
        assert deleted.status == 204
        response.close()
        connection = await asyncpg.connect(database_url)
        try:
            key = uuid.UUID(chat_id)
            assert await connection.fetchval("SELECT count(*) FROM messages WHERE chat_id = $1", key) == 0
            assert await connection.fetchval("SELECT count(*) FROM chats WHERE id = $1", key) == 0
        finally:
            await connection.close()
        assert model.disconnects == 1


@pytest.mark.parametrize("model_api", ["chat", "responses"])
async def test_a_stream_that_breaks_off_says_so_without_gateway_internals(chat_app, model_api):
    async with ScriptedModel(["half an"], fail_with="backend b broke off mid-stream").serve() as model:
        browser = await (await chat_app(openai_base_url=model.url, model_api=model_api)).open()
        chat_id = await browser.new_chat()
        events = await browser.send(chat_id, "go")
        error: dict[str, Any] = events[-1].data
        assert events[-1].name == "error" and error["code"] == "upstream_error"
        assert error["message"] == "The model service stopped with an error."
        assert "backend" not in json.dumps(error) and error["partial"]["content"] == "half an"
        assert model.requests[-1][0] == model_api


async def test_responses_mode_sends_the_system_prompt_as_instructions_and_the_turns_as_input(chat_app):
    async with ScriptedModel(["Bonjour", " !"]).serve() as model:
        browser = await (
            await chat_app(
                openai_base_url=model.url, model_api="responses", system_prompt="Answer in French."
            )
        ).open()
        chat_id = await browser.new_chat()
        await browser.send(chat_id, "Hello")
        events = await browser.send(chat_id, "Again")
        assert reply_text(events) == "Bonjour !" and events[-1].name == "done"
        kind, body = model.requests[-1]
        assert kind == "responses"
        assert body["instructions"] == "Answer in French." and body["store"] is False
        assert body["max_output_tokens"] == 512 and body["stream"] is True
        assert body["input"] == [
            {"role": "user", "content": "Hello"},
            {"role": "assistant", "content": "Bonjour !"},
            {"role": "user", "content": "Again"},
        ]


async def test_a_streaming_reply_is_also_sent_as_rendered_markdown_so_far(chat_app, monkeypatch):
    monkeypatch.setattr("chat_client.replies.RENDER_EVERY", 0.0)  # a snapshot after every token
    pieces = ["# Title\n\n", "Some **bold", "** text\n\n```py\n", "x = 1\n", "```\n"]
    async with ScriptedModel(pieces).serve() as model:
        browser = await (await chat_app(openai_base_url=model.url)).open()
        chat_id = await browser.new_chat()
        watcher = await browser.client.get(f"/api/chats/{chat_id}/live?tab=tab-b")
        assert (await next_event(watcher)).name == "hello"
        events = await browser.send(chat_id, "format something")
        snapshots = [event.data["html"] for event in events if event.name == "html"]
        assert snapshots == [render_markdown("".join(pieces[: n + 1])) for n in range(len(pieces))]
        assert "<strong>bold</strong>" in snapshots[2] and "<pre><code" in snapshots[2]  # an open fence
        live = []
        while not live or live[-1].name != "message":
            live.append(await next_event(watcher, skip=()))
        assert [event.data["html"] for event in live if event.name == "html"] == snapshots
        watcher.close()
