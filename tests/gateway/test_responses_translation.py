"""Pure translation Responses ↔ chat completions, checked against the official SDK's own types."""

from __future__ import annotations

import orjson
import pydantic
import pytest
from openai import omit
from openai.lib.streaming.responses._responses import ResponseStreamState
from openai.types.responses import Response, ResponseStreamEvent
from openai.types.responses.response_usage import ResponseUsage

from backends.fake.streaming import sse, stream_events
from gateway.errors import BadRequest
from gateway.responses import ResponsesStream, chat_body, parse_responses_request, response_from_chat

EVENT = pydantic.TypeAdapter(ResponseStreamEvent)


def request(**payload):
    return parse_responses_request(orjson.dumps({"model": "m", **payload}))


def translated(**payload) -> dict:
    return orjson.loads(chat_body(request(**payload)))


def test_string_input_and_instructions_become_messages():
    chat = translated(input="Hi", instructions="Be brief", max_output_tokens=7, temperature=0.2, top_p=0.9)
    assert chat == {"model": "m", "messages": [{"role": "system", "content": "Be brief"},
                                               {"role": "user", "content": "Hi"}],
                    "temperature": 0.2, "top_p": 0.9, "max_tokens": 7}


def test_items_with_function_calls_become_a_chat_history():
    chat = translated(input=[
        {"role": "developer", "content": [{"type": "input_text", "text": "rules"}]},
        {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "weather?"},
                                                         {"type": "input_text", "text": " Paris"}]},
        {"type": "function_call", "call_id": "c1", "name": "get", "arguments": '{"city":"Paris"}'},
        {"type": "function_call", "call_id": "c2", "name": "get", "arguments": '{"city":"Lyon"}'},
        {"type": "function_call_output", "call_id": "c1", "output": "sunny"},
        {"type": "function_call_output", "call_id": "c2", "output": "rain"},
        {"role": "assistant", "content": [{"type": "output_text", "text": "Sunny and rain."}]},
    ], tools=[{"type": "function", "name": "get", "parameters": {"type": "object"}, "strict": True}],
        tool_choice={"type": "function", "name": "get"})
    assert chat["messages"] == [
        {"role": "developer", "content": "rules"},
        {"role": "user", "content": "weather? Paris"},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "c1", "type": "function", "function": {"name": "get", "arguments": '{"city":"Paris"}'}},
            {"id": "c2", "type": "function", "function": {"name": "get", "arguments": '{"city":"Lyon"}'}},
        ]},
        {"role": "tool", "tool_call_id": "c1", "content": "sunny"},
        {"role": "tool", "tool_call_id": "c2", "content": "rain"},
        {"role": "assistant", "content": "Sunny and rain."},
    ]
    assert chat["tools"] == [{"type": "function", "function": {
        "name": "get", "parameters": {"type": "object"}, "strict": True}}]
    assert chat["tool_choice"] == {"type": "function", "function": {"name": "get"}}


def test_text_formats_become_response_formats_and_streams_ask_for_usage():
    schema = {"type": "object", "properties": {"a": {"type": "string"}}}
    chat = translated(input="x", stream=True,
                      text={"format": {"type": "json_schema", "name": "A", "schema": schema, "strict": True}})
    assert chat["response_format"] == {"type": "json_schema",
                                       "json_schema": {"name": "A", "schema": schema, "strict": True}}
    assert chat["stream"] is True and chat["stream_options"] == {"include_usage": True}
    assert translated(input="x", text={"format": {"type": "json_object"}})["response_format"] == {
        "type": "json_object"}
    assert "response_format" not in translated(input="x", text={"format": {"type": "text"}})


def test_store_is_accepted_and_previous_response_id_marks_the_request_stateful():
    assert not request(input="x", store=True).stateful
    assert request(input="x", previous_response_id="resp_1").stateful
    assert request(previous_response_id="resp_1").messages == []


@pytest.mark.parametrize("payload, param", [
    ({}, "input"),
    ({"input": 3}, "input"),
    ({"input": []}, "input"),
    ({"input": [1]}, "input[0]"),
    ({"input": [{"role": "robot", "content": "x"}]}, "input[0].role"),
    ({"input": [{"role": "user", "content": 5}]}, "input[0].content"),
    ({"input": [{"role": "user", "content": [{"type": "input_file"}]}]}, "input[0].content[0].type"),
    ({"input": [{"type": "item_reference", "id": "x"}]}, "input[0]"),
    ({"input": [{"type": "function_call", "name": "f", "arguments": "{}"}]}, "input[0].call_id"),
    ({"input": "x", "model": 5}, "model"),
    ({"input": "x", "stream": "yes"}, "stream"),
    ({"input": "x", "temperature": "hot"}, "temperature"),
    ({"input": "x", "max_output_tokens": 0}, "max_output_tokens"),
    ({"input": "x", "tools": [{"type": "web_search"}]}, "tools[0].type"),
    ({"input": "x", "tool_choice": "sometimes"}, "tool_choice"),
    ({"input": "x", "text": {"format": {"type": "yaml"}}}, "text.format.type"),
    ({"input": "x", "text": {"format": {"type": "json_schema", "name": "n"}}}, "text.format.schema"),
    ({"input": "x", "background": True}, "background"),
])
def test_bad_requests_are_400s_naming_the_field(payload, param):
    with pytest.raises(BadRequest) as caught:
        parse_responses_request(orjson.dumps(payload))
    assert caught.value.param == param


@pytest.mark.parametrize("raw", [b"", b"{", b"[]"])
def test_bodies_that_are_not_objects_are_400s(raw):
    with pytest.raises(BadRequest):
        parse_responses_request(raw)


def chat_answer(content="Hello there", finish="stop", tool_calls=None):
    message = {"role": "assistant", "content": content}
    if tool_calls:
        message["tool_calls"] = tool_calls
    return {"id": "chatcmpl-1", "object": "chat.completion", "created": 1700000000, "model": "m",
            "choices": [{"index": 0, "message": message, "finish_reason": finish}],
            "usage": {"prompt_tokens": 11, "completion_tokens": 2, "total_tokens": 13}}


def test_a_chat_answer_is_a_valid_response_object():
    response = Response.model_validate(response_from_chat(request(input="x"), chat_answer()))
    assert response.output_text == "Hello there"
    assert response.status == "completed" and response.incomplete_details is None
    assert response.usage == ResponseUsage.model_validate({
        "input_tokens": 11, "input_tokens_details": {"cached_tokens": 0, "cache_write_tokens": 0},
        "output_tokens": 2,
        "output_tokens_details": {"reasoning_tokens": 0}, "total_tokens": 13})


def test_length_is_incomplete_and_tool_calls_are_function_call_items():
    response = Response.model_validate(response_from_chat(request(input="x"), chat_answer(
        content=None, finish="length",
        tool_calls=[{"id": "call_1", "type": "function", "function": {"name": "get", "arguments": "{}"}}])))
    assert response.status == "incomplete"
    assert response.incomplete_details is not None and response.incomplete_details.reason == "max_output_tokens"
    [call] = response.output
    assert (call.type, call.call_id, call.name, call.arguments) == ("function_call", "call_1", "get", "{}")


def replay(stream: ResponsesStream, chat_events: list[bytes], split: int = 7) -> list:
    """Translate, re-split the bytes at odd places, and parse every event with the SDK's own types."""
    wire = stream.start()
    joined = b"".join(chat_events)
    for start in range(0, len(joined), split):
        wire += stream.feed(joined[start:start + split])
    wire += stream.finish() if stream.upstream_error is None else stream.fail(stream.upstream_error)
    events = []
    for block in wire.split(b"\n\n"):
        if block:
            name, data = block.split(b"\n")
            event = EVENT.validate_python(orjson.loads(data.removeprefix(b"data: ")))
            assert name == b"event: " + event.type.encode()
            events.append(event)
    assert [e.sequence_number for e in events] == list(range(len(events)))
    return events


def test_a_text_stream_is_the_responses_event_sequence_the_sdk_accumulates():
    usage = {"prompt_tokens": 5, "completion_tokens": 3, "total_tokens": 8}
    chat = stream_events(completion_id="c", created=1, model="m", tokens=["One", "two", "three"],
                         finish_reason="stop", usage=usage)
    events = replay(ResponsesStream(request(input="x", stream=True)), chat)
    assert [e.type for e in events] == [
        "response.created", "response.in_progress", "response.output_item.added", "response.content_part.added",
        "response.output_text.delta", "response.output_text.delta", "response.output_text.delta",
        "response.output_text.done", "response.content_part.done", "response.output_item.done",
        "response.completed"]
    state = ResponseStreamState(input_tools=[], text_format=omit)
    for event in events:
        state.handle_event(event)
    final = state._completed_response
    assert final is not None and final.output_text == "One two three"
    assert final.usage is not None and (final.usage.input_tokens, final.usage.output_tokens) == (5, 3)


def test_a_tool_call_stream_has_argument_deltas():
    def chunk(delta, finish=None):
        return sse({"choices": [{"index": 0, "delta": delta, "finish_reason": finish}]})
    chat = [
        chunk({"role": "assistant", "tool_calls": [{"index": 0, "id": "call_9", "type": "function",
                                                    "function": {"name": "get", "arguments": ""}}]}),
        chunk({"tool_calls": [{"index": 0, "function": {"arguments": '{"city":'}}]}),
        chunk({"tool_calls": [{"index": 0, "function": {"arguments": '"Paris"}'}}]}),
        chunk({}, "tool_calls"),
        b"data: [DONE]\n\n",
    ]
    events = replay(ResponsesStream(request(input="x", stream=True)), chat)
    kinds = [e.type for e in events]
    assert kinds.count("response.function_call_arguments.delta") == 2
    done = events[-1]
    assert done.type == "response.completed"
    [call] = done.response.output
    assert (call.call_id, call.name, call.arguments) == ("call_9", "get", '{"city":"Paris"}')


def test_length_ends_as_response_incomplete():
    chat = stream_events(completion_id="c", created=1, model="m", tokens=["a", "b"], finish_reason="length",
                         usage=None)
    events = replay(ResponsesStream(request(input="x", stream=True)), chat)
    assert events[-1].type == "response.incomplete"
    assert events[-1].response.incomplete_details.reason == "max_output_tokens"


def test_an_upstream_error_in_the_stream_ends_it_failed():
    chat = stream_events(completion_id="c", created=1, model="m", tokens=["a", "b"], finish_reason="stop",
                         usage=None)
    chat.insert(1, b'data: {"error": {"message": "out of memory"}}\n\n')
    events = replay(ResponsesStream(request(input="x", stream=True)), chat)
    assert [e.type for e in events[-2:]] == ["error", "response.failed"]
    assert events[-1].response.error.message == "out of memory"
