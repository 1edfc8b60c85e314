"""Reading a client's chat completion request: parsed once, validated, forwarded as the original bytes."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from gateway.affinity import conversation_key
from gateway.apis import PassThrough
from gateway.errors import BadRequest
from gateway.request_json import routing_fields
from gateway.settings import Api

_ROLES = frozenset({"system", "developer", "user", "assistant", "tool", "function"})


@dataclass(slots=True)  # not frozen: a frozen dataclass's __init__ is several times slower
class ChatRequest(PassThrough):
    api: Api = field(default=Api.CHAT, init=False, repr=False)
    translation: None = field(default=None, init=False, repr=False)
    body: bytes  # what goes upstream: the client's bytes, untouched unless a field had to be added
    model: str | None
    stream: bool
    affinity_key: bytes | None = None  # identifies the conversation, when affinity routing is on


def parse_chat_request(raw: bytes, *, deployment: str | None = None, affinity: bool = False) -> ChatRequest:
    """Validate just enough to route and to turn client mistakes into 400s instead of upstream 500s.

    ``deployment`` comes from an Azure-shaped path; it names the model when the body does not.
    """
    payload, raw, model, stream = routing_fields(raw, deployment)
    _check_messages(payload.get("messages"))
    key = conversation_key(model, payload["messages"]) if affinity else None
    return ChatRequest(body=raw, model=model, stream=stream, affinity_key=key)


def _check_messages(messages: object) -> None:
    if messages is None:
        raise BadRequest("'messages' is required.", param="messages", code="missing_required_parameter")
    if not isinstance(messages, list) or not messages:
        raise BadRequest("'messages' must be a non-empty array of message objects.", param="messages")
    for message in messages:
        # One test per message while all is well; _reject_message finds what is wrong and says so.
        if not (
            isinstance(message, dict)
            and isinstance(message.get("role"), str)
            and message["role"] in _ROLES
            and isinstance(message.get("content"), _CONTENT_TYPES)
        ):
            _reject_message(messages)


_CONTENT_TYPES = (str, list, type(None))


def _reject_message(messages: list[Any]) -> None:
    for index, message in enumerate(messages):
        if not isinstance(message, dict):
            raise BadRequest(f"'messages[{index}]' must be an object.", param=f"messages[{index}]")
        role = message.get("role")
        if not isinstance(role, str) or role not in _ROLES:
            raise BadRequest(
                f"'messages[{index}].role' must be one of {', '.join(sorted(_ROLES))}; got {role!r}.",
                param=f"messages[{index}].role",
            )
        if not isinstance(message.get("content"), _CONTENT_TYPES):
            raise BadRequest(
                f"'messages[{index}].content' must be a string or an array of content parts.",
                param=f"messages[{index}].content",
            )
