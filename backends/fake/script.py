"""Scripted answers: what the fake upstream does for one chat request.

A `Reply` with `status=200` and no `body` means "answer like a healthy model server". Anything else is
sent as scripted. The `throttled*` helpers produce each form of back-off hint the real services send, so
a client's Retry-After parsing can be tested one form at a time. Tweak a helper's result with
`dataclasses.replace(throttled_ms(100), delay=0.2)`.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import format_datetime
from typing import Any

from .errors import error_body


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


# Types of Reply's fields as they may appear in JSON (control endpoint, benchmark scripts).
_FIELD_CHECKS = {
    "status": _is_int,
    "headers": lambda v: isinstance(v, dict) and all(isinstance(x, str) for kv in v.items() for x in kv),
    "body": lambda v: v is None or isinstance(v, (dict, str)),
    "delay": lambda v: _is_int(v) or isinstance(v, float),
    "drop_connection": lambda v: isinstance(v, bool),
    "fail_after_chunks": lambda v: v is None or _is_int(v),
}


@dataclass(frozen=True)
class Reply:
    """One scripted answer to one chat completion request."""

    status: int = 200
    headers: Mapping[str, str] = field(default_factory=dict)
    # None: a normal completion for 200, an OpenAI/Azure-shaped error for anything else.
    # A dict is sent as JSON; a str is sent verbatim (text/plain unless `headers` set Content-Type).
    body: dict[str, Any] | str | None = None
    # Seconds to wait before answering, on top of the upstream's `latency`.
    delay: float = 0.0
    # Close the socket without any HTTP response: the client sees a connection error.
    drop_connection: bool = False
    # Abort the connection after this many SSE events (for a non-streaming completion: after the
    # headers and half of the body), as a backend that crashes mid-answer would.
    fail_after_chunks: int | None = None

    def __post_init__(self) -> None:
        # Fail where the script is written rather than when the request arrives.
        if not 100 <= self.status <= 599:
            raise ValueError(f"status must be an HTTP status code, got {self.status!r}")
        if self.delay < 0:
            raise ValueError(f"delay must be >= 0, got {self.delay!r}")
        if self.fail_after_chunks is not None and self.fail_after_chunks < 0:
            raise ValueError(f"fail_after_chunks must be >= 0, got {self.fail_after_chunks!r}")
        if self.body is not None and not isinstance(self.body, (dict, str)):
            raise ValueError(f"body must be a dict, a str or None, got {type(self.body).__name__}")

    @property
    def is_normal_completion(self) -> bool:
        return self.status == 200 and self.body is None and not self.drop_connection

    @classmethod
    def from_json(cls, data: Any) -> Reply:
        """Build a Reply from its JSON form: a status code, or an object with Reply's field names."""
        if _is_int(data):
            return cls(status=data)
        if not isinstance(data, dict):
            raise TypeError(f"a reply must be a status code or an object, got {data!r}")
        unknown = set(data) - _FIELD_CHECKS.keys()
        if unknown:
            raise ValueError(f"unknown reply fields {sorted(unknown)}; known: {sorted(_FIELD_CHECKS)}")
        for name, value in data.items():
            if not _FIELD_CHECKS[name](value):
                raise ValueError(f"reply field {name!r} has an invalid value: {value!r}")
        return cls(**data)

    def to_json(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "headers": dict(self.headers)}


def as_reply(item: Reply | int) -> Reply:
    """Scripts may say `[429, 503, 200]`; a bare status means "that status, default body"."""
    if isinstance(item, Reply):
        return item
    if _is_int(item):
        return Reply(status=item)
    raise TypeError(f"a script entry must be a Reply or a status code, got {item!r}")


def _seconds_header(seconds: float) -> str:
    # Whole seconds are what RFC 9110 allows; fractions are a non-standard but handy way to keep tests fast.
    return str(int(seconds)) if float(seconds).is_integer() else repr(float(seconds))


def _rate_limited(headers: dict[str, str], hint: str) -> Reply:
    message = f"Rate limit is exceeded. {hint}"
    return Reply(status=429, headers=headers, body=error_body(message, "rate_limit_exceeded", "429"))


def throttled(retry_after: float = 1) -> Reply:
    """429 with `Retry-After: <seconds>`."""
    value = _seconds_header(retry_after)
    return _rate_limited({"Retry-After": value}, f"Try again in {value} seconds.")


def throttled_ms(ms: int) -> Reply:
    """429 with Azure's `retry-after-ms: <milliseconds>` only."""
    return _rate_limited({"retry-after-ms": str(int(ms))}, f"Try again in {int(ms)} milliseconds.")


def throttled_date(when: datetime) -> Reply:
    """429 with `Retry-After: <HTTP date>`; a naive `when` is taken to be UTC."""
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    value = format_datetime(when.astimezone(UTC), usegmt=True)
    return _rate_limited({"Retry-After": value}, f"Try again after {value}.")


def throttled_ratelimit_reset(requests: str | None = "6m0s", tokens: str | None = "20ms") -> Reply:
    """429 with OpenAI's `x-ratelimit-reset-requests` / `x-ratelimit-reset-tokens` durations."""
    headers = {}
    if requests is not None:
        headers["x-ratelimit-reset-requests"] = requests
    if tokens is not None:
        headers["x-ratelimit-reset-tokens"] = tokens
    return _rate_limited(headers, "Wait for the rate limit window to reset.")


def unavailable(
    retry_after: float | None = None, message: str = "The service is temporarily unavailable."
) -> Reply:
    """503, optionally with `Retry-After: <seconds>`."""
    headers = {} if retry_after is None else {"Retry-After": _seconds_header(retry_after)}
    return Reply(status=503, headers=headers, body=error_body(message, "server_error", "503"))



def token_budget_exceeded(wait: float, remaining_tokens: int) -> Reply:
    """Azure's answer when a deployment's tokens-per-minute budget is spent: both Retry-After forms."""
    seconds = max(1, math.ceil(wait))
    headers = {
        "retry-after-ms": str(max(1, math.ceil(wait * 1000))),
        "Retry-After": str(seconds),
        "x-ratelimit-remaining-tokens": str(remaining_tokens),
    }
    message = (
        "Requests to the ChatCompletions_Create Operation have exceeded token rate limit of your current "
        f"pricing tier. Please retry after {seconds} seconds."
    )
    return Reply(status=429, headers=headers, body=error_body(message, "rate_limit_exceeded", "429"))
