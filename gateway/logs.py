"""JSON log lines on stdout, one per upstream attempt and one per client request.

structlog renders straight to bytes with orjson; loggers are cached on first use so a log call on the hot path
is a dict build and one write. Nothing here ever logs API keys or message contents: callers pass only routing
facts (request id, backend, host, status, timings, token counts).
"""

from __future__ import annotations

import logging
import os
import time

import orjson
import structlog

_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING, "error": logging.ERROR}


def configure_logging(level: str = "info") -> None:
    structlog.configure(
        processors=[
            _stamp,
            structlog.processors.format_exc_info,
            structlog.processors.JSONRenderer(serializer=orjson.dumps),
        ],
        wrapper_class=structlog.make_filtering_bound_logger(_LEVELS[level]),
        logger_factory=structlog.BytesLoggerFactory(_Stdout()),
        cache_logger_on_first_use=True,
    )
    # aiohttp's own access log would duplicate our canonical request line.
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)


class _UtcTimestamps:
    """ISO 8601 UTC timestamps with microseconds; the date-and-second part is formatted once per second."""

    __slots__ = ("_second", "_prefix")

    def __init__(self) -> None:
        self._second = -1
        self._prefix = ""

    def now(self) -> str:
        now = time.time()
        second = int(now)
        if second != self._second:
            self._second = second
            self._prefix = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
        return f"{self._prefix}.{int((now - second) * 1_000_000):06d}Z"


_timestamps = _UtcTimestamps()


def _stamp(logger: object, method_name: str, event_dict: dict) -> dict:
    # One processor instead of add_log_level + TimeStamper: this runs twice per proxied request.
    event_dict["level"] = method_name
    event_dict["timestamp"] = _timestamps.now()
    return event_dict


class _Stdout:
    """Whole lines straight to file descriptor 1: no Python-level buffering to lose on a crash, and whatever
    stdout is at the moment (a pipe to the log collector, or a test's capture) receives them."""

    def write(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            written = os.write(1, view)
            view = view[written:]

    def flush(self) -> None:
        pass


def get_logger() -> structlog.typing.FilteringBoundLogger:
    return structlog.get_logger("gateway")
