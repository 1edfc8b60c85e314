"""Prometheus metrics, one registry per app (no process globals, so tests can build many apps).

The hot path only adds to plain numbers: a request bumps a few ints and drops two timings into histogram
buckets. prometheus-client's own Counter and Histogram take a lock and run several Python calls per update;
under callgrind their six updates per request cost about 38,000 instructions, as much as parsing and
validating the request body. The numbers become metric families when Prometheus scrapes (``collect``), which
is also when the gauges that describe the present (in-flight requests, queue depth, backend state) are read
from the balancer, so they can never go stale when a cooldown simply expires. Single-threaded: every update
and every scrape runs on the event loop.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterator

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

from gateway.backend_state import BackendCondition
from gateway.balancer import Balancer

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)
_BUCKET_LABELS = [floatToGoString(bound) for bound in LATENCY_BUCKETS] + ["+Inf"]  # type: ignore[no-untyped-call]


class Count:
    __slots__ = ("value",)

    def __init__(self) -> None:
        self.value = 0

    def inc(self) -> None:
        self.value += 1


class Timings:
    """A histogram's state: how many observations fell in each bucket (not cumulative), and their sum."""

    __slots__ = ("counts", "total")

    def __init__(self) -> None:
        self.counts = [0] * (len(LATENCY_BUCKETS) + 1)  # the last one is +Inf
        self.total = 0.0

    def observe(self, seconds: float) -> None:
        # Prometheus buckets are "less or equal": bisect_left finds the first bound >= seconds.
        self.counts[bisect_left(LATENCY_BUCKETS, seconds)] += 1
        self.total += seconds

    def cumulative(self) -> list[tuple[str, int]]:
        running, buckets = 0, []
        for label, count in zip(_BUCKET_LABELS, self.counts):
            running += count
            buckets.append((label, running))
        return buckets


class BackendSeries:
    """Everything counted for one backend."""

    __slots__ = ("attempts", "cache_reported_prompt_tokens", "cached_tokens", "completion_tokens", "duration",
                 "prompt_tokens", "requests", "retries", "ttfb")

    def __init__(self) -> None:
        self.duration = Timings()
        self.ttfb = Timings()
        self.prompt_tokens = Count()
        self.completion_tokens = Count()
        self.retries = Count()
        self.attempts: dict[str, int] = {}
        self.requests: dict[int, int] = {}
        # Prompt tokens the backend found in its cache, and the prompt tokens of the answers that said so
        # (llama-server always does; others may not): their ratio is the prompt-token reuse.
        self.cached_tokens = Count()
        self.cache_reported_prompt_tokens = Count()

    def attempt(self, outcome: str) -> None:
        self.attempts[outcome] = self.attempts.get(outcome, 0) + 1

    def answered(self, prompt_tokens: int, completion_tokens: int, cached_tokens: int | None = None) -> None:
        """An attempt that succeeded, with the tokens its backend reported (0, 0 when it reported none)."""
        self.attempts["ok"] = self.attempts.get("ok", 0) + 1
        self.prompt_tokens.value += prompt_tokens
        self.completion_tokens.value += completion_tokens
        if cached_tokens is not None:
            self.cached_tokens.value += cached_tokens
            self.cache_reported_prompt_tokens.value += prompt_tokens

    def request(self, status: int, seconds: float) -> None:
        """A client request is over: its final status and how long it took."""
        self.requests[status] = self.requests.get(status, 0) + 1
        self.duration.observe(seconds)


class SeriesByBackend(dict[str, BackendSeries]):
    """backend name → its series, made on first use: ``series[name]`` is one dict lookup, no Python call."""

    def __missing__(self, backend: str) -> BackendSeries:
        series = self[backend] = BackendSeries()
        return series


class GatewayMetrics:
    def __init__(self, balancer: Balancer) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.series = SeriesByBackend()
        self.affinity: dict[str, int] = {}  # "new", "hit" or "moved" → requests
        self.registry.register(_GatewayCollector(self, balancer))

    def for_backend(self, backend: str) -> BackendSeries:
        return self.series[backend]

    def affinity_result(self, result: str) -> None:
        self.affinity[result] = self.affinity.get(result, 0) + 1

    def render(self) -> bytes:
        return generate_latest(self.registry)

    def families(self) -> Iterator[Metric]:
        requests = CounterMetricFamily(
            "gateway_requests", "Client requests by the backend that answered and the final status",
            labels=["backend", "status"],
        )
        attempts = CounterMetricFamily(
            "gateway_upstream_attempts",
            "Upstream attempts by outcome (ok, throttled, failed, client_error, upstream_too_large)",
            labels=["backend", "outcome"],
        )
        retries = CounterMetricFamily(
            "gateway_retries", "Attempts that failed over to another backend, by the backend that failed",
            labels=["backend"],
        )
        duration = HistogramMetricFamily(
            "gateway_request_duration_seconds", "Whole request latency through the gateway", labels=["backend"]
        )
        ttfb = HistogramMetricFamily(
            "gateway_upstream_ttfb_seconds", "Time from sending upstream to the first response byte",
            labels=["backend"],
        )
        tokens = CounterMetricFamily(
            "gateway_tokens", "Tokens reported by upstreams in usage", labels=["backend", "type"]
        )
        reuse = GaugeMetricFamily(
            "gateway_prompt_reuse_ratio",
            "Share of prompt tokens the backend found in its cache (llama-server's cache_n), since start",
            labels=["backend"],
        )
        for backend, series in self.series.items():
            for status, count in series.requests.items():
                requests.add_metric([backend, str(status)], count)
            for outcome, count in series.attempts.items():
                attempts.add_metric([backend, outcome], count)
            retries.add_metric([backend], series.retries.value)
            duration.add_metric([backend], series.duration.cumulative(), series.duration.total)
            ttfb.add_metric([backend], series.ttfb.cumulative(), series.ttfb.total)
            tokens.add_metric([backend, "prompt"], series.prompt_tokens.value)
            tokens.add_metric([backend, "completion"], series.completion_tokens.value)
            if series.cache_reported_prompt_tokens.value:
                tokens.add_metric([backend, "cached"], series.cached_tokens.value)
                reuse.add_metric([backend], series.cached_tokens.value / series.cache_reported_prompt_tokens.value)
        affinity = CounterMetricFamily(
            "gateway_affinity", "Affinity-routed requests: new conversation, hit (served where pinned) or moved",
            labels=["result"],
        )
        for result, count in self.affinity.items():
            affinity.add_metric([result], count)
        yield from (requests, attempts, retries, duration, ttfb, tokens, reuse, affinity)


class _GatewayCollector(Collector):
    def __init__(self, metrics: GatewayMetrics, balancer: Balancer) -> None:
        self._metrics = metrics
        self._balancer = balancer

    def describe(self) -> list[Metric]:
        return []

    def collect(self) -> Iterator[Metric]:
        yield from self._metrics.families()
        now = self._balancer.now()
        in_flight = GaugeMetricFamily("gateway_in_flight", "Requests in flight per backend", labels=["backend"])
        state = GaugeMetricFamily(
            "gateway_backend_state", "1 for the state each backend is in now", labels=["backend", "state"]
        )
        capacity = GaugeMetricFamily(
            "gateway_backend_capacity", "Requests a backend serves at once (max_concurrency, or llama-server's "
            "/props total_slots)", labels=["backend"],
        )
        reported = GaugeMetricFamily(
            "gateway_backend_reported_requests", "A llama-server backend's own count of its requests at the last "
            "health check (all clients')", labels=["backend", "state"],
        )
        for backend in self._balancer.states:
            in_flight.add_metric([backend.name], backend.in_flight)
            current = backend.condition(now)
            for condition in BackendCondition:
                state.add_metric([backend.name, condition.value], 1.0 if condition is current else 0.0)
            if backend.max_concurrency is not None:
                capacity.add_metric([backend.name], backend.max_concurrency)
            if backend.reported_load is not None:
                reported.add_metric([backend.name, "processing"], backend.reported_load.processing)
                reported.add_metric([backend.name, "deferred"], backend.reported_load.deferred)
        yield in_flight
        yield state
        yield capacity
        yield reported
        yield GaugeMetricFamily("gateway_queue_depth", "Requests waiting for a free backend slot",
                                value=self._balancer.queued)
