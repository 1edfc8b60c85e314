"""A chat completion's answer rewritten as a Responses API ``response`` object.

Shapes follow the official SDK's types (``openai.types.responses``): an assistant ``message`` item holding
``output_text`` parts, one ``function_call`` item per tool call, ``usage`` in input/output tokens, and
``status: "incomplete"`` with ``incomplete_details.reason`` when the length cap or a content filter ended it.
"""

from __future__ import annotations

import secrets
import time
from typing import Any

from gateway.responses.request import ResponsesRequest

# What a chat finish_reason means for a response: (status, incomplete_details.reason).
_FINISH = {
    "length": ("incomplete", "max_output_tokens"),
    "content_filter": ("incomplete", "content_filter"),
}


def new_id(prefix: str) -> str:
    return f"{prefix}_{secrets.token_hex(24)}"


def skeleton(request: ResponsesRequest, response_id: str, created_at: float) -> dict[str, Any]:
    """The response object before any output: status in_progress, the request's settings echoed back."""
    payload = request.payload
    text = payload.get("text") if isinstance(payload.get("text"), dict) else None
    return {
        "id": response_id,
        "object": "response",
        "created_at": int(created_at),
        "status": "in_progress",
        "background": False,
        "error": None,
        "incomplete_details": None,
        "instructions": payload.get("instructions"),
        "max_output_tokens": payload.get("max_output_tokens"),
        "model": request.model or "",
        "output": [],
        "parallel_tool_calls": payload.get("parallel_tool_calls", True),
        "previous_response_id": None,
        "reasoning": {"effort": None, "summary": None},
        "store": False,  # whatever was asked: nothing is kept
        "temperature": payload.get("temperature"),
        "text": text or {"format": {"type": "text"}},
        "tool_choice": payload.get("tool_choice", "auto"),
        "tools": payload.get("tools") or [],
        "top_p": payload.get("top_p"),
        "truncation": "disabled",
        "usage": None,
        "user": payload.get("user"),
        "metadata": payload.get("metadata") or {},
    }


def usage_of(chat_usage: object) -> dict[str, Any] | None:
    """Chat usage (prompt/completion tokens) as Responses usage (input/output tokens)."""
    if not isinstance(chat_usage, dict):
        return None
    prompt = _count(chat_usage.get("prompt_tokens"))
    completion = _count(chat_usage.get("completion_tokens"))
    prompt_details = chat_usage.get("prompt_tokens_details")
    completion_details = chat_usage.get("completion_tokens_details")
    cached = _count(prompt_details.get("cached_tokens")) if isinstance(prompt_details, dict) else 0
    reasoning = _count(completion_details.get("reasoning_tokens")) if isinstance(completion_details, dict) else 0
    total = chat_usage.get("total_tokens")
    return {
        "input_tokens": prompt,
        "input_tokens_details": {"cached_tokens": cached, "cache_write_tokens": 0},
        "output_tokens": completion,
        "output_tokens_details": {"reasoning_tokens": reasoning},
        "total_tokens": total if isinstance(total, int) else prompt + completion,
    }


def finished(response: dict[str, Any], finish_reason: object, now: float) -> dict[str, Any]:
    """Set the final status from the chat finish_reason; returns the response."""
    status, reason = _FINISH.get(finish_reason if isinstance(finish_reason, str) else "", ("completed", None))
    response["status"] = status
    response["incomplete_details"] = {"reason": reason} if reason else None
    if status == "completed":
        response["completed_at"] = int(now)
    return response


def message_item(item_id: str, text: str, status: str, refusal: str | None = None) -> dict[str, Any]:
    content: list[dict[str, Any]] = []
    if text or refusal is None:
        content.append(output_text(text))
    if refusal is not None:
        content.append({"type": "refusal", "refusal": refusal})
    return {"id": item_id, "type": "message", "role": "assistant", "status": status, "content": content}


def output_text(text: str) -> dict[str, Any]:
    return {"type": "output_text", "text": text, "annotations": [], "logprobs": []}


def function_call_item(item_id: str, call_id: str, name: str, arguments: str, status: str) -> dict[str, Any]:
    return {"id": item_id, "type": "function_call", "call_id": call_id, "name": name, "arguments": arguments,
            "status": status}


def response_from_chat(request: ResponsesRequest, chat: object) -> dict[str, Any]:
    """The whole response for a non-streamed chat completion ``chat`` (already parsed JSON)."""
    if not isinstance(chat, dict):
        raise TypeError("the chat completion is not a JSON object")
    choices = chat.get("choices")
    choice = choices[0] if isinstance(choices, list) and choices and isinstance(choices[0], dict) else {}
    message = mapping(choice.get("message"))
    created = chat.get("created")
    now = time.time()
    response = skeleton(request, new_id("resp"), created if isinstance(created, (int, float)) else now)
    finished(response, choice.get("finish_reason"), now)
    item_status = "completed" if response["status"] == "completed" else "incomplete"
    output: list[dict[str, Any]] = []
    text = message.get("content")
    refusal = message.get("refusal") if isinstance(message.get("refusal"), str) else None
    tool_calls = message.get("tool_calls")
    if not isinstance(tool_calls, list):
        tool_calls = []
    if (isinstance(text, str) and text) or refusal is not None or not tool_calls:
        output.append(message_item(new_id("msg"), text if isinstance(text, str) else "", item_status, refusal))
    for call in tool_calls:
        function = call.get("function") if isinstance(call, dict) else None
        if not isinstance(function, dict):
            continue
        output.append(function_call_item(
            new_id("fc"), str(call.get("id") or new_id("call")), str(function.get("name") or ""),
            str(function.get("arguments") or ""), "completed",
        ))
    response["output"] = output
    response["usage"] = usage_of(chat.get("usage"))
    return response


def mapping(value: object) -> dict[str, Any]:
    """``value`` if it is a JSON object, else an empty one: upstream answers are read defensively."""
    return value if isinstance(value, dict) else {}


def _count(value: object) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else 0
