"""The one seam to Redis: each method is one script call (one round trip), and any Redis trouble — refused,
reset, timed out, a script error — leaves it as ``StoreUnavailable``, which the caller answers by failing open.

The scripts and the key layout are in ``scripts.py``; this module only packs their arguments and unpacks
their answers into values.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import NoScriptError, RedisError, ResponseError

from gateway.shared_state import scripts


class StoreUnavailable(Exception):
    """Redis did not answer usefully in time; the reason is the message."""


@dataclass(frozen=True, slots=True)
class BackendSnapshot:
    """One backend's shared state as the server saw it; durations are seconds from that moment."""

    cooling: float  # seconds of cooldown left
    recovering: bool  # it was throttled and nobody has succeeded on it since
    failures: int  # consecutive failures
    ejections: int
    ejected: float  # seconds of ejection left
    probe_held: bool  # a single probe (half-open, or first try after a cooldown) is in flight somewhere
    leases: int  # requests in flight on it, all replicas together

    @classmethod
    def from_values(cls, values: Sequence[Any]) -> BackendSnapshot:
        cooling_ms, recovering, failures, ejections, ejected_ms, probe_held, leases = (int(v) for v in values)
        return cls(cooling_ms / 1000, recovering == 1, failures, ejections, ejected_ms / 1000, probe_held == 1,
                   leases)

    @property
    def clean(self) -> bool:
        """Nothing to respect: a request may go there on the local view alone (no lease is needed)."""
        return not (self.cooling > 0 or self.recovering or self.failures or self.ejections or self.probe_held)


SNAPSHOT_SIZE = len(scripts.SNAPSHOT_FIELDS)


@dataclass(frozen=True, slots=True)
class Candidate:
    name: str
    max_concurrency: int | None
    weight: int
    priority: int


@dataclass(frozen=True, slots=True)
class Acquired:
    backend: str | None  # the backend whose lease was taken, None when no candidate could take one
    affinity: str | None  # "hit", "moved" or "new" when a conversation key was given
    pinned: str | None  # the backend the conversation went to last, if it has one
    snapshots: dict[str, BackendSnapshot]


@dataclass(frozen=True, slots=True)
class BreakerRule:
    eject_after_failures: int
    eject_base: float
    eject_max: float


class RedisStore:
    def __init__(self, redis: Redis, *, namespace: str = "gw") -> None:
        self._redis = redis
        self._prefix = f"{{{namespace}}}:{scripts.VERSION}:"
        self.channel = self._prefix + "events"
        self.wants = self._prefix + "wants"
        # Called by SHA (EVALSHA); loaded by ``prepare`` and again whenever the server answers NOSCRIPT.
        self._acquire = redis.register_script(scripts.ACQUIRE)
        self._release = redis.register_script(scripts.RELEASE)
        self._renew = redis.register_script(scripts.RENEW)
        self._snapshot = redis.register_script(scripts.SNAPSHOT)
        self._batch = _Batch(redis)

    @property
    def redis(self) -> Redis:
        return self._redis

    def state_key(self, backend: str) -> str:
        return f"{self._prefix}b:{backend}"

    def lease_key(self, backend: str) -> str:
        return f"{self._prefix}l:{backend}"

    def waiting_key(self, backend: str) -> str:
        return f"{self._prefix}w:{backend}"

    def affinity_key(self, conversation: bytes) -> str:
        return f"{self._prefix}a:{conversation.hex()}"

    async def prepare(self, connections: int = 4) -> None:
        """Load the scripts and open a few pooled connections ahead of the first request, whose deadline is too
        short for a TCP (and TLS) handshake, an AUTH and a script upload on a busy machine."""
        try:
            for script in (self._acquire, self._release, self._renew, self._snapshot):
                await self._redis.script_load(script.script)
            await asyncio.gather(*(self._redis.ping() for _ in range(connections)))
        except (TimeoutError, RedisError, OSError) as exc:
            raise StoreUnavailable(f"{type(exc).__name__}: {exc}") from exc

    async def acquire(
        self, candidates: Sequence[Candidate], lease: str, lease_ttl: float, *,
        conversation: bytes | None = None, affinity_ttl: float = 3600.0, spares: Mapping[str, str] | None = None,
        origin: str = "",
    ) -> Acquired:
        """Take a lease on the best eligible candidate (``candidates`` in order of preference) in one call.

        ``spares``: backend → a lease the caller holds there unused; it counts as free, and the new lease takes
        its place if that backend is taken. A refusal announces the full candidates on ``wants`` as ``origin``.
        """
        spares = spares or {}
        keys = [self.affinity_key(conversation) if conversation is not None else self._prefix + "a:-"]
        args: list[Any] = [lease, _ms(lease_ttl), _ms(affinity_ttl), int(conversation is not None), len(candidates),
                           self.wants, origin or "-"]
        for c in candidates:
            keys += (self.state_key(c.name), self.lease_key(c.name), self.waiting_key(c.name))
            args += (c.name, c.max_concurrency or 0, c.weight, c.priority, spares.get(c.name, ""))
        reply = await self._call(self._acquire, keys, args, lambda late: self._give_back(candidates, lease, spares, late))
        index, outcome, pinned = int(reply[0]), _text(reply[1]), _text(reply[2])
        snapshots = {
            c.name: BackendSnapshot.from_values(reply[3 + i * SNAPSHOT_SIZE: 3 + (i + 1) * SNAPSHOT_SIZE])
            for i, c in enumerate(candidates)
        }
        return Acquired(candidates[index - 1].name if index else None, outcome or None, pinned or None, snapshots)

    async def release(
        self, backend: str, lease: str | None, effect: str, *, breaker: BreakerRule, cooldown: float = 0.0,
        publish: bool = True, origin: str = "",
    ) -> BackendSnapshot:
        """Give the lease back (if any) and record the attempt: its breaker ``effect`` (ok, failed, neutral)
        and the ``cooldown`` the upstream asked for (0: none)."""
        keys = [self.state_key(backend), self.lease_key(backend), self.waiting_key(backend)]
        args = [lease or "", effect, _ms(cooldown), breaker.eject_after_failures, _ms(breaker.eject_base),
                _ms(breaker.eject_max), backend, self.channel if publish else "", origin or "-"]
        return BackendSnapshot.from_values(await self._call(self._release, keys, args))

    async def renew(self, leases: Sequence[tuple[str, str]], lease_ttl: float) -> list[bool]:
        """Extend ``(backend, lease)`` pairs still held; whether each one still was (an expired one is not
        taken back)."""
        if not leases:
            return []
        keys: list[str] = []
        for backend, _ in leases:
            keys += (self.state_key(backend), self.lease_key(backend))
        reply = await self._call(self._renew, keys, [_ms(lease_ttl), *(lease for _, lease in leases)])
        return [int(alive) == 1 for alive in reply]

    async def snapshot(self, backends: Sequence[str]) -> dict[str, BackendSnapshot]:
        keys: list[str] = []
        for backend in backends:
            keys += (self.state_key(backend), self.lease_key(backend))
        reply = await self._call(self._snapshot, keys, [])
        return {
            name: BackendSnapshot.from_values(reply[i * SNAPSHOT_SIZE: (i + 1) * SNAPSHOT_SIZE])
            for i, name in enumerate(backends)
        }

    async def _call(self, script: Any, keys: list[str], args: list[Any],
                    abandoned: Callable[[Any], None] | None = None) -> Any:
        """One script call. Given up on (the caller's deadline), it still runs: ``abandoned`` gets its reply."""
        future = self._batch.send(script, keys, args)
        try:
            return await asyncio.shield(future)
        except (TimeoutError, RedisError, OSError) as exc:
            raise StoreUnavailable(f"{type(exc).__name__}: {exc}") from exc
        except asyncio.CancelledError:
            # Given up on while the call runs, or just as its answer came in (then nobody would read it): either
            # way ``abandoned`` gets the answer, so that a lease it took is not left to its TTL.
            future.add_done_callback(lambda done: _late(done, abandoned))
            raise

    def _give_back(self, candidates: Sequence[Candidate], lease: str, spares: Mapping[str, str], reply: Any) -> None:
        """An acquire answered after its request stopped waiting: if it took a lease, free it now rather than
        let it count as somebody's request until its TTL runs out; and the spares lent to it that it did not
        replace, which the caller stopped keeping when it gave up."""
        index = int(reply[0])
        taken = candidates[index - 1].name if index else None
        given_back = [(backend, spare) for backend, spare in spares.items() if backend != taken]
        if taken is not None:
            given_back.append((taken, lease))
        for backend, freed in given_back:
            args = [freed, "neutral", 0, 1, 0, 0, backend, "", "-"]
            future = self._batch.send(self._release, [self.state_key(backend), self.lease_key(backend),
                                                      self.waiting_key(backend)], args)
            future.add_done_callback(lambda done: _late(done, None))


def _late(future: asyncio.Future[Any], abandoned: Callable[[Any], None] | None) -> None:
    if future.cancelled() or future.exception() is not None:
        return  # (retrieved: nobody else will)
    if abandoned is not None:
        abandoned(future.result())


class _Batch:
    """The script calls made during one turn of the event loop, sent together as one pipeline.

    Under load many requests take and give back leases in the same turn: one write, one read and one
    connection from the pool for all of them, instead of one each (redis-py spends more time per call than
    Redis does). Alone, a call costs what it would have. A script the server does not have (it restarted)
    is loaded and the batch sent again, once.
    """

    def __init__(self, redis: Redis) -> None:
        self._redis = redis
        self._pending: list[tuple[Any, list[str], list[Any], asyncio.Future[Any]]] = []
        self._tasks: set[asyncio.Task[None]] = set()

    def send(self, script: Any, keys: list[str], args: list[Any]) -> asyncio.Future[Any]:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        if not self._pending:
            loop.call_soon(self._flush)
        self._pending.append((script, keys, args, future))
        return future

    def _flush(self) -> None:
        batch, self._pending = self._pending, []
        task = asyncio.get_running_loop().create_task(self._execute(batch))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _execute(self, batch: list[tuple[Any, list[str], list[Any], asyncio.Future[Any]]]) -> None:
        try:
            replies = await self._pipeline(batch)
            if any(isinstance(reply, NoScriptError) for reply in replies):
                for script in {id(item[0]): item[0] for item in batch}.values():
                    await self._redis.script_load(script.script)
                replies = await self._pipeline(batch)
        except (TimeoutError, RedisError, OSError) as exc:
            for *_, future in batch:
                if not future.done():
                    future.set_exception(exc)
            return
        for (*_, future), reply in zip(batch, replies, strict=True):
            if future.done():
                continue
            if isinstance(reply, Exception):
                future.set_exception(reply)
            else:
                future.set_result(reply)

    async def _pipeline(self, batch: list[tuple[Any, list[str], list[Any], asyncio.Future[Any]]]) -> list[Any]:
        if len(batch) == 1:
            # Alone, a call costs redis-py less without a pipeline around it (measured on the bench machine:
            # 156 µs of CPU instead of 199, medians of 15 alternating rounds).
            script, keys, args, _ = batch[0]
            try:
                return [await self._redis.evalsha(script.sha, len(keys), *keys, *args)]
            except ResponseError as exc:  # the script's own error, or NOSCRIPT: an answer, as in a pipeline
                return [exc]
        pipe = self._redis.pipeline(transaction=False)
        for script, keys, args, _ in batch:
            pipe.evalsha(script.sha, len(keys), *keys, *args)
        return list(await pipe.execute(raise_on_error=False))


def parse_event(data: bytes | str) -> tuple[str, BackendSnapshot, str] | None:
    """A published state change (``<backend> <snapshot fields...> <origin>``), or None if it is not one."""
    text = data.decode() if isinstance(data, bytes) else data
    parts = text.split(" ")
    if len(parts) != 2 + SNAPSHOT_SIZE:
        return None
    try:
        return parts[0], BackendSnapshot.from_values(parts[1:-1]), parts[-1]
    except ValueError:
        return None


def parse_want(data: bytes | str) -> tuple[str, list[str]] | None:
    """A refusal's announcement (``<origin> <backend>...``): who was refused, and the full backends it wanted."""
    parts = (data.decode() if isinstance(data, bytes) else data).split(" ")
    return (parts[0], parts[1:]) if len(parts) >= 2 else None


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _ms(seconds: float) -> int:
    return max(int(seconds * 1000), 0)
