"""Chat history in the database. Every query is scoped by the browser session that owns the chat.

A chat id from another session is indistinguishable from one that doesn't exist: the methods return None
and the handlers answer 404, never data. The only methods without a session id are the ones the reply
writer calls with a chat id it got from a scoped method.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import case, delete, func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker

from chat_client.context import Turn
from chat_client.models import TITLE_MAX, Chat, Message, utcnow

TITLE_FROM_MESSAGE = 60


class ChatLimitReached(Exception):
    def __init__(self, limit: int) -> None:
        super().__init__(f"chat limit of {limit} reached")
        self.limit = limit


class ReplyConflict(Exception):
    """A complete reply already holds this position (a concurrent retry won)."""


@dataclass(frozen=True)
class Pending:
    """A user message and the position reserved for the reply to it."""

    message: Message
    reply_position: int
    chat_title: str | None = None  # set when the message was just added (it may have named the chat)


class ChatStore:
    def __init__(self, engine: AsyncEngine) -> None:
        self._sessions = async_sessionmaker(engine, expire_on_commit=False)

    # Chats

    async def list_chats(self, session_id: str) -> Sequence[Chat]:
        async with self._sessions() as db:
            query = (
                select(Chat)
                .where(Chat.session_id == session_id)
                .order_by(Chat.updated_at.desc(), Chat.created_at.desc(), Chat.id)
            )
            return (await db.scalars(query)).all()

    async def create_chat(self, session_id: str, *, limit: int, title: str = "") -> Chat:
        async with self._sessions.begin() as db:
            count = await db.scalar(
                select(func.count()).select_from(Chat).where(Chat.session_id == session_id)
            )
            if count is not None and count >= limit:
                raise ChatLimitReached(limit)
            now = utcnow()
            chat = Chat(
                id=uuid.uuid4(),
                session_id=session_id,
                title=title[:TITLE_MAX],
                created_at=now,
                updated_at=now,
            )
            db.add(chat)
        return chat

    async def rename_chat(self, session_id: str, chat_id: uuid.UUID, title: str) -> Chat | None:
        async with self._sessions.begin() as db:
            chat = await db.scalar(select(Chat).where(Chat.id == chat_id, Chat.session_id == session_id))
            if chat is not None:
                chat.title = title[:TITLE_MAX]
        return chat

    async def delete_chat(self, session_id: str, chat_id: uuid.UUID) -> bool:
        """Remove the chat and its messages (False: the session has no such chat)."""
        async with self._sessions.begin() as db:
            owned = await db.scalar(select(Chat.id).where(Chat.id == chat_id, Chat.session_id == session_id))
            if owned is None:
                return False
            # Messages explicitly: SQLite enforces ON DELETE CASCADE only with its foreign_keys pragma.
            await db.execute(delete(Message).where(Message.chat_id == chat_id))
            await db.execute(delete(Chat).where(Chat.id == chat_id))
        return True

    async def get_chat(self, session_id: str, chat_id: uuid.UUID) -> Chat | None:
        async with self._sessions() as db:
            return await db.scalar(select(Chat).where(Chat.id == chat_id, Chat.session_id == session_id))

    # Messages

    async def list_messages(self, session_id: str, chat_id: uuid.UUID) -> Sequence[Message] | None:
        """The chat's messages in order, or None when the session has no such chat."""
        async with self._sessions() as db:
            owned = await db.scalar(select(Chat.id).where(Chat.id == chat_id, Chat.session_id == session_id))
            if owned is None:
                return None
            query = select(Message).where(Message.chat_id == chat_id).order_by(Message.position)
            return (await db.scalars(query)).all()

    async def add_user_message(self, session_id: str, chat_id: uuid.UUID, content: str) -> Pending | None:
        """Commit the user's message and reserve the next position for the reply (None: no such chat).

        The UPDATE that hands out positions locks the chat's row (PostgreSQL) or the database (SQLite)
        until commit, so concurrent sends in one chat get distinct, increasing positions.
        """
        now = utcnow()
        title = " ".join(content.split())[:TITLE_FROM_MESSAGE]
        async with self._sessions.begin() as db:
            row = (
                await db.execute(
                    update(Chat)
                    .where(Chat.id == chat_id, Chat.session_id == session_id)
                    .values(
                        next_position=Chat.next_position + 2,
                        updated_at=now,
                        title=case((Chat.title == "", title), else_=Chat.title),
                    )
                    .returning(Chat.next_position, Chat.title)
                    .execution_options(synchronize_session=False)
                )
            ).first()
            if row is None:
                return None
            reserved, chat_title = row
            message = Message(
                chat_id=chat_id, role="user", content=content, position=reserved - 2, created_at=now
            )
            db.add(message)
        return Pending(message, reply_position=reserved - 1, chat_title=chat_title)

    async def pending_for_retry(
        self, session_id: str, chat_id: uuid.UUID, message_id: int, *, regenerate: bool = False
    ) -> Pending | None:
        """The user message `message_id` of this chat, if the reply to it is missing or incomplete.

        With `regenerate`, the reply may be complete, but it must be the chat's last message: an answer
        in the middle of a conversation is what the later questions were asked about.
        """
        async with self._sessions() as db:
            message = await db.scalar(
                select(Message)
                .join(Chat, Chat.id == Message.chat_id)
                .where(
                    Message.id == message_id,
                    Message.chat_id == chat_id,
                    Message.role == "user",
                    Chat.session_id == session_id,
                )
            )
            if message is None:
                return None
            if regenerate:
                last = await db.scalar(select(func.max(Message.position)).where(Message.chat_id == chat_id))
                if last is not None and last > message.position + 1:
                    raise ReplyConflict
                return Pending(message, reply_position=message.position + 1)
            answered = await db.scalar(
                select(Message.id).where(
                    Message.chat_id == chat_id, Message.position == message.position + 1, Message.complete
                )
            )
            if answered is not None:
                raise ReplyConflict
            return Pending(message, reply_position=message.position + 1)

    async def history(self, chat_id: uuid.UUID, upto_position: int) -> list[Turn]:
        """The turns the model sees when answering the message at `upto_position`, oldest first.

        Replies cut short are left out: they end mid-sentence and would teach the model to do the same.
        """
        async with self._sessions() as db:
            rows = await db.execute(
                select(Message.role, Message.content)
                .where(Message.chat_id == chat_id, Message.position <= upto_position, Message.complete)
                .order_by(Message.position)
            )
            return [Turn(role, content) for role, content in rows]

    async def save_reply(
        self,
        chat_id: uuid.UUID,
        position: int,
        content: str,
        *,
        complete: bool,
        stopped: bool = False,
        replace: bool = False,
    ) -> Message:
        """Store the assistant's reply at its reserved position, replacing an earlier incomplete one
        (any earlier one with `replace`: a regenerated answer)."""
        now = utcnow()
        try:
            async with self._sessions.begin() as db:
                # The chat's row first, as in add_user_message: one lock order, no deadlocks.
                await db.execute(
                    update(Chat)
                    .where(Chat.id == chat_id)
                    .values(updated_at=now)
                    .execution_options(synchronize_session=False)
                )
                replaced = delete(Message).where(Message.chat_id == chat_id, Message.position == position)
                if not replace:
                    replaced = replaced.where(Message.complete.is_(False))
                await db.execute(replaced)
                message = Message(
                    chat_id=chat_id,
                    role="assistant",
                    content=content,
                    position=position,
                    complete=complete,
                    stopped=stopped,
                    created_at=now,
                )
                db.add(message)
        except IntegrityError as exc:
            raise ReplyConflict from exc
        return message

    async def ping(self) -> None:
        async with self._sessions() as db:
            await db.execute(select(1))
