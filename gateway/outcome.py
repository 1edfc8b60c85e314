"""What one upstream attempt's outcome means: retry elsewhere? cool the backend down, for how long? breaker?

One pure function of the error (None for an answer) and the time, so every rule is testable without sockets:

    outcome        retry   cooldown                         breaker
    ok             no      -                                success (closes it)
    client_error   no      -                                success (the backend answered; the client erred)
    throttled      yes     what the upstream asked for,     neutral (busy, not broken), or failure for a
                           else the default; capped         503 without a retry hint
    failed         yes     -                                failure (counts toward ejection)

An attempt that never settles (the client went away, the task was cancelled) is neither a success nor a
failure: ``Lease.release`` without a verdict only gives a half-open probe back.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from gateway.cooldown import cooldown_from_headers
from gateway.upstream import UpstreamError, UpstreamStatusError


class BreakerEffect(Enum):
    SUCCESS = "success"
    FAILURE = "failure"
    NEUTRAL = "neutral"


@dataclass(frozen=True, slots=True)
class CooldownPolicy:
    default: float = 10.0  # when a throttled upstream names no time (or names one we cannot read)
    maximum: float = 600.0


@dataclass(frozen=True, slots=True)
class Verdict:
    outcome: str  # "ok", "client_error", "throttled", "failed": the log's and the metrics' word for it
    retry: bool
    breaker: BreakerEffect
    cooldown: float | None = None


SUCCEEDED = Verdict("ok", retry=False, breaker=BreakerEffect.SUCCESS)


def classify(error: UpstreamError | None, policy: CooldownPolicy, now_wall: float) -> Verdict:
    if error is None:
        return SUCCEEDED
    breaker = BreakerEffect.FAILURE if error.counts_as_failure else BreakerEffect.NEUTRAL
    if error.throttled:
        asked = cooldown_from_headers(error.headers, now_wall) if isinstance(error, UpstreamStatusError) else None
        cooldown = min(asked if asked is not None else policy.default, policy.maximum)
        return Verdict("throttled", retry=error.retryable, breaker=breaker, cooldown=cooldown)
    if error.retryable:
        return Verdict("failed", retry=True, breaker=breaker)
    return Verdict("client_error", retry=False, breaker=BreakerEffect.SUCCESS)
