"""The metric families built at scrape time from the hot path's plain counts."""

from __future__ import annotations

import time

from prometheus_client.parser import text_string_to_metric_families

from gateway.balancer import Balancer
from gateway.metrics import GatewayMetrics
from gateway.settings import GatewaySettings


def scrape(metrics: GatewayMetrics) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    samples = {}
    for family in text_string_to_metric_families(metrics.render().decode()):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def test_histogram_buckets_are_less_or_equal_and_cumulative() -> None:
    settings = GatewaySettings(backends=[{"name": "a", "url": "http://127.0.0.1:1/v1"}])
    metrics = GatewayMetrics(Balancer(settings.backends, now=time.monotonic))
    duration = metrics.for_backend("a").duration
    for seconds in (0.005, 0.0051, 0.3, 1000.0):  # on a bound, just above it, mid-range, beyond the last
        duration.observe(seconds)
    samples = scrape(metrics)

    def bucket(le: str) -> float:
        return samples[("gateway_request_duration_seconds_bucket", (("backend", "a"), ("le", le)))]

    assert bucket("0.005") == 1
    assert bucket("0.01") == 2
    assert bucket("0.25") == 2 and bucket("0.5") == 3
    assert bucket("300.0") == 3 and bucket("+Inf") == 4
    assert samples[("gateway_request_duration_seconds_count", (("backend", "a"),))] == 4
    assert abs(samples[("gateway_request_duration_seconds_sum", (("backend", "a"),))] - 1000.3101) < 1e-9


def test_counters_by_label() -> None:
    settings = GatewaySettings(backends=[{"name": "a", "url": "http://127.0.0.1:1/v1"}])
    metrics = GatewayMetrics(Balancer(settings.backends, now=time.monotonic))
    series = metrics.for_backend("a")
    series.request(200, 0.1)
    series.request(200, 0.2)
    series.request(429, 0.001)
    series.attempt("throttled")
    series.answered(7, 3)
    series.retries.inc()
    metrics.affinity_result("hit")
    samples = scrape(metrics)
    assert samples[("gateway_requests_total", (("backend", "a"), ("status", "200")))] == 2
    assert samples[("gateway_requests_total", (("backend", "a"), ("status", "429")))] == 1
    assert samples[("gateway_upstream_attempts_total", (("backend", "a"), ("outcome", "throttled")))] == 1
    assert samples[("gateway_retries_total", (("backend", "a"),))] == 1
    assert samples[("gateway_upstream_attempts_total", (("backend", "a"), ("outcome", "ok")))] == 1
    assert samples[("gateway_tokens_total", (("backend", "a"), ("type", "prompt")))] == 7
    assert samples[("gateway_tokens_total", (("backend", "a"), ("type", "completion")))] == 3
    assert samples[("gateway_request_duration_seconds_count", (("backend", "a"),))] == 3
    assert samples[("gateway_affinity_total", (("result", "hit"),))] == 1
    assert samples[("gateway_backend_state", (("backend", "a"), ("state", "healthy")))] == 1
