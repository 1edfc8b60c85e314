"""What an attempt's outcome means, as a table: the one pure function the proxy asks after every attempt."""

from __future__ import annotations

import pytest
from multidict import CIMultiDict, CIMultiDictProxy

from gateway.drain import CutByShutdown
from gateway.outcome import SUCCEEDED, BreakerEffect, CooldownPolicy, Verdict, classify
from gateway.settings import BackendConfig
from gateway.upstream import (
    UpstreamAnswerTooLarge,
    UpstreamConnectionError,
    UpstreamError,
    UpstreamStatusError,
    UpstreamTimeout,
)

BACKEND = BackendConfig(name="a", url="http://127.0.0.1:9/v1")
POLICY = CooldownPolicy(default=10.0, maximum=60.0)
NOW = 1_700_000_000.0


def status(code: int, **headers: str) -> UpstreamStatusError:
    return UpstreamStatusError(BACKEND, code, CIMultiDictProxy(CIMultiDict(headers)), b"{}")


@pytest.mark.parametrize(
    ("error", "verdict"),
    [
        (None, SUCCEEDED),
        (status(400), Verdict("client_error", retry=False, breaker=BreakerEffect.SUCCESS)),
        (status(404), Verdict("client_error", retry=False, breaker=BreakerEffect.SUCCESS)),
        (status(429, **{"retry-after-ms": "1500"}),
         Verdict("throttled", retry=True, breaker=BreakerEffect.NEUTRAL, cooldown=1.5)),
        (status(429), Verdict("throttled", retry=True, breaker=BreakerEffect.NEUTRAL, cooldown=10.0)),
        (status(429, **{"retry-after-ms": "nan"}),
         Verdict("throttled", retry=True, breaker=BreakerEffect.NEUTRAL, cooldown=10.0)),
        (status(429, **{"retry-after": "3600"}),
         Verdict("throttled", retry=True, breaker=BreakerEffect.NEUTRAL, cooldown=60.0)),  # capped
        (status(503, **{"retry-after": "2"}),
         Verdict("throttled", retry=True, breaker=BreakerEffect.NEUTRAL, cooldown=2.0)),
        # A 503 with no hint is a backend in trouble: cooled down and counted toward the breaker.
        (status(503), Verdict("throttled", retry=True, breaker=BreakerEffect.FAILURE, cooldown=10.0)),
        (status(500), Verdict("failed", retry=True, breaker=BreakerEffect.FAILURE)),
        (status(502), Verdict("failed", retry=True, breaker=BreakerEffect.FAILURE)),
        (UpstreamConnectionError(BACKEND, "refused"), Verdict("failed", retry=True, breaker=BreakerEffect.FAILURE)),
        (UpstreamTimeout(BACKEND, "silent"), Verdict("failed", retry=True, breaker=BreakerEffect.FAILURE)),
        # Too much from the backend: its doing, told as such; not retried, not held against its breaker.
        (UpstreamAnswerTooLarge(BACKEND, 1024),
         Verdict("upstream_too_large", retry=False, breaker=BreakerEffect.SUCCESS)),
        # A stream the gateway cut itself as it stopped: not an answer, not the backend's fault either.
        (CutByShutdown(BACKEND), Verdict("gateway_shutdown", retry=False, breaker=BreakerEffect.NEUTRAL)),
    ],
    ids=["ok", "400", "404", "429-ms", "429-no-hint", "429-nan", "429-capped", "503-hint", "503-no-hint", "500",
         "502", "refused", "timeout", "too-large", "shutdown"],
)
def test_every_outcome_has_one_meaning(error: UpstreamError | None, verdict: Verdict) -> None:
    assert classify(error, POLICY, NOW) == verdict
