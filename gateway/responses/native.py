"""A Responses answer from a backend that serves the API itself: relayed as it is, with two things added.

- Its response id is noted (``ResponseOwners``), so a follow-up naming it (``previous_response_id``) is sent
  back to the backend that holds it.
- A stream the upstream breaks off after it began ends as a translated one does — an ``error`` event, then
  ``response.failed`` for the same response — instead of in chat completions' error shape: a client sees one
  behaviour whichever backend answered.
"""

from __future__ import annotations

import re

import orjson

from gateway.responses.owners import ResponseOwners, response_id_in

_SEQUENCE = re.compile(rb'"sequence_number"\s*:\s*(\d{1,12})')


class NativeResponses:
    """The ``Translation`` of a native Responses answer (``gateway.apis``)."""

    __slots__ = ("_backend", "_owners")

    def __init__(self, owners: ResponseOwners, backend: str) -> None:
        self._owners = owners
        self._backend = backend

    def answer(self, body: bytes) -> bytes:
        response_id = response_id_in(body)
        if response_id is not None:
            self._owners.remember(response_id, self._backend)
        return body

    def stream(self) -> NativeResponsesStream:
        return NativeResponsesStream(self._owners, self._backend)


class NativeResponsesStream:
    __slots__ = ("_backend", "_owners", "_response_id", "_sequence")

    def __init__(self, owners: ResponseOwners, backend: str) -> None:
        self._owners = owners
        self._backend = backend
        self._response_id: str | None = None
        self._sequence = -1  # the last sequence_number the upstream sent

    def start(self) -> bytes:
        return b""

    def feed(self, chunk: bytes) -> bytes:
        if self._response_id is None:
            self._response_id = response_id_in(chunk)
            if self._response_id is not None:
                self._owners.remember(self._response_id, self._backend)
        at = chunk.rfind(b'"sequence_number"')
        if at >= 0:
            number = _SEQUENCE.match(chunk, at)
            if number is not None:
                self._sequence = int(number.group(1))
        return chunk

    def finish(self) -> bytes:
        return b""

    def fail(self, message: str) -> bytes:
        error = {"type": "error", "code": "server_error", "message": message, "param": None,
                 "sequence_number": self._sequence + 1}
        out = b"event: error\ndata: " + orjson.dumps(error) + b"\n\n"
        if self._response_id is None:
            return out  # no response began, so there is none to fail
        response: dict[str, object] = {"id": self._response_id, "object": "response", "status": "failed", "output": [],
                    "error": {"code": "server_error", "message": message}, "incomplete_details": None}
        failed = {"type": "response.failed", "response": response, "sequence_number": self._sequence + 2}
        return out + b"event: response.failed\ndata: " + orjson.dumps(failed) + b"\n\n"
