"""A model server for the chat app's tests that streams exactly the text it is given, piece by piece.

backends/fake splits replies on whitespace (right for the gateway's tests); the chat app's Markdown needs
newlines and code fences kept. This one serves both APIs the app can use, from the same script:
POST /v1/chat/completions (stream) and POST /v1/responses (stream, the event sequence OpenAI sends).

`hold_after`: stream that many pieces, then wait until `release()` (a reply "still being written", to
stop it, reload, or watch it from another tab). `disconnects` counts streams whose client went away.
`fail_with`: after the pieces, end the stream with this error message (an `error` event of the Responses
API; an error object in the chat completions stream, as the gateway sends when a backend breaks off).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from aiohttp import web
from aiohttp.test_utils import TestServer


class ScriptedModel:
    def __init__(
        self,
        pieces: list[str],
        *,
        delay: float = 0.0,
        hold_after: int | None = None,
        fail_with: str | None = None,
    ) -> None:
        self.pieces = pieces
        self.fail_with = fail_with
        self.delay = delay
        self.hold_after = hold_after
        self.requests: list[tuple[str, dict[str, Any]]] = []
        self.seen: list[tuple[str, str | None]] = []  # (path, Authorization header) of each request
        self.disconnects = 0
        self.gate = asyncio.Event()
        self.url = ""

    def release(self) -> None:
        self.gate.set()

    @asynccontextmanager
    async def serve(self) -> AsyncIterator[ScriptedModel]:
        app = web.Application()
        app.router.add_post("/v1/chat/completions", self._chat)
        app.router.add_post("/v1/responses", self._responses)
        app.router.add_post("/openai/v1/responses", self._responses)  # Azure OpenAI's v1 API
        server = TestServer(app, host="127.0.0.1")
        await server.start_server()
        self.url = str(server.make_url("/v1"))
        self.root = str(server.make_url(""))
        try:
            yield self
        finally:
            self.release()
            await server.close()

    async def _pieces(self) -> AsyncIterator[str]:
        for index, piece in enumerate(self.pieces):
            if self.hold_after is not None and index == self.hold_after:
                await self.gate.wait()
            if self.delay:
                await asyncio.sleep(self.delay)
            yield piece

    async def _stream(self, request: web.Request, events: AsyncIterator[bytes]) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        try:
            async for event in events:
                await response.write(event)
            await response.write_eof()
        except (ConnectionResetError, asyncio.CancelledError):
            self.disconnects += 1
            raise
        return response

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        self.requests.append(("chat", body))
        self.seen.append((request.path, request.headers.get("Authorization")))

        async def events() -> AsyncIterator[bytes]:
            def chunk(delta: dict[str, Any], finish: str | None) -> bytes:
                data = {
                    "id": "chatcmpl-1",
                    "object": "chat.completion.chunk",
                    "created": int(time.time()),
                    "model": body["model"],
                    "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
                }
                return b"data: " + json.dumps(data).encode() + b"\n\n"

            yield chunk({"role": "assistant", "content": ""}, None)
            async for piece in self._pieces():
                yield chunk({"content": piece}, None)
            if self.fail_with is not None:
                error = {"error": {"message": self.fail_with, "type": "server_error", "code": None}}
                yield b"data: " + json.dumps(error).encode() + b"\n\n"
                return
            yield chunk({}, "stop")
            yield b"data: [DONE]\n\n"

        return await self._stream(request, events())

    async def _responses(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        self.requests.append(("responses", body))
        self.seen.append((request.path, request.headers.get("Authorization")))
        created = int(time.time())
        sequence = iter(range(1_000_000))

        def response(status: str, output: list[dict[str, Any]]) -> dict[str, Any]:
            return {
                "id": "resp_1",
                "object": "response",
                "created_at": created,
                "model": body["model"],
                "status": status,
                "output": output,
                "parallel_tool_calls": True,
                "tool_choice": "auto",
                "tools": [],
                "usage": None,
            }

        def event(kind: str, **data: Any) -> bytes:
            payload = {"type": kind, "sequence_number": next(sequence), **data}
            return f"event: {kind}\ndata: {json.dumps(payload)}\n\n".encode()

        async def events() -> AsyncIterator[bytes]:
            item = {
                "id": "msg_1",
                "type": "message",
                "role": "assistant",
                "status": "in_progress",
                "content": [],
            }
            where = {"item_id": "msg_1", "output_index": 0, "content_index": 0}
            yield event("response.created", response=response("in_progress", []))
            yield event("response.output_item.added", output_index=0, item=item)
            part = {"type": "output_text", "text": "", "annotations": []}
            yield event("response.content_part.added", part=part, **where)
            text = ""
            async for piece in self._pieces():
                text += piece
                yield event("response.output_text.delta", delta=piece, logprobs=[], **where)
            if self.fail_with is not None:
                yield event("error", message=self.fail_with, code="server_error", param=None)
                return
            yield event("response.output_text.done", text=text, logprobs=[], **where)
            part = {"type": "output_text", "text": text, "annotations": []}
            yield event("response.content_part.done", part=part, **where)
            done_item = {**item, "status": "completed", "content": [part]}
            yield event("response.output_item.done", output_index=0, item=done_item)
            yield event("response.completed", response=response("completed", [done_item]))

        return await self._stream(request, events())
