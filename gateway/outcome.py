"""What one upstream attempt's outcome means: retry elsewhere? cool the backend down, for how long? breaker?

One pure function of the error (None for an answer) and the time, so every rule is testable without sockets:

    outcome             retry   cooldown                         breaker
    ok                  no      -                                success (closes it)
    client_error        no      -                                success (the backend answered; the client erred)
    upstream_too_large  no      -                                success (a 2xx answer past the size cap,
                                                                 GATEWAY_MAX_RESPONSE_BYTES: the backend's doing,
                                                                 not the client's; another would answer as much)
    throttled           yes     what the upstream asked for,     neutral (busy, not broken), or failure for a
                                else the default; capped         503 without a retry hint
    failed              yes     -                                failure (counts toward ejection)
    gateway_shutdown    no      -                                neutral (a stream the gateway cut itself,
                                                                 its shutdown grace over: gateway.drain)

An attempt that never settles (the client went away, the task was cancelled) is neither a success nor a
failure: ``Lease.release`` without a verdict only gives a half-open probe back.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from gateway.cooldown import cooldown_from_headers
from gateway.drain import CutByShutdown
from gateway.upstream import UpstreamAnswerTooLarge, UpstreamError, UpstreamStatusError


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
    # "ok", "client_error", "upstream_too_large", "throttled", "failed": the log's and the metrics' word for it
    outcome: str
    retry: bool
    breaker: BreakerEffect
    cooldown: float | None = None


SUCCEEDED = Verdict("ok", retry=False, breaker=BreakerEffect.SUCCESS)
# The backend works (it answered 2xx); what it answered is more than we buffer. Not the client's mistake, so not
# told as one; not a breaker failure either (ejecting a backend for a long answer would punish the next client).
UPSTREAM_TOO_LARGE = Verdict("upstream_too_large", retry=False, breaker=BreakerEffect.SUCCESS)
GATEWAY_SHUTDOWN = Verdict("gateway_shutdown", retry=False, breaker=BreakerEffect.NEUTRAL)


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
    if isinstance(error, UpstreamAnswerTooLarge):
        return UPSTREAM_TOO_LARGE
    if isinstance(error, CutByShutdown):
        return GATEWAY_SHUTDOWN
    return Verdict("client_error", retry=False, breaker=BreakerEffect.SUCCESS)
