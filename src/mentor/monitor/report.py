"""The monitoring report: what the server did, whether the queries drifted, and what to do.

From the request log (:mod:`mentor.monitor.log`) it computes volume, latency percentiles,
tokens, retrieval scores and the refusal rate over the whole log and over two windows, a
*reference* (by default the older half of the requests) and a *recent* one (the newest 20%, or
the last N hours), then tests whether the recent queries' embeddings come from the same
distribution as the reference ones (:mod:`mentor.monitor.drift`). The recent window is checked
against :class:`Thresholds`; each crossing becomes an :class:`Alert` that says what to do.

:func:`mentor.monitor.files.write_report` puts ``report.json``, ``report.md`` and the plots
into a folder.
Run: ``mentor monitor report --log requests.db --out monitor-report``.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

import numpy as np

from mentor.evaluate.stats import percentile
from mentor.models.protocols import Embedder
from mentor.monitor.drift import mean_cosine_shift, mmd_permutation_test
from mentor.monitor.figures import (
    LatencyFigures,
    Volume,
    WindowFigures,
    failed,
    latency_figures,
    top1_scores,
    volume,
    window_figures,
)
from mentor.monitor.log import RequestRecord

__all__ = [
    "Alert",
    "Analysis",
    "DriftSettings",
    "DriftSummary",
    "MonitorReport",
    "Thresholds",
    "Windows",
    "analyse",
    "check_thresholds",
    "split_windows",
]

WEAK_RETRIEVAL_PERCENTILE = 10.0
"""Without an explicit score threshold, a retrieval is weak when its top-1 score is under this
percentile of the reference window's: scale-free across dense, BM25 and fused scores."""


@dataclass(frozen=True)
class Windows:
    """Which requests are the reference and which the recent window."""

    recent_hours: float | None = None
    """Recent window: the last this many hours before the newest request (else ``recent_share``)."""
    recent_share: float = 0.2
    """Recent window: this newest share of the requests, when no hours or times are given."""
    reference_share: float = 0.5
    """Reference window: this oldest share of the requests (never overlapping the recent one)."""
    reference_since: float | None = None
    """Reference window start, unix seconds (with or instead of ``reference_until``)."""
    reference_until: float | None = None
    """Reference window end (exclusive), unix seconds."""
    recent_since: float | None = None
    """Recent window start, unix seconds; overrides ``recent_hours`` and ``recent_share``."""
    recent_until: float | None = None
    """Recent window end (exclusive), unix seconds."""

    def __post_init__(self) -> None:
        for name in ("recent_share", "reference_share"):
            value = getattr(self, name)
            if not 0.0 < value <= 1.0:
                raise ValueError(f"{name} must be in (0, 1], got {value}")
        if self.recent_hours is not None and self.recent_hours <= 0:
            raise ValueError(f"recent_hours must be positive, got {self.recent_hours}")


def _between(
    records: Sequence[RequestRecord], since: float | None, until: float | None
) -> list[RequestRecord]:
    low = -math.inf if since is None else since
    high = math.inf if until is None else until
    return [r for r in records if low <= r.time < high]


def split_windows(
    records: Sequence[RequestRecord], windows: Windows
) -> tuple[list[RequestRecord], list[RequestRecord]]:
    """The (reference, recent) requests of ``records`` (sorted by time)."""
    if not records:
        return [], []
    if windows.recent_since is not None or windows.recent_until is not None:
        recent = _between(records, windows.recent_since, windows.recent_until)
    elif windows.recent_hours is not None:
        recent = _between(records, records[-1].time - windows.recent_hours * 3600.0, None)
    else:
        recent = list(records[-max(1, math.ceil(windows.recent_share * len(records))) :])
    if windows.reference_since is not None or windows.reference_until is not None:
        return _between(records, windows.reference_since, windows.reference_until), recent
    oldest = records[: int(windows.reference_share * len(records))]
    recent_start = recent[0].time if recent else math.inf
    return [r for r in oldest if r.time < recent_start], recent


@dataclass(frozen=True)
class Thresholds:
    """When the recent window calls for action."""

    max_p95_latency_s: float = 10.0
    """Alert when the p95 latency of successful requests is above this many seconds."""
    max_error_rate: float = 0.05
    """Alert when more than this share of requests failed."""
    max_refusal_rate: float = 0.3
    """Alert when more than this share of answers say the documents do not cover the question."""
    min_retrieval_score: float | None = None
    """Top-1 retrieval score under which a retrieval is weak; None: the reference window's
    10th percentile."""
    max_low_retrieval_share: float = 0.25
    """Alert when more than this share of retrievals are weak."""
    drift_p_value: float = 0.01
    """Alert (queries drifted) when the permutation test's p-value is below this."""


@dataclass(frozen=True)
class DriftSettings:
    """How the query drift test runs."""

    permutations: int = 500
    """Shuffles for the permutation p-value (resolution 1 / (permutations + 1))."""
    max_samples: int = 1000
    """Queries per window at most (a seeded subsample beyond it)."""
    min_queries: int = 20
    """Fewer queries than this in either window and the test is not run."""
    seed: int = 0
    """Seed of the subsampling and the shuffles."""


@dataclass(frozen=True)
class DriftSummary:
    """Reference-vs-recent query drift, and the verdict."""

    embedder: str
    n_reference: int
    n_recent: int
    mmd2: float
    p_value: float
    sigma: float
    permutations: int
    mean_cosine_shift: float
    drifted: bool
    novel_queries: list[str]
    """Recent queries least like any reference query (lowest best cosine), most novel first."""


@dataclass(frozen=True)
class Alert:
    """A threshold the recent window crossed, and what to do about it."""

    check: str
    value: float
    threshold: float
    message: str
    action: str


@dataclass(frozen=True)
class MonitorReport:
    source: str
    """The log the report was computed from."""
    generated_at: float
    volume: Volume
    overall: WindowFigures
    reference: WindowFigures | None
    recent: WindowFigures | None
    latency_per_model: dict[str, LatencyFigures | None]
    drift: DriftSummary | None
    drift_verdict: str
    """One line: drifted, no drift detected, or why the test was not run."""
    thresholds: Thresholds
    alerts: list[Alert] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _texts(records: Sequence[RequestRecord]) -> list[str]:
    return [r.query for r in records if r.query and r.query.strip()]


def _subsample(texts: list[str], cap: int, rng: np.random.Generator) -> list[str]:
    if len(texts) <= cap:
        return texts
    return [texts[i] for i in np.sort(rng.choice(len(texts), size=cap, replace=False))]


def query_drift(
    reference: list[str],
    recent: list[str],
    embedder: Embedder,
    settings: DriftSettings,
    p_threshold: float,
) -> tuple[DriftSummary, np.ndarray, np.ndarray]:
    """Test the two sets of queries; also return the embeddings used (for the plot)."""
    rng = np.random.default_rng(settings.seed)
    # Subsample before embedding: the embedder is the slow part.
    reference = _subsample(reference, settings.max_samples, rng)
    recent = _subsample(recent, settings.max_samples, rng)
    x = embedder.embed(reference).astype(np.float64)
    y = embedder.embed(recent).astype(np.float64)
    test = mmd_permutation_test(
        x,
        y,
        permutations=settings.permutations,
        max_samples=settings.max_samples,
        seed=settings.seed,
    )
    best = (y @ x.T).max(1)  # (recent,): cosine to the closest reference query (unit rows)
    novel: list[str] = []
    for i in np.argsort(best):
        if recent[i] not in novel:
            novel.append(recent[i])
        if len(novel) == 5:
            break
    summary = DriftSummary(
        embedder=embedder.name,
        n_reference=test.n_reference,
        n_recent=test.n_recent,
        mmd2=test.mmd2,
        p_value=test.p_value,
        sigma=test.sigma,
        permutations=test.permutations,
        mean_cosine_shift=mean_cosine_shift(x, y),
        drifted=test.p_value < p_threshold,
        novel_queries=novel,
    )
    return summary, x, y


def check_thresholds(
    figures: WindowFigures, drift: DriftSummary | None, thresholds: Thresholds
) -> list[Alert]:
    """The alerts for one window (the recent one) and the drift test."""
    alerts: list[Alert] = []
    if figures.latency is not None and figures.latency.p95_s > thresholds.max_p95_latency_s:
        alerts.append(
            Alert(
                "p95_latency",
                figures.latency.p95_s,
                thresholds.max_p95_latency_s,
                f"latency up: p95 {figures.latency.p95_s:.2f} s > {thresholds.max_p95_latency_s} s",
                "the server is overloaded or the model too slow: add replicas, cap max_tokens, "
                "quantize the model or serve a smaller (distilled) one",
            )
        )
    if figures.error_rate > thresholds.max_error_rate:
        alerts.append(
            Alert(
                "error_rate",
                figures.error_rate,
                thresholds.max_error_rate,
                f"errors up: {figures.error_rate:.1%} of requests failed "
                f"> {thresholds.max_error_rate:.1%}",
                "read the commonest errors below and the server's own log; check memory and disk",
            )
        )
    refusal = figures.refusal_rate
    if refusal is not None and refusal > thresholds.max_refusal_rate:
        alerts.append(
            Alert(
                "refusal_rate",
                refusal,
                thresholds.max_refusal_rate,
                f"refusal rate up: {refusal:.1%} of answers could not be given from the documents "
                f"> {thresholds.max_refusal_rate:.1%}",
                "documents may be missing: read the refused queries, add documents that answer "
                "them and run `mentor rag index --sync`; or re-run `mentor rag calibrate`",
            )
        )
    retrieval = figures.retrieval
    if (
        retrieval is not None
        and retrieval.low_share is not None
        and retrieval.low_share > thresholds.max_low_retrieval_share
    ):
        alerts.append(
            Alert(
                "low_retrieval_share",
                retrieval.low_share,
                thresholds.max_low_retrieval_share,
                f"weak retrieval: {retrieval.low_share:.1%} of top hits score under "
                f"{retrieval.low_threshold:.4g} > {thresholds.max_low_retrieval_share:.1%}",
                "users ask about things the index covers poorly: add documents on those topics "
                "and rebuild the index",
            )
        )
    if drift is not None and drift.drifted:
        alerts.append(
            Alert(
                "drift_p_value",
                drift.p_value,
                thresholds.drift_p_value,
                f"queries drifted: MMD p = {drift.p_value:.3g} < {thresholds.drift_p_value}",
                "rebuild the index with new documents or retrain (fine-tune or distill) on recent "
                "queries; the most novel ones are listed in the report",
            )
        )
    return alerts


@dataclass(frozen=True)
class Analysis:
    """A report with the inputs its plots need."""

    report: MonitorReport
    records: list[RequestRecord]
    reference: list[RequestRecord]
    recent: list[RequestRecord]
    drift_vectors: tuple[np.ndarray, np.ndarray] | None
    """(reference, recent) query embeddings the drift test used."""


def analyse(
    records: Sequence[RequestRecord],
    *,
    embedder: Embedder | None,
    windows: Windows = Windows(),
    thresholds: Thresholds = Thresholds(),
    drift: DriftSettings = DriftSettings(),
    source: str = "",
) -> Analysis:
    """Compute the report of ``records``; ``embedder=None`` skips the drift test."""
    if not records:
        raise ValueError(f"{source or 'the log'}: no requests logged in the chosen time range")
    ordered = sorted(records, key=lambda r: r.time)
    reference, recent = split_windows(ordered, windows)
    low = thresholds.min_retrieval_score
    if low is None and top1_scores(reference):
        low = percentile(top1_scores(reference), WEAK_RETRIEVAL_PERCENTILE)
    per_model: dict[str, list[float]] = {}
    for r in ordered:
        if not failed(r):
            per_model.setdefault(r.model, []).append(r.latency_s)

    summary, vectors, verdict = None, None, ""
    ref_texts, recent_texts = _texts(reference), _texts(recent)
    if embedder is None:
        verdict = "not tested: no embedder"
    elif min(len(ref_texts), len(recent_texts)) < drift.min_queries:
        verdict = (
            f"not tested: {len(ref_texts)} reference and {len(recent_texts)} recent queries "
            f"with text, fewer than {drift.min_queries} (is text logging off?)"
        )
    else:
        summary, x, y = query_drift(
            ref_texts, recent_texts, embedder, drift, thresholds.drift_p_value
        )
        vectors = (x, y)
        verdict = (
            f"{'DRIFTED' if summary.drifted else 'no drift detected'}: MMD^2 = "
            f"{summary.mmd2:.4g}, p = {summary.p_value:.3g} "
            f"({summary.n_reference} reference vs {summary.n_recent} recent queries, "
            f"{summary.embedder})"
        )

    overall = window_figures("all", ordered, low)
    ref_figures = window_figures("reference", reference, low) if reference else None
    recent_figures = window_figures("recent", recent, low) if recent else None
    report = MonitorReport(
        source=source,
        generated_at=time.time(),
        volume=volume(ordered),
        overall=overall,
        reference=ref_figures,
        recent=recent_figures,
        latency_per_model={m: latency_figures(v) for m, v in sorted(per_model.items())},
        drift=summary,
        drift_verdict=verdict,
        thresholds=thresholds,
        alerts=check_thresholds(recent_figures or overall, summary, thresholds),
    )
    return Analysis(report, ordered, reference, recent, vectors)


def _when(t: float, fmt: str = "%Y-%m-%d %H:%M:%S UTC") -> str:
    return datetime.fromtimestamp(t, UTC).strftime(fmt)


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value:.1%}"


def _num(value: float | None, digits: int = 3) -> str:
    return "-" if value is None else f"{value:.{digits}g}"


def summary_rows(report: MonitorReport) -> list[tuple[str, list[str]]]:
    """(figure, one value per window) rows shared by the markdown and the terminal table."""
    windows = [w for w in (report.overall, report.reference, report.recent) if w is not None]

    def lat(w: WindowFigures, key: str) -> str:
        return "-" if w.latency is None else f"{getattr(w.latency, key):.3f}"

    return [
        ("requests stored", [str(w.requests) for w in windows]),
        ("requests (estimated)", [f"{w.estimated_requests:.0f}" for w in windows]),
        ("from (UTC)", [_when(w.start, "%Y-%m-%d %H:%M") for w in windows]),
        ("to (UTC)", [_when(w.end, "%Y-%m-%d %H:%M") for w in windows]),
        ("error rate", [_pct(w.error_rate) for w in windows]),
        ("latency p50 (s)", [lat(w, "p50_s") for w in windows]),
        ("latency p95 (s)", [lat(w, "p95_s") for w in windows]),
        ("latency p99 (s)", [lat(w, "p99_s") for w in windows]),
        ("mean prompt tokens", [f"{w.tokens.mean_prompt:.1f}" for w in windows]),
        ("mean completion tokens", [f"{w.tokens.mean_completion:.1f}" for w in windows]),
        (
            "completion tokens/s (median)",
            [_num(w.tokens.median_completion_tokens_per_s) for w in windows],
        ),
        ("refusal rate", [_pct(w.refusal_rate) for w in windows]),
        (
            "top-1 score mean",
            [_num(w.retrieval.mean_top1) if w.retrieval else "-" for w in windows],
        ),
        (
            "top-1 score median",
            [_num(w.retrieval.median_top1) if w.retrieval else "-" for w in windows],
        ),
        (
            "weak retrieval share",
            [_pct(w.retrieval.low_share) if w.retrieval else "-" for w in windows],
        ),
    ]


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return lines + ["| " + " | ".join(row) + " |" for row in rows]


def markdown(report: MonitorReport, plots: Sequence[str] = ()) -> str:
    windows = [w.name for w in (report.overall, report.reference, report.recent) if w]
    lines = [
        "# Monitoring report",
        "",
        f"Log `{report.source}`, generated {_when(report.generated_at)}.",
        "",
        *_table(["", *windows], [[name, *values] for name, values in summary_rows(report)]),
        "",
        "## Alerts",
        "",
    ]
    lines += [f"- **{a.message}**: {a.action}" for a in report.alerts] or ["None."]
    lines += ["", "## Query drift", "", report.drift_verdict, ""]
    if report.drift is not None:
        lines += [f"Mean-embedding cosine shift: {report.drift.mean_cosine_shift:.4f}.", ""]
        lines += ["Most novel recent queries:", ""]
        lines += [f"- {q[:200]!r}" for q in report.drift.novel_queries] + [""]
    lines += ["## Latency per model", ""]
    lines += _table(
        ["model", "requests", "p50 (s)", "p95 (s)", "p99 (s)"],
        [
            [m, str(f.count), f"{f.p50_s:.3f}", f"{f.p95_s:.3f}", f"{f.p99_s:.3f}"]
            for m, f in report.latency_per_model.items()
            if f is not None
        ],
    )
    vol = report.volume
    for title, counts in (
        ("Requests per model", vol.per_model),
        ("Requests per endpoint", vol.per_endpoint),
        ("Requests per status", vol.per_status),
        ("Requests per day (UTC)", vol.per_day),
    ):
        lines += [
            "",
            f"## {title}",
            "",
            *_table(["", "stored"], [[k, str(v)] for k, v in counts.items()]),
        ]
    if vol.top_errors:
        lines += ["", "## Commonest errors", ""]
        lines += [f"- {count} x `{message}`" for message, count in vol.top_errors]
    if plots:
        lines += ["", "## Plots", ""] + [f"![{p}]({p})" for p in plots]
    return "\n".join(lines) + "\n"
