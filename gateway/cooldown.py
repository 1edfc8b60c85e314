"""How long a throttled upstream asks us to leave it alone, read from every header the services use.

Azure OpenAI and OpenAI say it in several ways, sometimes at once:

- ``retry-after-ms: 1500``                      milliseconds (Azure, most precise: preferred)
- ``Retry-After: 7`` / ``Retry-After: <HTTP-date>``  seconds or an absolute time (RFC 9110)
- ``x-ratelimit-reset-requests: 6m0s``           Go-style durations (OpenAI): ``1h2m3.5s``, ``20ms``, ``0.5s``
- ``x-ratelimit-reset-tokens: 20ms``

The longest of the reset headers wins (both limits must have reset before a retry can succeed). A value that
is not a finite number of seconds (``nan``, ``inf``, ``1e999``, garbage) names no time: the caller's default
cooldown applies, never none at all.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from email.utils import parsedate_to_datetime

_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|us|µs|ns|h|m|s)")
_UNIT_SECONDS = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 1e-3, "us": 1e-6, "µs": 1e-6, "ns": 1e-9}


def _seconds(value: float) -> float | None:
    """A usable number of seconds (negative means now), or None for nan and infinities."""
    return max(value, 0.0) if math.isfinite(value) else None


def parse_duration(text: str) -> float | None:
    """``6m0s`` → 360.0, ``20ms`` → 0.02, ``1.5`` → 1.5 (bare numbers are seconds); None if unreadable."""
    text = text.strip().lower()
    if not text:
        return None
    try:
        return _seconds(float(text))
    except ValueError:
        pass
    position, total = 0, 0.0
    for match in _DURATION_PART.finditer(text):
        if match.start() != position:
            return None
        total += float(match.group(1)) * _UNIT_SECONDS[match.group(2)]
        position = match.end()
    return _seconds(total) if position == len(text) else None


def parse_retry_after(value: str, now_wall: float) -> float | None:
    """``Retry-After`` as delta-seconds or an HTTP-date (relative to ``now_wall``, a UNIX time)."""
    value = value.strip()
    try:
        return _seconds(float(value))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when is None:
        return None
    return max(when.timestamp() - now_wall, 0.0)


def cooldown_from_headers(headers: Mapping[str, str], now_wall: float) -> float | None:
    """Seconds the upstream asked for, or None when it named no time (the caller's default applies)."""
    retry_after_ms = headers.get("retry-after-ms")
    if retry_after_ms is not None:
        try:
            seconds = _seconds(float(retry_after_ms) / 1000.0)
        except ValueError:
            seconds = None
        if seconds is not None:
            return seconds
    retry_after = headers.get("retry-after")
    if retry_after is not None:
        seconds = parse_retry_after(retry_after, now_wall)
        if seconds is not None:
            return seconds
    resets = [
        seconds
        for name in ("x-ratelimit-reset-requests", "x-ratelimit-reset-tokens")
        if (value := headers.get(name)) is not None and (seconds := parse_duration(value)) is not None
    ]
    return max(resets) if resets else None
