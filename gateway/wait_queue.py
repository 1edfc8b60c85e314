"""Requests waiting for a free backend slot, and who is served first when one frees up.

A freed slot is handed over, already taken, to one waiter (no request arriving meanwhile can barge in). A
request whose conversation is cached on that backend goes first: it is the shortest job (its history needs no
re-reading), and serving short jobs first lowers everyone's wait (bench.affinity: turn-3 TTFT 2.5 s first come
first served, 0.9 s this way). Aging bounds the cost for the others: a request that has queued longer than
``aging`` seconds outranks them. Requests pinned to another backend are never handed this one, even if it would
idle: moving a conversation means re-reading its whole history, while its own backend frees up within one
answer.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable, Iterable

from gateway.backend_state import BackendState

# What a waiter is told: the backend whose slot it was handed, True to look again (something changed), or
# False (deadline passed, or the queue is full).
Wakeup = BackendState | bool


class _Waiter:
    __slots__ = ("accepts", "future", "since")

    def __init__(self, future: asyncio.Future[Wakeup], accepts: frozenset[str], since: float) -> None:
        self.future = future
        self.accepts = accepts
        self.since = since


class WaitQueue:
    def __init__(
        self,
        backends: Iterable[str],
        *,
        max_size: int,
        aging: float,
        now: Callable[[], float],
        give_back: Callable[[BackendState], None],
    ) -> None:
        """``give_back`` returns a slot that was handed to a waiter who had already given up."""
        self._general: deque[_Waiter] = deque()
        self._pinned: dict[str, deque[_Waiter]] = {name: deque() for name in backends}
        self._max_size = max_size
        self._aging = aging
        self._now = now
        self._give_back = give_back
        # How many wait, in all queues: read as an attribute (no call) on every request's release.
        self.waiting = 0

    def __len__(self) -> int:
        return self.waiting

    def pinned_to(self, backend: str) -> int:
        return len(self._pinned[backend])

    def anyone_for(self, backend: str) -> bool:
        return bool(self._general) or bool(self._pinned[backend])

    async def wait(self, deadline: float, accepts: frozenset[str], pinned: str | None = None) -> Wakeup:
        """Queue until a slot on one of ``accepts`` (or on ``pinned`` alone) is handed over, or look-again."""
        remaining = deadline - self._now()
        if remaining <= 0 or len(self) >= self._max_size:
            return False
        queue = self._general if pinned is None else self._pinned[pinned]
        waiter = _Waiter(asyncio.get_running_loop().create_future(), accepts, self._now())
        queue.append(waiter)
        self.waiting += 1
        delivered = False
        try:
            async with asyncio.timeout(remaining):
                result = await waiter.future
            delivered = True
            return result
        except TimeoutError:
            return False
        finally:
            if not delivered:
                if waiter.future.done() and not waiter.future.cancelled():
                    handed = waiter.future.result()
                    if isinstance(handed, BackendState):
                        self._give_back(handed)  # handed over as we gave up: pass it on, don't leak it
                else:
                    waiter.future.cancel()
            try:
                queue.remove(waiter)
            except ValueError:
                pass  # (handed a slot or woken: already taken out, and counted out, there)
            else:
                self.waiting -= 1

    def next_for(self, backend: str) -> _Waiter | None:
        """Take the waiter that gets ``backend``'s freed slot out of its queue, or None if nobody can use it."""
        pinned = _first_accepting(self._pinned[backend], backend)
        general = _first_accepting(self._general, backend)
        if pinned is not None and (general is None or self._now() - general.since <= self._aging):
            self._pinned[backend].remove(pinned)
            self.waiting -= 1
            return pinned
        if general is not None:
            self._general.remove(general)
            self.waiting -= 1
            return general
        return None

    def wake_all(self) -> None:
        """Something changed (a backend came back, or one became unusable): every waiter looks again."""
        for queue in (self._general, *self._pinned.values()):
            while queue:
                waiter = queue.popleft()
                self.waiting -= 1
                if not waiter.future.done():
                    waiter.future.set_result(True)


def hand_over(waiter: _Waiter, state: BackendState) -> None:
    waiter.future.set_result(state)


def _first_accepting(queue: deque[_Waiter], backend: str) -> _Waiter | None:
    """The oldest live waiter in ``queue`` that may use ``backend`` (its model, not already tried)."""
    for waiter in queue:
        if not waiter.future.done() and backend in waiter.accepts:
            return waiter
    return None
