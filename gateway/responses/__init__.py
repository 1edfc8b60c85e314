"""The Responses API in front of backends that only speak chat completions.

    request.py   a Responses request: validated once; rewritten as a chat completion when translated
    answer.py    a chat completion's answer as a ``response`` object (items, usage, status)
    stream.py    a chat completion stream as the Responses event stream

Pure translation: no I/O here. Which backend gets the request natively and which gets it translated is the
router's decision (``gateway.apis``).
"""

from gateway.responses.answer import response_from_chat
from gateway.responses.request import ResponsesRequest, chat_body, parse_responses_request
from gateway.responses.stream import ResponsesStream

__all__ = ["ResponsesRequest", "ResponsesStream", "chat_body", "parse_responses_request", "response_from_chat"]
