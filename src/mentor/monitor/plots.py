"""The PNG plots of a monitoring report (matplotlib, Agg backend: no display needed).

- ``requests.png``: requests per time bucket, errors stacked on top, the two windows shaded;
- ``latency.png``: latency histogram with p50/p95/p99, and the percentiles per time bucket;
- ``retrieval.png``: top-1 retrieval score of every request over time, the median per bucket
  and the weak-retrieval threshold (when any request retrieved);
- ``drift.png``: reference and recent query embeddings on their top two principal axes
  (when the drift test ran).

Time buckets widen with the span of the log (a minute for a load run, a day for a month), so a
plot keeps a readable number of bars.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from mentor.evaluate.stats import percentile
from mentor.monitor.drift import pca_2d
from mentor.monitor.figures import failed, top1_scores
from mentor.monitor.log import RequestRecord
from mentor.utils.fs import atomic_path

if TYPE_CHECKING:
    from mentor.monitor.report import Analysis

__all__ = ["bucket_seconds", "write_plots"]

_BUCKETS = (1, 10, 60, 300, 900, 3600, 6 * 3600, 86400, 7 * 86400)
_REFERENCE, _RECENT = "tab:blue", "tab:orange"


def bucket_seconds(span_s: float, max_buckets: int = 120) -> int:
    """The narrowest bucket width from a fixed ladder that cuts ``span_s`` into at most
    ``max_buckets`` buckets."""
    for width in _BUCKETS:
        if span_s / width <= max_buckets:
            return width
    return _BUCKETS[-1]


def _dates(times: Sequence[float] | np.ndarray) -> np.ndarray:
    """Unix seconds as numpy datetimes (UTC), which matplotlib puts on a date axis."""
    return (np.asarray(times, dtype=np.float64) * 1000).astype("datetime64[ms]")


def _buckets(records: Sequence[RequestRecord]) -> tuple[int, np.ndarray]:
    """Bucket width and each record's bucket start time."""
    times = np.array([r.time for r in records])
    width = bucket_seconds(float(times.max() - times.min()))
    return width, np.floor(times / width) * width


def _shade(ax: Any, analysis: Analysis) -> None:
    for window, colour, label in (
        (analysis.reference, _REFERENCE, "reference"),
        (analysis.recent, _RECENT, "recent"),
    ):
        if window:
            ax.axvspan(
                _dates([window[0].time])[0],
                _dates([window[-1].time])[0],
                color=colour,
                alpha=0.15,
                zorder=3,  # over the bars, which would otherwise hide it
                label=f"{label} window",
            )


def _save(fig: Any, target: Path) -> Path:
    import matplotlib.pyplot as plt

    fig.autofmt_xdate()
    fig.tight_layout()
    with atomic_path(target) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)
    return target


def _requests_plot(analysis: Analysis, target: Path) -> Path:
    import matplotlib.pyplot as plt

    records = analysis.records
    width, starts = _buckets(records)
    keys = np.unique(starts)
    errors = np.array([failed(r) for r in records])
    bad = np.array([np.sum(errors[starts == k]) for k in keys])
    ok = np.array([np.sum(starts == k) for k in keys]) - bad
    fig, ax = plt.subplots(figsize=(8, 3.5))
    x = _dates(keys + width / 2)
    bar_width = width / 86400 * 0.9  # matplotlib dates are in days
    ax.bar(x, ok, width=bar_width, color="tab:green", label="ok")
    ax.bar(x, bad, width=bar_width, bottom=ok, color="tab:red", label="error")
    _shade(ax, analysis)
    ax.set_ylim(0, (ok + bad).max() * 1.35)  # headroom for the legend
    ax.set_ylabel(f"stored requests per {_width_name(width)}")
    ax.set_title("Requests over time (UTC)")
    ax.legend(fontsize=8, loc="upper center", ncol=4)
    return _save(fig, target)


def _width_name(width: int) -> str:
    if width < 60:
        return f"{width} s"
    if width < 3600:
        return f"{width // 60} min"
    if width < 86400:
        return f"{width // 3600} h"
    return f"{width // 86400} d"


def _latency_plot(analysis: Analysis, target: Path) -> Path | None:
    import matplotlib.pyplot as plt

    records = [r for r in analysis.records if not failed(r)]
    if not records:
        return None
    latencies = np.array([r.latency_s for r in records])
    fig, (hist, trend) = plt.subplots(1, 2, figsize=(11, 3.8))
    hist.hist(latencies, bins=min(50, max(5, len(latencies) // 5)), color="tab:gray")
    for q, style in ((50, "-"), (95, "--"), (99, ":")):
        value = percentile(latencies.tolist(), q)
        hist.axvline(value, color="black", linestyle=style, label=f"p{q} {value:.2f} s")
    hist.set_xlabel("latency (s), successful requests")
    hist.set_ylabel("requests")
    hist.legend(fontsize=8)

    width, starts = _buckets(records)
    keys = np.unique(starts)
    x = _dates(keys + width / 2)
    for q, style in ((50, "o-"), (95, "s--"), (99, "^:")):
        values = [percentile(latencies[starts == k].tolist(), q) for k in keys]
        trend.plot(x, values, style, markersize=3, label=f"p{q}")
    _shade(trend, analysis)
    trend.set_ylabel(f"latency (s) per {_width_name(width)}")
    trend.legend(fontsize=8)
    fig.suptitle("Latency")
    return _save(fig, target)


def _retrieval_plot(analysis: Analysis, target: Path) -> Path | None:
    import matplotlib.pyplot as plt

    records = [r for r in analysis.records if r.retrieval_scores]
    if not records:
        return None
    scores = np.array(top1_scores(records))
    fig, ax = plt.subplots(figsize=(8, 3.5))
    ax.scatter(_dates([r.time for r in records]), scores, s=4, alpha=0.4, color="tab:purple")
    width, starts = _buckets(records)
    keys = np.unique(starts)
    medians = [float(np.median(scores[starts == k])) for k in keys]
    ax.plot(_dates(keys + width / 2), medians, "k-", label="median")
    retrieval = (analysis.report.recent or analysis.report.overall).retrieval
    if retrieval is not None and retrieval.low_threshold is not None:
        ax.axhline(retrieval.low_threshold, color="tab:red", linestyle="--", label="weak below")
    _shade(ax, analysis)
    ax.set_ylabel("top-1 retrieval score")
    ax.set_title("Retrieval scores over time (UTC)")
    ax.legend(fontsize=8)
    return _save(fig, target)


def _drift_plot(analysis: Analysis, target: Path) -> Path | None:
    import matplotlib.pyplot as plt

    if analysis.drift_vectors is None or analysis.report.drift is None:
        return None
    reference, recent = pca_2d(*analysis.drift_vectors)
    drift = analysis.report.drift
    fig, ax = plt.subplots(figsize=(6, 5))
    ax.scatter(
        reference[:, 0],
        reference[:, 1],
        s=8,
        alpha=0.5,
        color=_REFERENCE,
        label=f"reference ({len(reference)})",
    )
    ax.scatter(
        recent[:, 0], recent[:, 1], s=8, alpha=0.5, color=_RECENT, label=f"recent ({len(recent)})"
    )
    ax.set_xlabel("principal axis 1")
    ax.set_ylabel("principal axis 2")
    verdict = "drifted" if drift.drifted else "no drift detected"
    ax.set_title(f"Query embeddings: {verdict} (MMD p = {drift.p_value:.3g})")
    ax.legend(fontsize=8)
    fig.tight_layout()
    with atomic_path(target) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)
    return target


def write_plots(analysis: Analysis, out: Path) -> list[Path]:
    """Write the plots that have data into ``out``; return their paths."""
    import matplotlib

    matplotlib.use("Agg")
    written = [
        _requests_plot(analysis, out / "requests.png"),
        _latency_plot(analysis, out / "latency.png"),
        _retrieval_plot(analysis, out / "retrieval.png"),
        _drift_plot(analysis, out / "drift.png"),
    ]
    return [p for p in written if p is not None]
