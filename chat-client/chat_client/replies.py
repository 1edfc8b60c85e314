"""Writing replies: one background task per reply, decoupled from the HTTP request that asked for it.

The request handler only relays the task's events to the browser. If the browser goes away (tab closed,
network drop) the task still finishes and stores the reply, so a reload shows it: nothing is lost.

Replies cut short (the rule, also in the README):
- The model failed before sending any text (429, 5xx, timeout, unreachable), or sent an empty reply:
  nothing is stored. The user's message stays, and the page offers a retry.
- The model failed after sending some text, or the app stopped mid-reply: the text so far is stored with
  `complete = false`. The page shows it marked "incomplete" with a retry; it is never sent back to the
  model as context; a retry replaces it.
- The stream ended normally: stored with `complete = true` (also when `finish_reason` is "length").
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Sequence
from dataclasses import dataclass

from chat_client.context import Turn, build_prompt
from chat_client.llm import ChatModel, Failure, describe_failure
from chat_client.models import Message
from chat_client.store import ChatStore, ReplyConflict

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Token:
    text: str


@dataclass(frozen=True)
class Done:
    message: Message


@dataclass(frozen=True)
class Failed:
    failure: Failure
    partial: Message | None  # the incomplete reply that was stored, if any text arrived


ReplyEvent = Token | Done | Failed


class ReplyInProgress(Exception):
    """A reply for this message is already being written (in this process)."""


class ReplyWriter:
    def __init__(
        self, store: ChatStore, model: ChatModel, *, system_prompt: str, context_tokens: int
    ) -> None:
        self._store = store
        self._model = model
        self._system_prompt = system_prompt
        self._context_tokens = context_tokens
        self._tasks: dict[tuple[uuid.UUID, int], asyncio.Task[None]] = {}
        self._closing = False

    def in_progress(self, chat_id: uuid.UUID, position: int) -> bool:
        return (chat_id, position) in self._tasks

    def start(self, chat_id: uuid.UUID, position: int, history: Sequence[Turn]) -> asyncio.Queue[ReplyEvent]:
        """Begin writing the reply at `position`; its events arrive on the queue, a terminal one last."""
        key = (chat_id, position)
        if self._closing:
            raise RuntimeError("the app is stopping")
        if key in self._tasks:
            raise ReplyInProgress
        queue: asyncio.Queue[ReplyEvent] = asyncio.Queue()
        task = asyncio.create_task(
            self._write(chat_id, position, history, queue), name=f"reply {chat_id}#{position}"
        )
        self._tasks[key] = task
        task.add_done_callback(lambda _: self._tasks.pop(key, None))
        return queue

    async def close(self) -> None:
        """Stop the replies still being written; each stores its text so far as incomplete."""
        self._closing = True
        tasks = list(self._tasks.values())
        for task in tasks:
            task.cancel()
        if tasks:
            log.info("stopping %d replies in progress", len(tasks))
            await asyncio.gather(*tasks, return_exceptions=True)

    async def _write(
        self, chat_id: uuid.UUID, position: int, history: Sequence[Turn], queue: asyncio.Queue[ReplyEvent]
    ) -> None:
        prompt = build_prompt(self._system_prompt, history, self._context_tokens)
        if prompt.dropped or prompt.truncated:
            log.info(
                "chat %s: context trimmed to ~%d tokens (%d older messages left out%s)",
                chat_id,
                prompt.estimated_tokens,
                prompt.dropped,
                ", newest message cut" if prompt.truncated else "",
            )
        parts: list[str] = []
        failure: Failure | None = None
        try:
            stream = await self._model.client.chat.completions.create(
                model=self._model.model,
                messages=prompt.messages,  # type: ignore[arg-type]
                max_tokens=self._model.max_tokens,
                stream=True,
            )
            async with stream:
                async for chunk in stream:
                    for choice in chunk.choices:
                        text = choice.delta.content if choice.delta else None
                        if text:
                            parts.append(text)
                            queue.put_nowait(Token(text))
        except asyncio.CancelledError:
            # The app is stopping: keep what was written, marked incomplete, then let the cancellation go on.
            partial = None
            if "".join(parts).strip():
                partial = await asyncio.shield(self._save_quietly(chat_id, position, "".join(parts)))
            queue.put_nowait(Failed(Failure("stopped", "The app stopped while writing the reply."), partial))
            raise
        except Exception as exc:
            failure = describe_failure(exc, self._model.timeout, started=bool(parts))
            if failure.code == "internal":
                log.exception("chat %s: reply failed", chat_id)
            else:
                log.warning("chat %s: reply failed: %s (%s)", chat_id, failure.message, type(exc).__name__)

        text = "".join(parts)
        if failure is None and not text.strip():
            failure = Failure("empty", "The model sent an empty reply.")
        try:
            if failure is None:
                queue.put_nowait(Done(await self._store.save_reply(chat_id, position, text, complete=True)))
                return
            partial = None
            if text.strip():
                partial = await self._store.save_reply(chat_id, position, text, complete=False)
            queue.put_nowait(Failed(failure, partial))
        except ReplyConflict:
            queue.put_nowait(
                Failed(Failure("conflict", "Another reply to this message was saved meanwhile."), None)
            )
        except Exception:
            log.exception("chat %s: could not store the reply", chat_id)
            queue.put_nowait(
                Failed(Failure("not_saved", "The reply could not be saved; please retry."), None)
            )

    async def _save_quietly(self, chat_id: uuid.UUID, position: int, text: str) -> Message | None:
        try:
            return await self._store.save_reply(chat_id, position, text, complete=False)
        except Exception:
            log.exception("chat %s: could not store the incomplete reply", chat_id)
            return None
