"""What the gateway knows about one backend right now: load, cooldown, circuit breaker, health.

Pure bookkeeping on an injected ``now``; no I/O, no clock reads, so every rule is testable without sockets.

Circuit breaker: ``eject_after_failures`` consecutive connection errors / timeouts / 5xx open the circuit for
``eject_base * 2**(ejections-1)`` seconds (capped at ``eject_max``). When that period is over the circuit is
half-open: exactly one probe request may go through; success closes it, failure ejects again for longer.
Throttling (429, or 503 with a retry hint) is not a failure of the backend: it only cools it down for the time
the upstream asked for. When that time is over, one request goes first (a probe, as for the breaker) and the
others wait until it is settled, so a burst does not land on the backend the instant its cooldown ends.

A probe whose request never settles (the client disconnected, the task was cancelled) counts as neither
success nor failure: ``abandon`` gives the probe back and the next request probes instead. Without that, an
``openai``/``azure`` backend (which has no health check to reset it) would stay ejected for good.

This object is the interface a shared (multi-replica) implementation replaces: the balancer reads
``available``/``condition``/``in_flight`` on every request and records through ``start_request``,
``finish_request``, ``settle``, ``abandon`` and ``record_health``.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from gateway.llama_server import ReportedLoad
from gateway.outcome import BreakerEffect, Verdict
from gateway.settings import BackendConfig


class BackendCondition(StrEnum):
    HEALTHY = "healthy"
    COOLING = "cooling"
    EJECTED = "ejected"
    UNHEALTHY = "unhealthy"  # failed its active health check, or still loading its model


@dataclass(frozen=True, slots=True)
class BreakerPolicy:
    eject_after_failures: int = 3
    eject_base: float = 5.0
    eject_max: float = 300.0


class BackendState:
    __slots__ = (
        "config",
        "consecutive_failures",
        "cooldown_until",
        "ejected_until",
        "ejections",
        "foreign_load",
        "health_detail",
        "in_flight",
        "max_concurrency",
        "name",
        "priority",
        "probe_in_flight",
        "reachable",
        "recovering",
        "reported_load",
        "weight",
    )

    def __init__(self, config: BackendConfig) -> None:
        self.config = config
        self.name = config.name
        self.priority = config.priority
        self.weight = config.weight
        self.max_concurrency = config.max_concurrency
        self.in_flight = 0
        self.cooldown_until = 0.0
        self.consecutive_failures = 0
        self.ejections = 0
        self.ejected_until = 0.0
        self.probe_in_flight = False
        self.recovering = False  # throttled since its last success: the next request is a probe
        self.reachable = True
        self.health_detail = ""
        # What a llama-server backend last said of its own load (gateway/health.py), and how much of it is
        # not ours: requests of other clients (another gateway replica), which the balancer counts as load.
        self.reported_load: ReportedLoad | None = None
        self.foreign_load = 0

    # -- reading ---------------------------------------------------------------------------------------

    def circuit_open(self) -> bool:
        return self.ejections > 0 and self.consecutive_failures >= 1

    def condition(self, now: float) -> BackendCondition:
        if not self.reachable:
            return BackendCondition.UNHEALTHY
        if self.circuit_open() and (now < self.ejected_until or self.probe_in_flight):
            return BackendCondition.EJECTED
        if now < self.cooldown_until or self.probe_in_flight:
            return BackendCondition.COOLING  # (or its cooldown is over and the probe after it is out)
        return BackendCondition.HEALTHY

    def available(self, now: float) -> bool:
        """Whether it can take a request now: ``condition`` is healthy and it has a free slot.

        The same rules as ``condition`` and ``has_free_slot`` in one expression, because it is asked for every
        backend on every request; ``skip_reason`` says why not.
        """
        return (
            self.reachable
            and now >= self.cooldown_until
            and not self.probe_in_flight
            and not (self.ejections and self.consecutive_failures and now < self.ejected_until)
            and (self.max_concurrency is None or self.in_flight < self.max_concurrency)
        )

    def has_free_slot(self) -> bool:
        return self.max_concurrency is None or self.in_flight < self.max_concurrency

    def skip_reason(self, now: float) -> str | None:
        """Why this backend can't take a request now, or None if it can."""
        condition = self.condition(now)
        if condition is BackendCondition.COOLING:
            if now >= self.cooldown_until:
                return "cooled down, probe in flight"
            return f"cooling down for {self.cooldown_until - now:.3f}s"
        if condition is BackendCondition.EJECTED:
            if self.probe_in_flight:
                return "ejected, probe in flight"
            return f"ejected for {self.ejected_until - now:.3f}s"
        if condition is BackendCondition.UNHEALTHY:
            return f"unhealthy ({self.health_detail or 'health check failed'})"
        if not self.has_free_slot():
            return f"busy ({self.in_flight}/{self.max_concurrency})"
        return None

    def available_at(self, now: float) -> float:
        """The earliest time this backend may take traffic again (only meaningful when cooling/ejected)."""
        return max(self.cooldown_until, self.ejected_until if self.circuit_open() else 0.0, now)

    # -- recording -------------------------------------------------------------------------------------

    def start_request(self) -> None:
        self.in_flight += 1
        if self.recovering or (self.ejections and self.consecutive_failures):  # circuit_open(), without the call
            # Half-open: this request is the probe; nobody else gets through until it is decided.
            self.probe_in_flight = True

    def finish_request(self) -> None:
        self.in_flight -= 1

    def settle(self, verdict: Verdict, now: float, policy: BreakerPolicy) -> float | None:
        """Record an attempt's verdict; returns the ejection period when it opened the circuit."""
        if verdict.cooldown is not None:
            self.record_throttled(now, verdict.cooldown)
        if verdict.breaker is BreakerEffect.FAILURE:
            return self.record_failure(now, policy)
        if verdict.breaker is BreakerEffect.SUCCESS:
            self.record_success()
        return None

    def accepted(self) -> None:
        """It answered 2xx (status and headers; the body may take a while): after a cooldown, that is the probe's
        answer, and the others need not wait for the whole generation. The breaker's probe waits for the end."""
        if self.recovering and not self.circuit_open():
            self.recovering = False
            self.probe_in_flight = False

    def abandon(self) -> None:
        """An attempt ended without a verdict (cancelled): if it was the probe, the next request probes."""
        self.probe_in_flight = False

    def record_success(self) -> None:
        self.consecutive_failures = 0
        self.ejections = 0
        self.probe_in_flight = False
        self.recovering = False

    def record_throttled(self, now: float, seconds: float) -> None:
        self.cooldown_until = max(self.cooldown_until, now + seconds)
        self.probe_in_flight = False
        self.recovering = True

    def record_failure(self, now: float, policy: BreakerPolicy) -> float | None:
        """Count a connection error / timeout / 5xx; returns the ejection period when the circuit opens."""
        self.consecutive_failures += 1
        was_probe = self.probe_in_flight
        self.probe_in_flight = False
        if was_probe or self.consecutive_failures >= policy.eject_after_failures:
            self.ejections += 1
            period = min(policy.eject_base * 2.0 ** (self.ejections - 1), policy.eject_max)
            self.ejected_until = now + period
            return period
        return None

    def record_reported_load(self, load: ReportedLoad | None) -> None:
        """The backend's own count of requests processing and waiting, minus ours at the moment it answered."""
        self.reported_load = load
        self.foreign_load = 0 if load is None else max(0, load.processing + load.deferred - self.in_flight)

    def record_health(self, reachable: bool, detail: str = "") -> bool:
        """Store an active health-check result; returns True when it changed."""
        changed = reachable != self.reachable
        self.reachable = reachable
        self.health_detail = detail
        if reachable and changed:
            # It came back (restarted, finished loading): forget old failures so it is used at once.
            self.consecutive_failures = 0
            self.ejections = 0
            self.probe_in_flight = False
            self.recovering = False
        return changed
