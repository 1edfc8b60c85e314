"""The results as markdown: one table per scenario, then the targets of the issue, each PASS or FAIL."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from bench.runner import Meta
from bench.scenarios import LoadResult, Results
from bench.targets import PEER_OF, SHARED_STATE_PAIRS

MB = 1_000_000
ADDED_P50_LIMIT = 0.5e-3  # seconds, at concurrency 1
SGLANG_FACTOR = 1.0
LITELLM_FACTOR = 50.0
RSS_LIMIT = 100 * MB
# Shared routing state (issue 15): what GATEWAY_STATE_URL may cost against the same gateway without it.
SHARED_P50_LIMIT = 0.2e-3
SHARED_THROUGHPUT_FACTOR = 0.9
# "Unchanged" added latency when an upstream is throttled: within 0.1 ms or 20% of the healthy case.
UNCHANGED_ABS, UNCHANGED_REL = 0.1e-3, 0.20


@dataclass(frozen=True)
class Verdict:
    target: str
    measured: str
    passed: bool | None  # None: not measured in this run

    @property
    def word(self) -> str:
        return {True: "PASS", False: "FAIL", None: "n/a"}[self.passed]


def ms(seconds: float) -> str:
    value = seconds * 1000
    digits = 3 if abs(value) < 10 else 2 if abs(value) < 100 else 1
    return f"{value:.{digits}f} ms"


def signed_ms(seconds: float) -> str:
    return ("+" if seconds >= 0 else "−") + ms(abs(seconds))


def mb(size: float) -> str:
    return f"{size / MB:.1f} MB"


def table(header: list[str], rows: list[list[str]], align: str) -> list[str]:
    """`align` has one letter per column: l or r."""
    rule = ["---:" if a == "r" else "---" for a in align]
    return [f"| {' | '.join(header)} |", f"| {' | '.join(rule)} |", *(f"| {' | '.join(r)} |" for r in rows)]


def _versus(result: LoadResult, target: str, value: Callable[[LoadResult, str], float], fmt: Callable) -> str:
    if target == "direct" or not _answered(result, "direct") or not _answered(result, target):
        return "—"
    return fmt(value(result, target) - value(result, "direct"))


def _answered(result: LoadResult, target: str) -> bool:
    return target in result.runs and result.requests(target) > 0


def _latency(result: LoadResult, target: str, value: Callable[[LoadResult, str], float]) -> str:
    # wrk reports 0 for the percentiles of a run in which no response arrived at all.
    return ms(value(result, target)) if _answered(result, target) else "—"


NONE_ANSWERED = ("—: no response arrived within a run; every request was still in flight when wrk "
                 "stopped, so wrk counted neither a latency nor an error.")


def latency_section(result: LoadResult) -> list[str]:
    rows = [
        [name, f"{result.requests(name):,}", _latency(result, name, LoadResult.p50),
         _latency(result, name, LoadResult.p99),
         _versus(result, name, LoadResult.p50, signed_ms), _versus(result, name, LoadResult.p99, signed_ms),
         str(result.errors(name))]
        for name in result.runs
    ]
    return [
        f"## Added latency, concurrency {result.concurrency}",
        "",
        *table(["target", "requests", "p50", "p99", "added p50", "added p99", "errors"], rows, "lrrrrrr"),
        "",
    ]


def throughput_section(result: LoadResult) -> list[str]:
    direct = result.rps("direct") if "direct" in result.runs else None
    rows = []
    for name in result.runs:
        share = f"{result.rps(name) / direct:.2f}×" if direct and name != "direct" else "—"
        non_2xx = sum(r.non_2xx for r in result.runs[name])
        socket = sum(r.socket_errors for r in result.runs[name])
        rows.append([name, f"{result.rps(name):,.0f}", share, _latency(result, name, LoadResult.p50),
                     _latency(result, name, LoadResult.p99), f"{non_2xx + socket} ({non_2xx} + {socket})"])
    silent = [name for name in result.runs if not _answered(result, name)]
    return [
        f"## Throughput, concurrency {result.concurrency}",
        "",
        *table(["target", "req/s", "of direct", "p50", "p99", "errors (non-2xx + socket)"], rows, "lrrrrr"),
        "",
        *([f"{', '.join(silent)} {NONE_ANSWERED}", ""] if silent else []),
    ]


def streaming_section(results: Results) -> list[str]:
    s = results.streaming
    assert s is not None
    names = [n for n in s.runs if s.timings(n)]
    has_direct = "direct" in names
    rows = []
    for name in names:
        compare = has_direct and name != "direct"
        rows.append([
            name, str(len(s.timings(name))), ms(s.ttft(name, 50)), ms(s.ttft(name, 99)),
            signed_ms(s.ttft(name, 50) - s.ttft("direct", 50)) if compare else "—",
            ms(s.mean_gap(name)), ms(s.gap_p99(name)),
            signed_ms(s.mean_gap(name) - s.mean_gap("direct")) if compare else "—",
            str(s.failures.get(name, 0)),
        ])
    for name in s.runs:
        if name not in names:
            rows.append([name, "0", "—", "—", "—", "—", "—", "—", str(s.failures.get(name, 0))])
    return [
        f"## Streaming: {s.tokens} chunks {s.token_delay * 1000:g} ms apart, one stream at a time",
        "",
        *table(["target", "streams", "TTFT p50", "TTFT p99", "added TTFT p50", "mean gap", "gap p99",
                "inter-token overhead", "failed"], rows, "lrrrrrrrr"),
        "",
        "TTFT: from sending the request to the first `data:` event. Gap: between consecutive events. "
        "Inter-token overhead: mean gap minus direct's.",
        "",
    ]


def memory_section(results: Results) -> list[str]:
    m = results.memory
    assert m is not None
    rows = []
    for name, s in m.samples.items():
        per_stream = (s.loaded - s.baseline) / s.open_at_measure if s.open_at_measure else 0
        rows.append([name, str(s.processes), mb(s.baseline), mb(s.loaded), f"{per_stream / 1000:.1f} kB",
                     f"{s.open_at_measure}/{m.streams}", str(s.upstream_in_flight), str(s.failed),
                     str(s.pending)])
    notes = [f"- {name}: {'; '.join(s.errors)}" for name, s in m.samples.items() if s.errors]
    return [
        f"## Memory with {m.streams:,} open streams",
        "",
        *table(["target", "processes", "RSS idle", f"RSS, {m.streams:,} streams", "per stream", "open",
                "open at upstreams", "failed", "not open in time"], rows, "lrrrrrrrr"),
        "",
        "RSS summed over the target's processes (VmRSS), measured once it stopped growing. "
        "\"Open at upstreams\": streams the two fakes were serving at that moment. Streams are opened 100 "
        f"at a time; those not open after {m.open_timeout:g} s are \"not open in time\".",
        *(["", *notes] if notes else []),
        "",
    ]


def throttled_section(results: Results) -> list[str]:
    t = results.throttled
    assert t is not None
    load = t.load()
    rows = []
    for name in t.runs:
        hits, windows = t.hits(name), t.windows(name)
        rows.append([
            name, f"{load.requests(name):,}", f"{t.success_rate(name):.2%}",
            _latency(load, name, LoadResult.p50), _latency(load, name, LoadResult.p99),
            _versus(load, name, LoadResult.p50, signed_ms),
            str(hits) if name != "direct" else "—", str(windows) if name != "direct" else "—",
            f"{hits / windows:.2f}" if windows and name != "direct" else "—",
        ])
    return [
        f"## Throttled upstream: one answers 429 with retry-after-ms {t.window * 1000:g}, concurrency "
        f"{t.concurrency}",
        "",
        *table(["target", "requests", "success", "p50", "p99", "added p50", "hits on throttled upstream",
                "Retry-After windows", "hits per window"], rows, "lrrrrrrrr"),
        "",
        "Direct goes to the healthy upstream. Windows: each run's duration divided by the Retry-After, "
        "rounded up, summed over the runs.",
        "",
    ]


def verdicts(results: Results) -> list[Verdict]:
    out = []
    lat = results.latency
    if lat and {"gateway", "direct"} <= lat.runs.keys():
        added = lat.p50("gateway") - lat.p50("direct")
        label = f"added p50 latency at c={lat.concurrency} ≤ {ms(ADDED_P50_LIMIT)}"
        out.append(Verdict(label, signed_ms(added), added <= ADDED_P50_LIMIT))
    else:
        out.append(Verdict(f"added p50 latency at c=1 ≤ {ms(ADDED_P50_LIMIT)}", "not measured", None))

    c32 = next((r for r in results.throughput if r.concurrency == 32), None)
    for gateway, sglang in PEER_OF.items():
        for peer, factor in ((sglang, SGLANG_FACTOR), ("litellm", LITELLM_FACTOR)):
            if gateway == "gateway-quiet" and peer == "litellm":
                continue  # the LiteLLM ratio is the shipped gateway's; the quiet pair is for sglang-router
            label = f"throughput at c=32 ≥ {factor:g}× {peer}'s"
            if gateway != "gateway":
                if not c32 or gateway not in c32.runs:
                    continue  # the lines of the other gateway configurations only when they ran
                label += f" ({gateway})"
            if c32 and {gateway, peer} <= c32.runs.keys():
                ratio = c32.rps(gateway) / c32.rps(peer)
                measured = f"{ratio:.2f}× ({c32.rps(gateway):,.0f} vs {c32.rps(peer):,.0f} req/s)"
                out.append(Verdict(label, measured, ratio >= factor))
            else:
                why = results.skipped.get(peer, "not in this run")
                out.append(Verdict(label, f"{peer}: {why.splitlines()[0]}", None))
    clients = ("gateway-http1", "gateway-aiohttp")
    if c32 and set(clients) <= c32.runs.keys():
        # Issue 12: our own HTTP/1.1 client stays the default only while it clearly beats aiohttp's.
        ratio = c32.rps(clients[0]) / c32.rps(clients[1])
        out.append(Verdict("upstream client: http1 > 1.10× aiohttp's throughput at c=32 (else aiohttp)",
                           f"{ratio:.2f}× ({c32.rps(clients[0]):,.0f} vs {c32.rps(clients[1]):,.0f} req/s)",
                           ratio > 1.10))
    if c32 and "gateway" in c32.runs:
        errors = c32.errors("gateway")
        out.append(Verdict("zero errors at c=32", f"{errors} errors in {c32.requests('gateway'):,} requests",
                           errors == 0))
    else:
        out.append(Verdict("zero errors at c=32", "not measured", None))

    t = results.throttled
    if t and "gateway" in t.runs:
        rate = t.success_rate("gateway")
        out.append(Verdict("throttled: 100% success", f"{rate:.3%}", rate == 1.0))
        hits, windows = t.hits("gateway"), t.windows("gateway")
        out.append(Verdict("throttled: throttled upstream hit once per Retry-After window",
                           f"{hits} hits in {windows} windows", hits <= windows))
        load = t.load()
        if "direct" in load.runs and lat and {"gateway", "direct"} <= lat.runs.keys():
            throttled_added = load.p50("gateway") - load.p50("direct")
            healthy_added = lat.p50("gateway") - lat.p50("direct")
            allowed = max(UNCHANGED_ABS, UNCHANGED_REL * abs(healthy_added))
            out.append(Verdict("throttled: added latency unchanged",
                               f"{signed_ms(throttled_added)} vs {signed_ms(healthy_added)} healthy "
                               f"(allowed ±{ms(allowed)})",
                               abs(throttled_added - healthy_added) <= allowed))
        else:
            out.append(Verdict("throttled: added latency unchanged", "needs direct and the latency scenario",
                               None))
    else:
        for label in ("throttled: 100% success",
                      "throttled: throttled upstream hit once per Retry-After window",
                      "throttled: added latency unchanged"):
            out.append(Verdict(label, "not measured", None))

    out += shared_state_verdicts(results)

    m = results.memory
    label = f"RSS < {mb(RSS_LIMIT)} with {m.streams if m else 1000:,} open streams"
    if m and "gateway" in m.samples:
        s = m.samples["gateway"]
        all_open = s.open_at_measure == m.streams
        out.append(Verdict(label, f"{mb(s.loaded)} with {s.open_at_measure:,} open",
                           s.loaded < RSS_LIMIT and all_open))
    else:
        out.append(Verdict(label, "not measured", None))
    return out


def shared_state_verdicts(results: Results) -> list[Verdict]:
    """Each gateway with shared state against the same configuration without; only the pairs that ran."""
    out = []
    lat = results.latency
    c32 = next((r for r in results.throughput if r.concurrency == 32), None)
    for shared, plain in SHARED_STATE_PAIRS.items():
        if lat and {shared, plain} <= lat.runs.keys():
            added = lat.p50(shared) - lat.p50(plain)
            out.append(Verdict(f"shared state: p50 at c={lat.concurrency} ≤ {plain}'s + {ms(SHARED_P50_LIMIT)} "
                               f"({shared})", signed_ms(added), added <= SHARED_P50_LIMIT))
        if c32 and {shared, plain} <= c32.runs.keys():
            ratio = c32.rps(shared) / c32.rps(plain)
            out.append(Verdict(f"shared state: throughput at c=32 ≥ {SHARED_THROUGHPUT_FACTOR:g}× {plain}'s "
                               f"({shared})", f"{ratio:.2f}× ({c32.rps(shared):,.0f} vs {c32.rps(plain):,.0f} req/s)",
                               ratio >= SHARED_THROUGHPUT_FACTOR))
    t = results.throttled
    if t and "gateway-redis-3w" in t.runs:
        hits, windows = t.hits("gateway-redis-3w"), t.windows("gateway-redis-3w")
        measured = f"{hits} hits in {windows} windows"
        if "gateway-3w" in t.runs:
            measured += f" ({t.hits('gateway-3w')} in {t.windows('gateway-3w')} without shared state)"
        out.append(Verdict("shared state: throttled upstream hit once per window by 3 processes", measured,
                           hits <= windows))
    return out


def render(results: Results, meta: Meta) -> str:
    peers = ", ".join(
        f"{t.name} {t.version}" if t.version else f"{t.name} (not installed)"
        for t in meta.targets if t.name in ("sglang", "litellm")  # (sglang-quiet is the same sglang)
    ) or "none asked for"
    lines = [
        "# Gateway benchmark: against the limit and its peers",
        "",
        f"Measured {meta.started:%Y-%m-%d %H:%M} UTC with `{meta.command}` in {meta.wall_seconds:.0f} s. "
        f"Machine: {meta.cores} cores ({meta.cpu}), Python {meta.python}, aiohttp {meta.aiohttp}, "
        f"{meta.wrk}. "
        f"Peers: {peers}. Load average {meta.load_before[0]:.2f} before, {meta.load_after[0]:.2f} after.",
        "",
        "Everything runs on this machine over loopback: the load generator (wrk, one thread; an asyncio "
        "client for streams), two fake upstreams (`python -m backends.fake`, one process each), and the "
        "target in front of them. Targets take turns within each round, in a rotated order each round; the "
        "tables give the median over rounds (streams: all streams pooled). \"Added\" is the target minus "
        "direct.",
        "",
        "Targets:",
        "",
        *(f"- **{t.name}**: {t.description}" + (f", {t.version}" if t.version else "")
          for t in meta.targets),
        "",
    ]
    if results.latency:
        lines += latency_section(results.latency)
    for result in results.throughput:
        lines += throughput_section(result)
    if results.streaming:
        lines += streaming_section(results)
    if results.memory:
        lines += memory_section(results)
    if results.throttled:
        lines += throttled_section(results)
    rows = [[v.target, v.measured, f"**{v.word}**"] for v in verdicts(results)]
    lines += ["## Targets (gateway)", "", *table(["target", "measured", "verdict"], rows, "llr"), ""]
    notes = [f"{name} skipped: {why.splitlines()[0]}" for name, why in results.skipped.items()]
    notes += results.notes
    if notes:
        lines += ["## Notes", "", *(f"- {n}" for n in notes), ""]
    return "\n".join(lines)
