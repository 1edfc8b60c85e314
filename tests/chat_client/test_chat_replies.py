"""Replies that go wrong: a fake gateway answering 429, 500, slowly, not at all, or only halfway.

Whatever the model does, the user's message is already stored, the page gets a clear message and a
retry, and the chat keeps working. Replies cut short are stored marked incomplete (see replies.py).
"""

from __future__ import annotations

import asyncio
import itertools
import json

import asyncpg

from backends.fake import Reply, throttled_ms
from tests.chat_client.chat_helpers import event_names, parse_sse, reply_text


def failure(events):
    assert event_names(events)[-1] == "error", events
    return events[-1].data


async def test_rate_limited_reply_keeps_the_message_and_retry_answers_it(chat_app, upstream):
    model = await upstream(reply_text="Sorry for the wait.", script=[throttled_ms(1500)])
    browser = await (await chat_app(model)).open()
    chat_id = await browser.new_chat()

    events = await browser.send(chat_id, "Are you there?")
    assert event_names(events) == ["user", "error"]
    error = failure(events)
    assert error["code"] == "rate_limited"
    assert "busy" in error["message"] and error["retry_after"] == 1.5
    assert error["partial"] is None
    question = events[0].data["message"]
    assert error["retry_message_id"] == question["id"]

    # The message was committed before the model was called; no reply was stored.
    assert [(m["role"], m["content"]) for m in await browser.messages(chat_id)] == [
        ("user", "Are you there?")
    ]
    page = await (await browser.client.get(f"/chats/{chat_id}")).text()
    assert "No reply to this message" in page and f'data-message-id="{question["id"]}"' in page

    retried = await browser.retry(chat_id, question["id"])
    assert event_names(retried) == ["user", "token", "done"]
    assert reply_text(retried) == "Sorry for the wait."
    messages = await browser.messages(chat_id)
    assert [(m["role"], m["position"] - messages[0]["position"]) for m in messages] == [
        ("user", 0),
        ("assistant", 1),
    ]
    # Answered now: a second retry is refused, and the chat goes on.
    again = await browser.client.post(
        f"/api/chats/{chat_id}/messages/{question['id']}/retry", json={}, headers=browser.headers()
    )
    assert again.status == 409
    assert event_names(await browser.send(chat_id, "Great")) == ["user", "token", "done"]


async def test_server_error_is_reported_and_the_chat_keeps_working(chat_app, upstream):
    model = await upstream(reply_text="Working again.", script=[Reply(status=500)])
    browser = await (await chat_app(model)).open()
    chat_id = await browser.new_chat()

    error = failure(await browser.send(chat_id, "first"))
    assert error["code"] == "upstream_error" and "HTTP 500" in error["message"]

    events = await browser.send(chat_id, "second")
    assert reply_text(events) == "Working again."
    assert [m["content"] for m in await browser.messages(chat_id)] == ["first", "second", "Working again."]


async def test_slow_model_times_out_with_a_clear_message(chat_app, upstream):
    model = await upstream(script=[Reply(delay=3)])
    browser = await (await chat_app(model, request_timeout=0.3)).open()
    chat_id = await browser.new_chat()

    error = failure(await browser.send(chat_id, "hello?"))
    assert error["code"] == "timeout"
    assert "did not answer within 0.3 seconds" in error["message"]
    assert [m["role"] for m in await browser.messages(chat_id)] == ["user"]


async def test_unreachable_model(chat_app):
    browser = await (await chat_app(openai_base_url="http://127.0.0.1:9/v1")).open()
    chat_id = await browser.new_chat()
    error = failure(await browser.send(chat_id, "anyone?"))
    assert error["code"] == "unreachable"
    assert error["message"] == "Could not reach the model service."


async def test_reply_cut_short_is_stored_incomplete_left_out_of_context_and_replaced_by_retry(
    chat_app, upstream
):
    model = await upstream(
        reply_text="one two three four five six", script=[Reply(fail_after_chunks=3)], token_delay=0.005
    )
    browser = await (await chat_app(model)).open()
    chat_id = await browser.new_chat()

    events = await browser.send(chat_id, "count for me")
    assert event_names(events) == ["user", "token", "error"]
    partial_text = reply_text(events)
    assert partial_text and partial_text != "one two three four five six"
    error = failure(events)
    assert error["code"] == "interrupted"
    assert error["partial"]["complete"] is False and error["partial"]["content"] == partial_text

    messages = await browser.messages(chat_id)
    assert [(m["role"], m["complete"]) for m in messages] == [("user", True), ("assistant", False)]
    page = await (await browser.client.get(f"/chats/{chat_id}")).text()
    assert "This reply was cut short" in page and "Retry" in page

    # The next request does not show the model its own half sentence, nor the question it left unanswered
    # (two user turns in a row would break chat templates that require alternating roles).
    await browser.send(chat_id, "are you ok?")
    sent = [m["content"] for m in model.chat_requests[-1].json["messages"]]
    assert partial_text not in sent and "count for me" not in sent and sent[-1] == "are you ok?"

    # Retry replaces the incomplete reply in place.
    retried = await browser.retry(chat_id, events[0].data["message"]["id"])
    assert event_names(retried)[-1] == "done"
    messages = await browser.messages(chat_id)
    assert [(m["role"], m["content"], m["complete"]) for m in messages[:2]] == [
        ("user", "count for me", True),
        ("assistant", "one two three four five six", True),
    ]
    assert len(messages) == 4 and all(m["complete"] for m in messages)


async def test_browser_leaving_mid_reply_loses_nothing(chat_app, upstream):
    model = await upstream(reply_text="a b c d e f g h i j", token_delay=0.05)
    browser = await (await chat_app(model)).open()
    chat_id = await browser.new_chat()

    response = await browser.client.post(
        f"/api/chats/{chat_id}/messages", json={"content": "tell me"}, headers=browser.headers()
    )
    first = await response.content.readuntil(b"\n\n")
    assert first.startswith(b"event: user")
    response.close()  # the tab is closed

    for _ in range(100):
        messages = await browser.messages(chat_id)
        if len(messages) == 2:
            break
        await asyncio.sleep(0.05)
    assert [(m["role"], m["content"], m["complete"]) for m in messages] == [
        ("user", "tell me", True),
        ("assistant", "a b c d e f g h i j", True),
    ]


async def test_app_stopping_mid_reply_stores_what_was_written_as_incomplete(chat_app, upstream, database_url):
    model = await upstream(reply_text="a b c d e f g h i j k l m n o p", token_delay=0.2)
    browser = await (await chat_app(model)).open()
    chat_id = await browser.new_chat()

    response = await browser.client.post(
        f"/api/chats/{chat_id}/messages", json={"content": "long story"}, headers=browser.headers()
    )
    received = b""
    while b"event: token" not in received:
        received += await response.content.readuntil(b"\n\n")
    await browser.client.close()  # stops the server and the app, mid-reply

    connection = await asyncpg.connect(database_url)
    try:
        rows = await connection.fetch(
            "SELECT role, content, complete FROM messages WHERE chat_id = $1 ORDER BY position", chat_id
        )
    finally:
        await connection.close()
    assert [(r["role"], r["complete"]) for r in rows] == [("user", True), ("assistant", False)]
    assert rows[1]["content"].startswith("a") and rows[1]["content"] != "a b c d e f g h i j k l m n o p"


async def test_model_request_uses_the_configured_model_prompt_and_reply_budget(chat_app, upstream):
    model = await upstream(reply_text="Arr.")
    browser = await (
        await chat_app(model, system_prompt="You are a pirate.", openai_model="my-model", max_reply_tokens=77)
    ).open()
    chat_id = await browser.new_chat()
    await browser.send(chat_id, "hi")

    request = model.chat_requests[0]
    assert request.path == "/v1/chat/completions" and request.stream
    body = request.json
    assert body["model"] == "my-model" and body["max_tokens"] == 77 and body["stream"] is True
    assert body["messages"] == [
        {"role": "system", "content": "You are a pirate."},
        {"role": "user", "content": "hi"},
    ]
    assert request.headers["authorization"] == "Bearer no-key-needed"


async def test_long_chat_keeps_working_with_history_trimmed_to_the_budget(chat_app, upstream):
    # The reference app's chats died once they outgrew the model's window. Here a chat many times
    # longer than the budget goes on, and each request carries only what fits, newest last.
    model = await upstream(reply_text="noted " * 30)
    browser = await (await chat_app(model, context_tokens=300, system_prompt="Be brief.")).open()
    chat_id = await browser.new_chat()

    for n in range(12):
        events = await browser.send(chat_id, f"fact number {n}: " + "blah " * 40)
        assert event_names(events)[-1] == "done"

    assert len(await browser.messages(chat_id)) == 24  # everything is kept...
    sent = model.chat_requests[-1].json["messages"]
    assert sent[0] == {"role": "system", "content": "Be brief."}
    assert sent[-1]["content"].startswith("fact number 11:")
    assert len(sent) < 24  # ...but only the newest turns are sent
    estimated = sum(-(-len(m["content"].encode()) // 3) + 4 for m in sent)
    assert estimated <= 300
    roles = [m["role"] for m in sent[1:]]
    assert all(a != b for a, b in itertools.pairwise(roles))  # a contiguous tail, no gaps


async def test_sse_wire_format(chat_app, upstream):
    model = await upstream(reply_text='quotes " and\nnewlines')
    browser = await (await chat_app(model)).open()
    chat_id = await browser.new_chat()
    response = await browser.client.post(
        f"/api/chats/{chat_id}/messages", json={"content": "x"}, headers=browser.headers()
    )
    assert response.headers["Content-Type"] == "text/event-stream; charset=utf-8"
    assert "no-cache" in response.headers["Cache-Control"]
    raw = await response.text()
    for block in filter(None, raw.split("\n\n")):
        name, data = block.split("\n")
        assert name.startswith("event: ") and data.startswith("data: ")
        json.loads(data[6:])
    assert parse_sse(raw)[-1].name == "done"


async def test_page_reloaded_mid_reply_says_it_is_being_written_and_refuses_a_second_writer(
    chat_app, upstream
):
    model = await upstream(reply_text="w " * 30, token_delay=0.05)
    browser = await (await chat_app(model)).open()
    chat_id = await browser.new_chat()

    response = await browser.client.post(
        f"/api/chats/{chat_id}/messages", json={"content": "take your time"}, headers=browser.headers()
    )
    question_id = parse_sse((await response.content.readuntil(b"\n\n")).decode())[0].data["message"]["id"]

    page = await (await browser.client.get(f"/chats/{chat_id}")).text()
    assert "A reply is still being written" in page and "Retry" not in page
    second = await browser.client.post(
        f"/api/chats/{chat_id}/messages/{question_id}/retry", json={}, headers=browser.headers()
    )
    assert second.status == 409
    assert (await second.json())["error"]["code"] == "reply_in_progress"

    events = parse_sse((await response.read()).decode())
    assert events[-1].name == "done"
    assert model.chat_count == 1


async def test_an_empty_reply_is_a_failure_not_an_empty_bubble(chat_app, upstream):
    model = await upstream(reply_text="   ")
    browser = await (await chat_app(model)).open()
    chat_id = await browser.new_chat()
    error = failure(await browser.send(chat_id, "hello?"))
    assert error["code"] == "empty" and error["partial"] is None
    assert [m["role"] for m in await browser.messages(chat_id)] == ["user"]
