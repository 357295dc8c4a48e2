"""The figures of a monitoring report, computed from request records by pure functions.

Rates (errors, refusals, weak retrievals) and estimated volumes weight each stored row by the
inverse of the probability it was kept with, so they stay unbiased when the log samples
successes and keeps every error. Latency percentiles are over the stored successful requests
(status < 400): an error's latency says little about serving speed.
"""

from __future__ import annotations

import statistics
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from mentor.evaluate.stats import percentile
from mentor.monitor.log import RequestRecord

__all__ = [
    "LatencyFigures",
    "RetrievalFigures",
    "TokenFigures",
    "Volume",
    "WindowFigures",
    "latency_figures",
    "top1_scores",
    "volume",
    "window_figures",
]


def _weight(record: RequestRecord) -> float:
    return 1.0 / record.keep_probability if record.keep_probability > 0 else 1.0


def _rate(records: Sequence[RequestRecord], flags: Sequence[bool]) -> float | None:
    total = sum(_weight(r) for r in records)
    if total == 0.0:
        return None
    return sum(_weight(r) for r, flag in zip(records, flags, strict=True) if flag) / total


def failed(record: RequestRecord) -> bool:
    return record.status >= 400 or record.error is not None


def _utc(t: float, fmt: str) -> str:
    return datetime.fromtimestamp(t, UTC).strftime(fmt)


@dataclass(frozen=True)
class LatencyFigures:
    """Latency of successful requests, in seconds."""

    count: int
    mean_s: float
    p50_s: float
    p95_s: float
    p99_s: float
    max_s: float


def latency_figures(seconds: Sequence[float]) -> LatencyFigures | None:
    """Mean, p50/p95/p99 (linear interpolation, as numpy's default) and max; None when empty."""
    if not seconds:
        return None
    values = list(seconds)
    return LatencyFigures(
        count=len(values),
        mean_s=sum(values) / len(values),
        p50_s=percentile(values, 50),
        p95_s=percentile(values, 95),
        p99_s=percentile(values, 99),
        max_s=max(values),
    )


@dataclass(frozen=True)
class TokenFigures:
    """Tokens read and written by the stored requests."""

    prompt_total: int
    completion_total: int
    mean_prompt: float
    mean_completion: float
    median_completion_tokens_per_s: float | None
    """Median over generations of completion tokens / latency (includes time to first token)."""


@dataclass(frozen=True)
class RetrievalFigures:
    """Top-1 retrieval scores of the requests where retrieval ran."""

    count: int
    mean_top1: float
    median_top1: float
    low_threshold: float | None
    """Top-1 score under which a retrieval counts as weak (None: no threshold known)."""
    low_share: float | None
    """Weighted share of retrievals whose top-1 score is under ``low_threshold``."""


def top1_scores(records: Sequence[RequestRecord]) -> list[float]:
    return [r.retrieval_scores[0] for r in records if r.retrieval_scores]


@dataclass(frozen=True)
class WindowFigures:
    """Everything measured over one window of requests (all of them, reference or recent)."""

    name: str
    start: float
    """Unix time of the first request in the window."""
    end: float
    """Unix time of the last request in the window."""
    requests: int
    """Stored requests."""
    estimated_requests: float
    """Requests served, estimated from the sampling probabilities."""
    error_rate: float
    latency: LatencyFigures | None
    tokens: TokenFigures
    generations: int
    """Stored requests that generated an answer (``refused`` set)."""
    refusal_rate: float | None
    """Share of generations that said they cannot answer from the documents."""
    retrieval: RetrievalFigures | None


def _tokens(records: Sequence[RequestRecord]) -> TokenFigures:
    speeds = [
        r.completion_tokens / r.latency_s
        for r in records
        if r.completion_tokens > 0 and r.latency_s > 0 and not failed(r)
    ]
    n = max(1, len(records))
    prompt = sum(r.prompt_tokens for r in records)
    completion = sum(r.completion_tokens for r in records)
    return TokenFigures(
        prompt_total=prompt,
        completion_total=completion,
        mean_prompt=prompt / n,
        mean_completion=completion / n,
        median_completion_tokens_per_s=statistics.median(speeds) if speeds else None,
    )


def _retrieval(
    records: Sequence[RequestRecord], low_threshold: float | None
) -> RetrievalFigures | None:
    retrieved = [r for r in records if r.retrieval_scores]
    if not retrieved:
        return None
    top1 = top1_scores(retrieved)
    low_share = None
    if low_threshold is not None:
        low_share = _rate(retrieved, [s < low_threshold for s in top1])
    return RetrievalFigures(
        count=len(top1),
        mean_top1=sum(top1) / len(top1),
        median_top1=statistics.median(top1),
        low_threshold=low_threshold,
        low_share=low_share,
    )


def window_figures(
    name: str, records: Sequence[RequestRecord], low_threshold: float | None
) -> WindowFigures:
    """The figures of one non-empty window; ``low_threshold`` defines a weak retrieval."""
    if not records:
        raise ValueError(f"window {name!r} has no requests")
    generations = [r for r in records if r.refused is not None]
    return WindowFigures(
        name=name,
        start=min(r.time for r in records),
        end=max(r.time for r in records),
        requests=len(records),
        estimated_requests=sum(_weight(r) for r in records),
        error_rate=_rate(records, [failed(r) for r in records]) or 0.0,
        latency=latency_figures([r.latency_s for r in records if not failed(r)]),
        tokens=_tokens(records),
        generations=len(generations),
        refusal_rate=_rate(generations, [bool(r.refused) for r in generations]),
        retrieval=_retrieval(records, low_threshold),
    )


@dataclass(frozen=True)
class Volume:
    """How many requests, when, to which model and route, and how they ended."""

    stored: int
    estimated: float
    first: float
    last: float
    per_hour: dict[str, int]
    """Stored requests per UTC hour (``YYYY-MM-DDTHH:00Z``)."""
    per_day: dict[str, int]
    """Stored requests per UTC day."""
    per_model: dict[str, int]
    per_endpoint: dict[str, int]
    per_status: dict[str, int]
    top_errors: list[tuple[str, int]]
    """The commonest error messages (first line, up to 120 characters) and their counts."""


def _error_line(record: RequestRecord) -> str:
    text = (record.error or "").strip()
    return text.splitlines()[0][:120] if text else f"HTTP {record.status}"


def volume(records: Sequence[RequestRecord], top_errors: int = 5) -> Volume:
    if not records:
        raise ValueError("no requests to count")

    def counts(keys: list[str]) -> dict[str, int]:
        return dict(sorted(Counter(keys).items()))

    errors = Counter(_error_line(r) for r in records if failed(r))
    return Volume(
        stored=len(records),
        estimated=sum(_weight(r) for r in records),
        first=min(r.time for r in records),
        last=max(r.time for r in records),
        per_hour=counts([_utc(r.time, "%Y-%m-%dT%H:00Z") for r in records]),
        per_day=counts([_utc(r.time, "%Y-%m-%d") for r in records]),
        per_model=counts([r.model for r in records]),
        per_endpoint=counts([r.endpoint for r in records]),
        per_status=counts([str(r.status) for r in records]),
        top_errors=errors.most_common(top_errors),
    )
