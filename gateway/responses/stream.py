"""A streamed chat completion, rewritten on the fly as the Responses API's event stream.

The events and their order are the Responses API's, numbered by ``sequence_number``::

    response.created, response.in_progress
    per output item (the assistant message first, then one per function call):
        response.output_item.added
        message:        response.content_part.added, response.output_text.delta..., response.output_text.done,
                        response.content_part.done
        function call:  response.function_call_arguments.delta..., response.function_call_arguments.done
        response.output_item.done
    response.completed  (response.incomplete when the length cap cut it short)

An upstream failure after the stream began ends it with ``error`` and ``response.failed``, never silently.
Feed the chat SSE bytes in as they arrive (any split); each call returns the bytes to send on.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import orjson

from gateway.responses.answer import (
    finished,
    function_call_item,
    mapping,
    message_item,
    new_id,
    output_text,
    skeleton,
    usage_of,
)
from gateway.responses.request import ResponsesRequest

_MAX_LINE = 1 << 20  # an SSE line longer than this is no chat chunk: dropped instead of buffered forever


class ResponsesStream:
    """One translated stream. ``start()``, then ``feed()`` per upstream chunk, then ``finish()`` at the
    upstream's end — or ``fail()`` when it broke."""

    def __init__(self, request: ResponsesRequest, now: Callable[[], float] = time.time) -> None:
        self._now = now
        self._response = skeleton(request, new_id("resp"), now())
        self._sequence = 0
        self._tail = b""
        self._items: list[dict[str, Any]] = []  # output items, in output_index order
        self._message: dict[str, Any] | None = None  # the open assistant message item
        self._text: list[str] = []
        self._calls: dict[int, dict[str, Any]] = {}  # the chat's tool-call index → its function_call item
        self._finish_reason: object = None
        self._usage: dict[str, Any] | None = None
        self.upstream_error: str | None = None  # an error the upstream put in its stream
        self.ended = False  # the upstream said it was done ([DONE] or a finish_reason)

    @property
    def usage(self) -> dict[str, Any] | None:
        return self._usage

    def start(self) -> bytes:
        return (self._event("response.created", response=self._response)
                + self._event("response.in_progress", response=self._response))

    def feed(self, chunk: bytes) -> bytes:
        data = self._tail + chunk if self._tail else chunk
        *lines, tail = data.split(b"\n")
        self._tail = tail if len(tail) <= _MAX_LINE else b""
        out = b""
        for line in lines:
            line = line.rstrip(b"\r")
            if not line.startswith(b"data:") or self.upstream_error is not None:
                continue
            payload = line[5:].strip()
            if payload == b"[DONE]":
                self.ended = True
                continue
            try:
                parsed = orjson.loads(payload)
            except orjson.JSONDecodeError:
                continue  # not a chat chunk; a translated stream carries only what it understands
            if isinstance(parsed, dict):
                out += self._chunk(parsed)
        return out

    def finish(self) -> bytes:
        """The closing events: every open item done, then response.completed (or .incomplete)."""
        if self.upstream_error is not None:
            return self.fail(self.upstream_error)
        # An empty answer is still an (empty) assistant message.
        out = self._open_message() if not self._items else b""
        response = finished(self._response, self._finish_reason, self._now())
        item_status = "completed" if response["status"] == "completed" else "incomplete"
        for index, item in enumerate(self._items):
            if item["type"] == "message":
                text = "".join(self._text)
                done = message_item(item["id"], text, item_status)
                part = output_text(text)
                out += self._event("response.output_text.done", item_id=item["id"], output_index=index,
                                   content_index=0, text=text, logprobs=[])
                out += self._event("response.content_part.done", item_id=item["id"], output_index=index,
                                   content_index=0, part=part)
            else:
                done = {**item, "status": "completed"}
                out += self._event("response.function_call_arguments.done", item_id=item["id"],
                                   output_index=index, arguments=item["arguments"])
            self._items[index] = done
            out += self._event("response.output_item.done", output_index=index, item=done)
        response["output"] = self._items
        response["usage"] = self._usage
        kind = "response.completed" if response["status"] == "completed" else "response.incomplete"
        return out + self._event(kind, response=response)

    def fail(self, message: str, code: str = "server_error") -> bytes:
        """The stream broke: an ``error`` event, then ``response.failed`` with what arrived so far. An error the
        upstream put in its stream is the better explanation, when there is one."""
        message = self.upstream_error or message
        response = self._response
        response["status"] = "failed"
        response["error"] = {"code": "server_error", "message": message}
        response["output"] = [
            message_item(item["id"], "".join(self._text), "incomplete") if item["type"] == "message"
            else {**item, "status": "incomplete"}
            for item in self._items
        ]
        response["usage"] = self._usage
        return (self._event("error", code=code, message=message, param=None)
                + self._event("response.failed", response=response))

    # -- one chat chunk ----------------------------------------------------------------------------------

    def _chunk(self, chunk: dict[str, Any]) -> bytes:
        error = chunk.get("error")
        if error is not None:
            message = error.get("message") if isinstance(error, dict) else None
            self.upstream_error = message if isinstance(message, str) else "the upstream stream reported an error"
            return b""
        if isinstance(chunk.get("usage"), dict):
            self._usage = usage_of(chunk["usage"])
        choices = chunk.get("choices")
        if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
            return b""
        choice = choices[0]
        out = b""
        delta = choice.get("delta")
        if isinstance(delta, dict):
            content = delta.get("content")
            if isinstance(content, str) and content:
                out += self._text_delta(content)
            tool_calls = delta.get("tool_calls")
            if isinstance(tool_calls, list):
                for call in tool_calls:
                    if isinstance(call, dict):
                        out += self._call_delta(call)
        if choice.get("finish_reason") is not None:
            self._finish_reason = choice["finish_reason"]
            self.ended = True
        return out

    def _open_message(self) -> bytes:
        item = message_item(new_id("msg"), "", "in_progress")
        item["content"] = []
        self._message = item
        index = len(self._items)
        self._items.append(item)
        return (self._event("response.output_item.added", output_index=index, item=item)
                + self._event("response.content_part.added", item_id=item["id"], output_index=index,
                              content_index=0, part=output_text("")))

    def _text_delta(self, text: str) -> bytes:
        out = self._open_message() if self._message is None else b""
        assert self._message is not None
        self._text.append(text)
        index = self._items.index(self._message)
        return out + self._event("response.output_text.delta", item_id=self._message["id"], output_index=index,
                                 content_index=0, delta=text, logprobs=[])

    def _call_delta(self, call: dict[str, Any]) -> bytes:
        position = call.get("index", len(self._calls))
        function = mapping(call.get("function"))
        item = self._calls.get(position)
        out = b""
        if item is None:
            call_id = call.get("id")
            name = function.get("name")
            if not isinstance(call_id, str):
                call_id = new_id("call")
            if not isinstance(name, str):
                name = ""
            item = self._calls[position] = function_call_item(new_id("fc"), call_id, name, "", "in_progress")
            self._items.append(item)
            out += self._event("response.output_item.added", output_index=len(self._items) - 1, item=item)
        elif isinstance(function.get("name"), str) and not item["name"]:
            item["name"] = function["name"]
        arguments = function.get("arguments")
        if isinstance(arguments, str) and arguments:
            item["arguments"] += arguments
            out += self._event("response.function_call_arguments.delta", item_id=item["id"],
                               output_index=self._items.index(item), delta=arguments)
        return out

    def _event(self, kind: str, **fields: Any) -> bytes:
        fields["type"] = kind
        fields["sequence_number"] = self._sequence
        self._sequence += 1
        return b"event: " + kind.encode() + b"\ndata: " + orjson.dumps(fields) + b"\n\n"
