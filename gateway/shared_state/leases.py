"""This replica's leases in Redis: the backend of each, which ones are kept spare for a next request, and until
when each one is certainly still there.

A lease is a slot taken on a ``max_concurrency`` backend, and Redis counts it for every replica until it is given
back or expires. A request that ends may leave its lease here (``keep``) instead of giving it back; the next
request for that backend on this replica takes it (``take``) without asking Redis. The slot is counted in Redis
all along, so every replica's requests together still never exceed the cap: that is what keeps the shortcut exact.

"Certainly still there": Redis sets a lease's expiry to its own clock when the call runs, plus the TTL, and the
call runs after we sent it; so the lease lives at least until our clock when we sent it plus the TTL
(``alive_until``), as long as nobody wipes Redis. A spare is handed out only while that moment is more than
``margin`` away, the time in which the next renewal is due; past it (the process stalled, renewals failed) the
spare may be gone from Redis, and is forgotten rather than used: if it is in fact still there, it expires by
itself, since nobody renews it any more.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass


@dataclass(slots=True)
class _Spare:
    lease: str
    kept: float  # when its last request ended


class Leases:
    def __init__(self, margin: float) -> None:
        self.margin = margin
        self._backend: dict[str, str] = {}  # lease → backend: every lease of ours in Redis (renewed)
        self._alive_until: dict[str, float] = {}
        self._count: dict[str, int] = {}  # backend → our leases on it (used, spare, or lent to a call)
        self._spares: dict[str, list[_Spare]] = {}  # backend → its spare leases, the last one kept on top

    def __contains__(self, lease: object) -> bool:
        return lease in self._backend

    def __len__(self) -> int:
        return len(self._backend)

    def on(self, backend: str) -> int:
        """Our leases on ``backend``, whatever they are doing: Redis counts them all."""
        return self._count.get(backend, 0)

    def spares(self, backend: str) -> int:
        return len(self._spares.get(backend, ()))

    def all(self) -> list[tuple[str, str]]:
        """(backend, lease) of every lease to renew."""
        return [(backend, lease) for lease, backend in self._backend.items()]

    # -- changes -------------------------------------------------------------------------------------

    def add(self, lease: str, backend: str, alive_until: float) -> None:
        """A lease Redis just granted (``alive_until``: when the call was sent, plus the TTL)."""
        self._backend[lease] = backend
        self._alive_until[lease] = alive_until
        self._count[backend] = self._count.get(backend, 0) + 1

    def drop(self, lease: str) -> None:
        """Stop holding (and renewing) ``lease``: it was given back, or expired, or is left to expire."""
        backend = self._backend.pop(lease, None)
        if backend is None:
            return
        del self._alive_until[lease]
        self._count[backend] -= 1
        spares = self._spares.get(backend)
        if spares:
            self._spares[backend] = [spare for spare in spares if spare.lease != lease]

    def keep(self, lease: str, now: float) -> None:
        """``lease``'s request ended and the slot stays ours, for the next request on its backend."""
        self._spares.setdefault(self._backend[lease], []).append(_Spare(lease, now))

    def take(self, backend: str, now: float) -> str | None:
        """A spare lease on ``backend`` for a request, or None; spares that may have expired are forgotten."""
        spares = self._spares.get(backend)
        while spares:
            lease = spares.pop().lease
            if now < self._alive_until[lease] - self.margin:
                return lease
            self.drop(lease)
        return None

    def renewed(self, leases: list[tuple[str, str]], alive: list[bool], alive_until: float) -> None:
        """The answer to renewing ``leases``: those still there live on, the others are dropped."""
        for (_, lease), still in zip(leases, alive, strict=True):
            if lease not in self._backend:
                continue  # given back meanwhile
            if still:
                self._alive_until[lease] = alive_until
            else:
                self.drop(lease)

    def spares_of(self, backend: str) -> list[tuple[str, str]]:
        """Take out every spare of ``backend`` (somebody else waits for a slot there): (backend, lease) each."""
        return self._take_out(backend, lambda spare: True)

    def idle(self, before: float) -> list[tuple[str, str]]:
        """Take out the spares of every backend that were kept before ``before`` and not used since."""
        return [taken for name in list(self._spares) for taken in self._take_out(name, lambda s: s.kept < before)]

    def every_spare(self) -> list[tuple[str, str]]:
        """Take out every spare (shutting down, or Redis is gone)."""
        return [taken for name in list(self._spares) for taken in self._take_out(name, lambda spare: True)]

    def _take_out(self, backend: str, leaving: Callable[[_Spare], bool]) -> list[tuple[str, str]]:
        out = [(backend, spare.lease) for spare in self._spares.get(backend, ()) if leaving(spare)]
        for _, lease in out:
            self.drop(lease)
        return out
