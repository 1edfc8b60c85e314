"""JSON log lines on stdout: one per client request, and one per upstream attempt when a request failed over.

structlog renders straight to bytes with orjson (newline included); loggers are cached on first use, and the
lines of one event-loop turn go out in one write, so a log call on the hot path is a dict build and a list
append. Nothing here ever logs API keys or message contents: callers pass only routing
facts (request id, backend, host, status, timings, token counts).
"""

from __future__ import annotations

import asyncio
import atexit
import logging
import os
import time
from collections.abc import Callable, MutableMapping
from typing import Any, cast

import orjson
import structlog

_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING, "error": logging.ERROR}


def configure_logging(level: str = "info") -> None:
    structlog.configure(
        # The chain for events that carry an exception; every other event is rendered by LeanLogger itself.
        processors=[
            _stamp,
            structlog.processors.format_exc_info,
            structlog.processors.JSONRenderer(serializer=orjson.dumps, option=orjson.OPT_APPEND_NEWLINE),
        ],
        wrapper_class=LeanLogger.at(_LEVELS[level]),
        logger_factory=lambda *args: _lines,
        cache_logger_on_first_use=True,
    )
    # aiohttp's own access log would duplicate our canonical request line.
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)


def _configured_level() -> int:
    wrapper = structlog.get_config()["wrapper_class"]
    return wrapper.min_level if isinstance(wrapper, type) and issubclass(wrapper, LeanLogger) else logging.DEBUG


class LeanLogger(structlog.BoundLoggerBase):
    """structlog's bound-logger API, with the common case rendered in one step.

    Two lines per proxied request made structlog's generic path (context copy, processor chain, renderer
    dispatch) about a tenth of the gateway's CPU under load. An event without an exception is a dict of
    context, fields, level and timestamp, dumped by orjson: the same line the processor chain would write.
    Events with ``exc_info`` (``log.exception``) still take the chain, which formats the traceback.
    ``configure_logging`` installs a subclass made by ``at(level)``: the level is a class attribute, fixed for
    the loggers built from that configuration.
    """

    min_level = logging.DEBUG

    @classmethod
    def at(cls, min_level: int) -> type[LeanLogger]:
        return type(f"LeanLogger{min_level}", (cls,), {"min_level": min_level})

    def _emit(self, level: int, name: str, event: str | None, fields: dict[str, Any]) -> None:
        if level < self.min_level:
            return
        if "exc_info" in fields:
            args, kw = self._process_event(name, event, fields)
            self._logger.msg(*args, **kw)
            return
        self._logger.msg(_render({**self._context, **fields} if self._context else fields, event, name))

    def debug(self, event: str | None = None, **fields: Any) -> None:
        self._emit(logging.DEBUG, "debug", event, fields)

    def info(self, event: str | None = None, **fields: Any) -> None:
        self._emit(logging.INFO, "info", event, fields)

    def warning(self, event: str | None = None, **fields: Any) -> None:
        self._emit(logging.WARNING, "warning", event, fields)

    warn = warning

    def error(self, event: str | None = None, **fields: Any) -> None:
        self._emit(logging.ERROR, "error", event, fields)

    def critical(self, event: str | None = None, **fields: Any) -> None:
        self._emit(logging.CRITICAL, "critical", event, fields)

    def exception(self, event: str | None = None, **fields: Any) -> None:
        fields.setdefault("exc_info", True)
        self.error(event, **fields)


class _UtcTimestamps:
    """ISO 8601 UTC timestamps with microseconds; the date-and-second part is formatted once per second."""

    __slots__ = ("_prefix", "_second")

    def __init__(self) -> None:
        self._second = -1
        self._prefix = ""

    def now(self) -> str:
        second, micro = divmod(time.time_ns() // 1000, 1_000_000)
        if second != self._second:
            self._second = second
            self._prefix = time.strftime("%Y-%m-%dT%H:%M:%S.", time.gmtime(second))
        return "%s%06dZ" % (self._prefix, micro)  # noqa: UP031 (on every log line: the fastest formatting)


_timestamps = _UtcTimestamps()


def _render(line: dict[str, Any], event: str | None, level: str) -> bytes:
    """One JSON line: the fields, the event, and what _stamp adds (the same line the processor chain writes)."""
    line["event"] = event
    return orjson.dumps(_stamp(None, level, line), default=repr, option=orjson.OPT_APPEND_NEWLINE)


def _stamp(logger: object, method_name: str, event_dict: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    # What every line carries besides its fields, for the processor chain and _render alike (one step instead
    # of add_log_level + TimeStamper).
    event_dict["level"] = method_name
    event_dict["timestamp"] = _timestamps.now()
    return event_dict


class _JsonLines:
    """The structlog logger: rendered lines go to file descriptor 1, those of one event-loop turn together.

    Straight to the descriptor, not through ``sys.stdout``: no Python-level buffer to lose on a crash, and
    whatever fd 1 is at the moment (a pipe to the log collector, or a test's capture) receives them. Batching
    per loop turn turns the two writes every proxied request made into a few per turn for all of them; the
    lines wait at most until the loop's next turn, and whatever waits at exit is written then.
    """

    def __init__(self) -> None:
        self._pending: list[bytes] = []
        self._flush_on: asyncio.AbstractEventLoop | None = None  # the loop a flush is scheduled on

    def msg(self, line: bytes) -> None:
        self._pending.append(line)
        flush_on = self._flush_on
        if flush_on is not None and flush_on.is_running():
            return  # this turn's flush is already scheduled (asking for the running loop costs a system call)
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # no event loop (start-up, shutdown, a script): write at once
            self.flush()
            return
        if self._flush_on is not loop:  # (a loop that closed with a flush pending never runs it)
            self._flush_on = loop
            loop.call_soon(self.flush)

    debug = info = warning = warn = error = critical = exception = fatal = log = msg

    def flush(self) -> None:
        self._flush_on = None
        pending, self._pending = self._pending, []
        if len(pending) == 1:  # (at low load, the usual turn: nothing to batch)
            _write_all(pending[0])
            return
        batch: list[bytes] = []
        size = 0
        for line in pending:
            if size + len(line) > _ATOMIC_WRITE and batch:
                _write_all(b"".join(batch))
                batch, size = [], 0
            batch.append(line)
            size += len(line)
        if batch:
            _write_all(b"".join(batch))


# Writes up to PIPE_BUF bytes to a pipe are atomic: with several workers sharing one stdout pipe, a line is
# never cut by another process's, because no write (but a single line longer than this) exceeds it.
_ATOMIC_WRITE = 4096


def _write_all(data: bytes) -> None:
    written = os.write(1, data)
    if written == len(data):  # (a pipe or file takes a line whole; only a full pipe takes less)
        return
    view = memoryview(data)[written:]
    while view:
        written = os.write(1, view)
        view = view[written:]


_lines = _JsonLines()
atexit.register(_lines.flush)


def milliseconds(seconds: float) -> float:
    """A duration for a log field: milliseconds with two decimals (``round(x, 2)`` costs twice as much)."""
    return int(seconds * 100_000 + 0.5) / 100


def get_logger() -> structlog.typing.FilteringBoundLogger:
    """A logger that follows ``configure_logging`` whenever it runs (structlog's lazy proxy)."""
    return cast(structlog.typing.FilteringBoundLogger, structlog.get_logger("gateway"))


def event_writer(event: str, level: str = "info") -> Callable[[dict[str, Any]], None]:
    """``write(fields)`` for the one line written for every request: the same line as
    ``get_logger().info(event, **fields)``, without building keyword arguments and passing through the bound
    logger (two fifths of the line's cost). ``fields`` becomes the line. Bound to the configured level when
    called, as ``bound_logger`` is: create it with the app."""
    if _LEVELS[level] < _configured_level():
        return _write_nothing

    def write(fields: dict[str, Any]) -> None:
        # What _render and _stamp do, inline: on every request's path, each call shows.
        fields["event"] = event
        fields["level"] = level
        fields["timestamp"] = _timestamps.now()
        _lines.msg(orjson.dumps(fields, default=repr, option=orjson.OPT_APPEND_NEWLINE))

    return write


def _write_nothing(fields: dict[str, Any]) -> None:
    return None


def bound_logger() -> LeanLogger:
    """A logger built from the configuration of this moment, for what is created with the app and logs on
    every request: no lazy proxy between a call and its line (the proxy was a fifth of a log call's cost)."""
    return cast(LeanLogger, structlog.get_logger("gateway").bind())
