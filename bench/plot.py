"""The results as one PNG of small bar charts (matplotlib, optional: without it there is no plot)."""

from __future__ import annotations

from pathlib import Path

from bench.report import MB, RSS_LIMIT
from bench.scenarios import Results

COLORS = {
    "direct": "#7f7f7f", "gateway": "#1f77b4", "gateway-mw": "#17becf", "gateway-quiet": "#aec7e8",
    "gateway-http1": "#9467bd", "gateway-aiohttp": "#c5b0d5",
    "sglang": "#ff7f0e", "sglang-quiet": "#ffbb78", "aiohttp-floor": "#bcbd22", "litellm": "#2ca02c",
}


def plot(results: Results, path: Path) -> str | None:
    """Write the PNG; returns why not, when matplotlib is not installed."""
    try:
        import matplotlib

        matplotlib.use("Agg")  # no display: files only
        import matplotlib.pyplot as plt
    except ImportError:
        return "matplotlib is not installed: no plot"

    panels = []
    if results.latency:
        r = results.latency
        panels.append((f"Latency at c={r.concurrency} (ms)", list(r.runs),
                       {"p50": [r.p50(n) * 1000 for n in r.runs], "p99": [r.p99(n) * 1000 for n in r.runs]}))
    if results.throughput:
        names = list(results.throughput[0].runs)
        panels.append(("Throughput (req/s)", names,
                       {f"c={r.concurrency}": [r.rps(n) for n in names] for r in results.throughput}))
    if results.streaming:
        s = results.streaming
        names = [n for n in s.runs if s.timings(n)]
        panels.append(("Streaming (ms)", names, {"TTFT p50": [s.ttft(n, 50) * 1000 for n in names],
                                                 "mean gap": [s.mean_gap(n) * 1000 for n in names]}))
    if results.memory and results.memory.samples:
        m = results.memory
        names = list(m.samples)
        panels.append((f"RSS (MB), limit {RSS_LIMIT / MB:g}", names,
                       {"idle": [m.samples[n].baseline / MB for n in names],
                        f"{m.streams} streams": [m.samples[n].loaded / MB for n in names]}))
    if results.throttled:
        t = results.throttled
        names = [n for n in t.runs if n != "direct"]
        panels.append(("Throttled: hits per Retry-After window", names,
                       {"hits/window": [t.hits(n) / t.windows(n) if t.windows(n) else 0 for n in names]}))
    if not panels:
        return "no results to plot"

    columns = min(3, len(panels))
    rows = (len(panels) + columns - 1) // columns
    figure, axes = plt.subplots(rows, columns, figsize=(5 * columns, 3.6 * rows), squeeze=False)
    for ax, (title, names, series) in zip(axes.flat, panels, strict=False):
        width = 0.8 / len(series)
        for i, (label, values) in enumerate(series.items()):
            positions = [x + (i - (len(series) - 1) / 2) * width for x in range(len(names))]
            bars = ax.bar(positions, values, width, label=label,
                          color=[COLORS.get(n, "#9467bd") for n in names], alpha=1.0 - 0.35 * i,
                          edgecolor="black", linewidth=0.5)
            ax.bar_label(bars, fmt="%.4g", fontsize=7)
        ax.set_xticks(range(len(names)), names)
        positive = [v for values in series.values() for v in values if v > 0]
        if positive and max(positive) / min(positive) > 50:
            ax.set_yscale("log")  # LiteLLM next to the others: a linear axis would flatten everyone else
            title += ", log scale"
        ax.set_title(title, fontsize=10)
        if "RSS" in title:
            ax.axhline(RSS_LIMIT / MB, color="red", linestyle="--", linewidth=1)
        if "per Retry-After" in title:
            ax.axhline(1.0, color="red", linestyle="--", linewidth=1)
        if len(series) > 1:
            ax.legend(fontsize=7)
    for ax in list(axes.flat)[len(panels):]:
        ax.set_visible(False)
    figure.suptitle("Gateway vs the limit (direct) and its peers, loopback", fontsize=11)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return None
