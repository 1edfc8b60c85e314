"""Reading a Responses API request, and rewriting it as a chat completion for backends that lack the API.

The gateway is stateless: ``store: true`` is accepted (nothing is stored), and a request that continues a
stored response (``previous_response_id``, ``conversation``) can only go to a backend that serves the Responses
API itself — translation has no history to replay. That choice is the router's; this module only says so.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import orjson

from gateway.errors import BadRequest
from gateway.request_json import json_object

_MESSAGE_ROLES = frozenset({"user", "assistant", "system", "developer"})
_TOOL_CHOICES = frozenset({"auto", "none", "required"})
# Everything else a Responses request may carry (store, metadata, include, reasoning, truncation, ...) is
# accepted and left out of the translated chat request: hints a chat-only backend has no place for.
# Copied as they are: the chat API has the same field with the same meaning.
_SAME = ("temperature", "top_p", "parallel_tool_calls", "user")


@dataclass(slots=True)
class ResponsesRequest:
    """A validated Responses API request: the client's bytes for native backends, the parsed payload for
    translation and for echoing back in the Response object."""

    body: bytes
    payload: dict[str, Any]
    model: str | None
    stream: bool
    # Continues state held by some backend: only a backend serving the Responses API natively can answer.
    stateful: bool
    messages: list[Any] = field(default_factory=list)  # the input as chat messages


def parse_responses_request(raw: bytes, *, deployment: str | None = None) -> ResponsesRequest:
    payload = json_object(raw)
    model = payload.get("model")
    if model is not None and (not isinstance(model, str) or not model):
        raise BadRequest("'model' must be a non-empty string.", param="model")
    if model is None and deployment:
        payload["model"] = model = deployment
        raw = orjson.dumps(payload)
    stream = _optional(payload, "stream", bool, "a boolean") or False
    _optional(payload, "store", bool, "a boolean")
    _optional(payload, "background", bool, "a boolean")
    if payload.get("background"):
        raise BadRequest("'background' responses need stored state; this gateway is stateless.", param="background")
    previous = _optional(payload, "previous_response_id", str, "a string")
    conversation = payload.get("conversation")
    for name in ("temperature", "top_p"):
        _number(payload, name)
    max_output = payload.get("max_output_tokens")
    if max_output is not None and (not _is_int(max_output) or max_output < 1):
        raise BadRequest("'max_output_tokens' must be a positive integer.", param="max_output_tokens")
    _optional(payload, "instructions", str, "a string")
    if "input" not in payload or payload["input"] is None:
        if previous is None and conversation is None and payload.get("prompt") is None:
            raise BadRequest("'input' is required.", param="input", code="missing_required_parameter")
        messages: list[dict[str, Any]] = []
    else:
        messages = input_messages(payload["input"])
    _check_tools(payload.get("tools"))
    _check_tool_choice(payload.get("tool_choice"))
    _response_format(payload.get("text"))  # validated now, so a bad format is a 400 on every route
    return ResponsesRequest(
        body=raw,
        payload=payload,
        model=model,
        stream=stream,
        stateful=previous is not None or conversation is not None,
        messages=messages,
    )


def chat_body(request: ResponsesRequest) -> bytes:
    """The chat completion request that asks a chat-only backend for the same answer."""
    payload = request.payload
    messages = list(request.messages)
    instructions = payload.get("instructions")
    if instructions:
        messages.insert(0, {"role": "system", "content": instructions})
    chat: dict[str, Any] = {"messages": messages}
    if request.model is not None:
        chat["model"] = request.model
    for name in _SAME:
        if payload.get(name) is not None:
            chat[name] = payload[name]
    if payload.get("max_output_tokens") is not None:
        chat["max_tokens"] = payload["max_output_tokens"]
    tools = payload.get("tools")
    if tools:
        chat["tools"] = [_chat_tool(tool) for tool in tools]
    choice = payload.get("tool_choice")
    if choice is not None:
        chat["tool_choice"] = choice if isinstance(choice, str) else {
            "type": "function", "function": {"name": choice["name"]}
        }
    response_format = _response_format(payload.get("text"))
    if response_format is not None:
        chat["response_format"] = response_format
    if request.stream:
        # Usage is the last chunk's, and only when asked for; the Responses stream always reports it.
        chat["stream"] = True
        chat["stream_options"] = {"include_usage": True}
    return orjson.dumps(chat)


# -- input ---------------------------------------------------------------------------------------------

def input_messages(value: object) -> list[dict[str, Any]]:
    """``input`` (a string, or a list of message and function-call items) as chat messages."""
    if isinstance(value, str):
        return [{"role": "user", "content": value}]
    if not isinstance(value, list) or not value:
        raise BadRequest("'input' must be a string or a non-empty array of input items.", param="input")
    messages: list[dict[str, Any]] = []
    for index, item in enumerate(value):
        where = f"input[{index}]"
        if not isinstance(item, dict):
            raise BadRequest(f"'{where}' must be an object.", param=where)
        kind = item.get("type", "message")
        if kind == "message":
            messages.append(_message(item, where))
        elif kind == "function_call":
            call = {
                "id": _string(item, "call_id", where),
                "type": "function",
                "function": {"name": _string(item, "name", where), "arguments": _string(item, "arguments", where)},
            }
            last = messages[-1] if messages else None
            # Parallel calls are consecutive items; in a chat they are one assistant message.
            if last is not None and last["role"] == "assistant" and "tool_calls" in last:
                last["tool_calls"].append(call)
            else:
                messages.append({"role": "assistant", "content": None, "tool_calls": [call]})
        elif kind == "function_call_output":
            output = item.get("output")
            if isinstance(output, list):
                output = _text_of(output, f"{where}.output")
            if not isinstance(output, str):
                raise BadRequest(f"'{where}.output' must be a string.", param=f"{where}.output")
            messages.append({"role": "tool", "tool_call_id": _string(item, "call_id", where), "content": output})
        elif kind == "reasoning":
            continue  # a reasoning model's notes: a chat backend has nowhere to put them
        elif kind == "item_reference":
            raise BadRequest(
                f"'{where}' refers to a stored item; this gateway stores nothing — send the item itself.",
                param=where,
            )
        else:
            raise BadRequest(
                f"'{where}.type' {kind!r} is not supported here: use message, function_call or "
                "function_call_output items.",
                param=f"{where}.type",
            )
    return messages


def _message(item: dict[str, Any], where: str) -> dict[str, Any]:
    role = item.get("role")
    if not isinstance(role, str) or role not in _MESSAGE_ROLES:
        raise BadRequest(
            f"'{where}.role' must be one of {', '.join(sorted(_MESSAGE_ROLES))}; got {role!r}.",
            param=f"{where}.role",
        )
    content = item.get("content")
    if isinstance(content, str):
        return {"role": role, "content": content}
    if not isinstance(content, list):
        raise BadRequest(f"'{where}.content' must be a string or an array of content parts.",
                         param=f"{where}.content")
    parts = [_part(part, f"{where}.content[{i}]") for i, part in enumerate(content)]
    if all(part["type"] == "text" for part in parts):
        # Plain text as one string: every chat server takes that, not all take parts (llama.cpp's system role).
        return {"role": role, "content": "".join(part["text"] for part in parts)}
    if role != "user":
        raise BadRequest(f"'{where}.content': only user messages may carry images.", param=f"{where}.content")
    return {"role": role, "content": parts}


def _part(part: object, where: str) -> dict[str, Any]:
    if not isinstance(part, dict):
        raise BadRequest(f"'{where}' must be an object.", param=where)
    kind = part.get("type")
    if kind in ("input_text", "output_text", "text"):
        return {"type": "text", "text": _string(part, "text", where)}
    if kind == "refusal":
        return {"type": "text", "text": _string(part, "refusal", where)}
    if kind == "input_image":
        url = part.get("image_url")
        if not isinstance(url, str) or not url:
            raise BadRequest(f"'{where}.image_url' must be a URL or a data: URL (file ids need stored files).",
                             param=f"{where}.image_url")
        image: dict[str, Any] = {"url": url}
        if isinstance(part.get("detail"), str):
            image["detail"] = part["detail"]
        return {"type": "image_url", "image_url": image}
    raise BadRequest(f"'{where}.type' {kind!r} is not supported here: use input_text or input_image.",
                     param=f"{where}.type")


def _text_of(parts: list[Any], where: str) -> str:
    texts = [_part(part, f"{where}[{i}]") for i, part in enumerate(parts)]
    if any(part["type"] != "text" for part in texts):
        raise BadRequest(f"'{where}' may only hold text here.", param=where)
    return "".join(part["text"] for part in texts)


# -- tools and formats ---------------------------------------------------------------------------------

def _check_tools(tools: object) -> None:
    if tools is None:
        return
    if not isinstance(tools, list):
        raise BadRequest("'tools' must be an array.", param="tools")
    for index, tool in enumerate(tools):
        where = f"tools[{index}]"
        if not isinstance(tool, dict):
            raise BadRequest(f"'{where}' must be an object.", param=where)
        if tool.get("type") != "function":
            raise BadRequest(
                f"'{where}.type' {tool.get('type')!r}: only function tools are served by this gateway.",
                param=f"{where}.type",
            )
        _string(tool, "name", where)
        if tool.get("parameters") is not None and not isinstance(tool["parameters"], dict):
            raise BadRequest(f"'{where}.parameters' must be a JSON schema object.", param=f"{where}.parameters")


def _chat_tool(tool: dict[str, Any]) -> dict[str, Any]:
    function = {key: tool[key] for key in ("name", "description", "parameters", "strict") if key in tool}
    return {"type": "function", "function": function}


def _check_tool_choice(choice: object) -> None:
    if choice is None or (isinstance(choice, str) and choice in _TOOL_CHOICES):
        return
    if isinstance(choice, dict) and choice.get("type") == "function" and isinstance(choice.get("name"), str):
        return
    raise BadRequest(
        "'tool_choice' must be auto, none, required or {\"type\": \"function\", \"name\": ...}.", param="tool_choice"
    )


def _response_format(text: object) -> dict[str, Any] | None:
    """``text.format`` as a chat ``response_format`` (None for plain text)."""
    if text is None:
        return None
    if not isinstance(text, dict):
        raise BadRequest("'text' must be an object.", param="text")
    fmt = text.get("format")
    if fmt is None:
        return None
    if not isinstance(fmt, dict):
        raise BadRequest("'text.format' must be an object.", param="text.format")
    kind = fmt.get("type")
    if kind == "text":
        return None
    if kind == "json_object":
        return {"type": "json_object"}
    if kind == "json_schema":
        name = _string(fmt, "name", "text.format")
        schema = fmt.get("schema")
        if not isinstance(schema, dict):
            raise BadRequest("'text.format.schema' must be a JSON schema object.", param="text.format.schema")
        spec: dict[str, Any] = {"name": name, "schema": schema}
        for key in ("strict", "description"):
            if fmt.get(key) is not None:
                spec[key] = fmt[key]
        return {"type": "json_schema", "json_schema": spec}
    raise BadRequest("'text.format.type' must be text, json_object or json_schema.", param="text.format.type")


# -- small checks --------------------------------------------------------------------------------------

def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _optional(payload: dict[str, Any], name: str, kind: type, described: str) -> Any:
    value = payload.get(name)
    if value is not None and not isinstance(value, kind):
        raise BadRequest(f"'{name}' must be {described}.", param=name)
    return value


def _number(payload: dict[str, Any], name: str) -> None:
    value = payload.get(name)
    if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))):
        raise BadRequest(f"'{name}' must be a number.", param=name)


def _string(item: dict[str, Any], name: str, where: str) -> str:
    value = item.get(name)
    if not isinstance(value, str):
        raise BadRequest(f"'{where}.{name}' must be a string.", param=f"{where}.{name}")
    return value
