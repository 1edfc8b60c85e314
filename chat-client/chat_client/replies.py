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
- The person pressed Stop: the request to the model is cancelled (closing the connection frees the
  backend's slot) and the text so far is stored with `complete = false, stopped = true` (nothing, if no
  text had arrived). Regenerate or Retry replaces it.

Every event also goes to the chat's live feed (live.py), for the other tabs that have the chat open.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Sequence
from dataclasses import dataclass

from chat_client.context import Turn, build_prompt
from chat_client.live import ChatFeed, LiveEvent
from chat_client.llm import ChatModel, Failure, describe_failure, stream_text
from chat_client.markdown import render_markdown
from chat_client.models import Message
from chat_client.shapes import message_json
from chat_client.store import ChatStore, ReplyConflict

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Token:
    text: str


@dataclass(frozen=True)
class Rendered:
    """The reply so far as sanitised HTML: Markdown readable while it streams (tokens follow as text)."""

    html: str


@dataclass(frozen=True)
class Done:
    message: Message


@dataclass(frozen=True)
class Failed:
    failure: Failure
    partial: Message | None  # the incomplete reply that was stored, if any text arrived


ReplyEvent = Token | Rendered | Done | Failed

# How often a streaming reply is rendered as Markdown for the page: often enough to read as formatted text,
# seldom enough that rendering the whole text each time stays cheap (a few per second, ~1 ms each).
RENDER_EVERY = 0.25


class ReplyInProgress(Exception):
    """A reply for this message is already being written (in this process)."""


@dataclass
class _Job:
    """One reply being written: its task, its text so far, and why it was cancelled, if it was."""

    question_id: int
    origin: str | None
    replace: bool
    parts: list[str]
    task: asyncio.Task[None] | None = None
    cancel_reason: str | None = None  # "stop" (the person) or "discard" (the chat is being deleted)
    # True while the model's text arrives. Only then may the task be cancelled: once the stream is over the
    # reply is being saved, and a cancellation there would end the task without its terminal event.
    streaming: bool = True


@dataclass(frozen=True)
class Writing:
    position: int
    question_id: int
    text: str


class ReplyWriter:
    def __init__(
        self,
        store: ChatStore,
        model: ChatModel,
        *,
        system_prompt: str,
        context_tokens: int,
        feed: ChatFeed | None = None,
    ) -> None:
        self._store = store
        self._model = model
        self._system_prompt = system_prompt
        self._context_tokens = context_tokens
        self._feed = feed or ChatFeed()
        self._jobs: dict[tuple[uuid.UUID, int], _Job] = {}
        self._closing = False

    def in_progress(self, chat_id: uuid.UUID, position: int) -> bool:
        return (chat_id, position) in self._jobs

    def writing(self, chat_id: uuid.UUID) -> list[Writing]:
        """The replies of this chat being written now, with their text so far."""
        return [
            Writing(position, job.question_id, "".join(job.parts))
            for (chat, position), job in sorted(self._jobs.items(), key=lambda item: item[0][1])
            if chat == chat_id
        ]

    def start(
        self,
        chat_id: uuid.UUID,
        position: int,
        history: Sequence[Turn],
        *,
        question_id: int,
        origin: str | None = None,
        replace: bool = False,
    ) -> asyncio.Queue[ReplyEvent]:
        """Begin writing the reply at `position`; its events arrive on the queue, a terminal one last.

        `replace`: a complete reply already there is replaced when this one is saved (Regenerate).
        """
        key = (chat_id, position)
        if self._closing:
            raise RuntimeError("the app is stopping")
        if key in self._jobs:
            raise ReplyInProgress
        queue: asyncio.Queue[ReplyEvent] = asyncio.Queue()
        job = _Job(question_id, origin, replace, [])
        job.task = asyncio.create_task(
            self._write(chat_id, position, history, queue, job), name=f"reply {chat_id}#{position}"
        )
        self._jobs[key] = job
        job.task.add_done_callback(lambda _: self._jobs.pop(key, None))
        self._publish(chat_id, job, "reply", {"position": position, "text": "", "question_id": question_id})
        return queue

    def stop(self, chat_id: uuid.UUID, position: int) -> bool:
        """Stop the reply at `position` (False: none is being written)."""
        job = self._jobs.get((chat_id, position))
        if job is None or job.task is None or job.cancel_reason is not None or not job.streaming:
            return False
        job.cancel_reason = "stop"
        job.task.cancel()
        return True

    async def discard_chat(self, chat_id: uuid.UUID) -> None:
        """Cancel the chat's replies without storing anything: the chat is about to be deleted."""
        tasks = []
        for (chat, _), job in list(self._jobs.items()):
            if chat == chat_id and job.task is not None:
                if job.streaming:
                    job.cancel_reason = "discard"
                    job.task.cancel()
                tasks.append(job.task)  # one being saved finishes first; the deletion then removes it
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)

    async def close(self) -> None:
        """Stop the replies still being written; each stores its text so far as incomplete."""
        self._closing = True
        tasks = [job.task for job in self._jobs.values() if job.task is not None]
        for task in tasks:
            task.cancel()
        if tasks:
            log.info("stopping %d replies in progress", len(tasks))
            await asyncio.gather(*tasks, return_exceptions=True)

    def _publish(self, chat_id: uuid.UUID, job: _Job, name: str, data: dict[str, object]) -> None:
        self._feed.publish(chat_id, LiveEvent(name, data, job.origin))

    def _emit(
        self,
        chat_id: uuid.UUID,
        position: int,
        job: _Job,
        queue: asyncio.Queue[ReplyEvent],
        event: ReplyEvent,
    ) -> None:
        """Hand an event to the request that asked for the reply and to the chat's live feed."""
        queue.put_nowait(event)
        if isinstance(event, Done):
            self._publish(chat_id, job, "message", {"message": message_json(event.message)})
        elif isinstance(event, Failed):
            self._publish(
                chat_id,
                job,
                "failed",
                {
                    "position": position,
                    "code": event.failure.code,
                    "message": event.failure.message,
                    "partial": message_json(event.partial) if event.partial else None,
                    "retry_message_id": job.question_id,
                },
            )

    async def _write(
        self,
        chat_id: uuid.UUID,
        position: int,
        history: Sequence[Turn],
        queue: asyncio.Queue[ReplyEvent],
        job: _Job,
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
        parts = job.parts
        failure: Failure | None = None
        clock = asyncio.get_running_loop().time
        rendered_at = clock()
        try:
            async for text in stream_text(self._model, prompt.messages):
                parts.append(text)
                queue.put_nowait(Token(text))
                self._publish(chat_id, job, "token", {"position": position, "text": text})
                if clock() - rendered_at >= RENDER_EVERY:
                    rendered_at = clock()
                    html = render_markdown("".join(parts))
                    queue.put_nowait(Rendered(html))
                    self._publish(chat_id, job, "html", {"position": position, "html": html})
        except asyncio.CancelledError:
            job.streaming = False
            reason = job.cancel_reason
            if reason == "discard":
                raise
            partial = None
            text = "".join(parts)
            if reason == "stop":
                # Asked for by the person, not a shutdown: the task ends normally, with the text kept.
                task = asyncio.current_task()
                assert task is not None  # this code runs inside the reply's task
                task.uncancel()
                if text.strip():
                    partial = await self._save_quietly(chat_id, position, text, stopped=True, job=job)
                self._emit(chat_id, position, job, queue, Failed(Failure("stopped", "Stopped."), partial))
                return
            # The app is stopping: keep what was written, marked incomplete, then let the cancellation go on.
            if text.strip():
                partial = await asyncio.shield(self._save_quietly(chat_id, position, text, job=job))
            self._emit(
                chat_id,
                position,
                job,
                queue,
                Failed(Failure("app_stopped", "The app stopped while writing the reply."), partial),
            )
            raise
        except Exception as exc:
            failure = describe_failure(exc, self._model.timeout, started=bool(parts))
            if failure.code == "internal":
                log.exception("chat %s: reply failed", chat_id)
            else:
                log.warning(
                    "chat %s: reply failed: %s (%s: %s)", chat_id, failure.message, type(exc).__name__, exc
                )

        job.streaming = False
        text = "".join(parts)
        if failure is None and not text.strip():
            failure = Failure("empty", "The model sent an empty reply.")
        try:
            if failure is None:
                saved = await self._store.save_reply(
                    chat_id, position, text, complete=True, replace=job.replace
                )
                self._emit(chat_id, position, job, queue, Done(saved))
                return
            partial = None
            if text.strip():
                partial = await self._store.save_reply(
                    chat_id, position, text, complete=False, replace=job.replace
                )
            self._emit(chat_id, position, job, queue, Failed(failure, partial))
        except ReplyConflict:
            self._emit(
                chat_id,
                position,
                job,
                queue,
                Failed(Failure("conflict", "Another reply to this message was saved meanwhile."), None),
            )
        except Exception:
            log.exception("chat %s: could not store the reply", chat_id)
            self._emit(
                chat_id,
                position,
                job,
                queue,
                Failed(Failure("not_saved", "The reply could not be saved; please retry."), None),
            )

    async def _save_quietly(
        self, chat_id: uuid.UUID, position: int, text: str, *, job: _Job, stopped: bool = False
    ) -> Message | None:
        try:
            return await self._store.save_reply(
                chat_id, position, text, complete=False, stopped=stopped, replace=job.replace
            )
        except Exception:
            log.exception("chat %s: could not store the incomplete reply", chat_id)
            return None
