"""Prometheus metrics, one registry per app (no process globals, so tests can build many apps).

Per-request series are pre-bound per backend (``.labels()`` is looked up once, not on every request). Gauges
that describe the present — in-flight requests, queue depth, backend state — are computed at scrape time from
the balancer, so the hot path never updates them and they can never go stale when a cooldown simply expires.
"""

from __future__ import annotations

from collections.abc import Iterator
from functools import lru_cache

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from gateway.backend_state import BackendCondition
from gateway.balancer import Balancer

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)


class GatewayMetrics:
    def __init__(self, balancer: Balancer) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter(
            "gateway_requests", "Client requests by the backend that answered and the final status",
            ["backend", "status"], registry=self.registry,
        )
        self.attempts = Counter(
            "gateway_upstream_attempts", "Upstream attempts by outcome (ok, throttled, failed, client_error)",
            ["backend", "outcome"], registry=self.registry,
        )
        self.retries = Counter(
            "gateway_retries", "Attempts that failed over to another backend, by the backend that failed",
            ["backend"], registry=self.registry,
        )
        self.duration = Histogram(
            "gateway_request_duration_seconds", "Whole request latency through the gateway",
            ["backend"], buckets=LATENCY_BUCKETS, registry=self.registry,
        )
        self.ttfb = Histogram(
            "gateway_upstream_ttfb_seconds", "Time from sending upstream to the first response byte",
            ["backend"], buckets=LATENCY_BUCKETS, registry=self.registry,
        )
        self.tokens = Counter(
            "gateway_tokens", "Tokens reported by upstreams in usage", ["backend", "type"], registry=self.registry,
        )
        self.affinity = Counter(
            "gateway_affinity", "Affinity-routed requests: new conversation, hit (served where pinned) or moved",
            ["result"], registry=self.registry,
        )
        self.registry.register(_BalancerCollector(balancer))
        self._children = lru_cache(maxsize=4096)(self._make_children)

    def _make_children(self, backend: str) -> _BackendSeries:
        return _BackendSeries(self, backend)

    def for_backend(self, backend: str) -> _BackendSeries:
        return self._children(backend)

    def render(self) -> bytes:
        return generate_latest(self.registry)


class _BackendSeries:
    """The label-bound children of one backend, looked up once."""

    __slots__ = ("duration", "ttfb", "prompt_tokens", "completion_tokens", "retries", "_metrics", "_backend",
                 "_attempts", "_requests")

    def __init__(self, metrics: GatewayMetrics, backend: str) -> None:
        self._metrics = metrics
        self._backend = backend
        self.duration = metrics.duration.labels(backend)
        self.ttfb = metrics.ttfb.labels(backend)
        self.prompt_tokens = metrics.tokens.labels(backend, "prompt")
        self.completion_tokens = metrics.tokens.labels(backend, "completion")
        self.retries = metrics.retries.labels(backend)
        self._attempts: dict[str, Counter] = {}
        self._requests: dict[int, Counter] = {}

    def attempt(self, outcome: str) -> None:
        child = self._attempts.get(outcome)
        if child is None:
            child = self._attempts[outcome] = self._metrics.attempts.labels(self._backend, outcome)
        child.inc()

    def request(self, status: int) -> None:
        child = self._requests.get(status)
        if child is None:
            child = self._requests[status] = self._metrics.requests.labels(self._backend, str(status))
        child.inc()


class _BalancerCollector(Collector):
    def __init__(self, balancer: Balancer) -> None:
        self._balancer = balancer

    def describe(self) -> list:
        return []

    def collect(self) -> Iterator[GaugeMetricFamily]:
        now = self._balancer.now()
        in_flight = GaugeMetricFamily("gateway_in_flight", "Requests in flight per backend", labels=["backend"])
        state = GaugeMetricFamily(
            "gateway_backend_state", "1 for the state each backend is in now", labels=["backend", "state"]
        )
        for backend in self._balancer.states:
            in_flight.add_metric([backend.name], backend.in_flight)
            current = backend.condition(now)
            for condition in BackendCondition:
                state.add_metric([backend.name, condition.value], 1.0 if condition is current else 0.0)
        yield in_flight
        yield state
        yield GaugeMetricFamily("gateway_queue_depth", "Requests waiting for a free backend slot",
                                value=self._balancer.queued)
