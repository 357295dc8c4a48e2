"""Report figures, windows, drift verdicts, alerts and the files the report writes."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from mentor.monitor.figures import latency_figures, volume, window_figures
from mentor.monitor.files import write_report
from mentor.monitor.log import RequestRecord
from mentor.monitor.report import (
    DriftSettings,
    Thresholds,
    Windows,
    analyse,
    split_windows,
)
from mentor.testing import HashEmbedder
from mentor.testing.requests import synthetic_records

FAST = DriftSettings(permutations=200)


def _at(t: float, **fields: object) -> RequestRecord:
    base = RequestRecord(
        time=t, endpoint="/v1/chat/completions", model="m", status=200, latency_s=1.0
    )
    return replace(base, **fields)  # type: ignore[arg-type]


def test_latency_percentiles_match_numpy() -> None:
    values = np.random.default_rng(0).lognormal(size=257).tolist()
    figures = latency_figures(values)
    assert figures is not None and figures.count == 257
    for q, got in ((50, figures.p50_s), (95, figures.p95_s), (99, figures.p99_s)):
        assert got == pytest.approx(float(np.percentile(values, q)), rel=1e-12)
    assert figures.max_s == max(values) and latency_figures([]) is None


def test_rates_are_weighted_by_sampling() -> None:
    # 90 successes kept at 10% stand for 900; 10 errors kept always stand for 10.
    records = [_at(i, keep_probability=0.1) for i in range(90)]
    records += [_at(100 + i, status=500, keep_probability=1.0) for i in range(10)]
    figures = window_figures("all", records, low_threshold=None)
    assert figures.estimated_requests == pytest.approx(910)
    assert figures.error_rate == pytest.approx(10 / 910)
    assert figures.latency is not None and figures.latency.count == 90  # successes only


def test_refusal_and_retrieval_figures() -> None:
    records = [
        _at(0, refused=True, retrieval_scores=(0.2, 0.1)),
        _at(1, refused=False, retrieval_scores=(0.9,)),
        _at(2, refused=False, retrieval_scores=(0.6, 0.5)),
        _at(3, endpoint="/v1/retrieve"),  # neither a generation nor a retrieval
    ]
    figures = window_figures("w", records, low_threshold=0.5)
    assert figures.generations == 3 and figures.refusal_rate == pytest.approx(1 / 3)
    assert figures.retrieval is not None
    assert figures.retrieval.mean_top1 == pytest.approx((0.2 + 0.9 + 0.6) / 3)
    assert figures.retrieval.median_top1 == pytest.approx(0.6)
    assert figures.retrieval.low_share == pytest.approx(1 / 3)


def test_volume_counts() -> None:
    records = [
        _at(3600.0 * h, model=f"m{h % 2}", status=200 if h else 503, error=None) for h in range(5)
    ]
    vol = volume(records)
    assert vol.stored == 5 and len(vol.per_hour) == 5 and vol.per_day == {"1970-01-01": 5}
    assert vol.per_model == {"m0": 3, "m1": 2} and vol.per_status == {"200": 4, "503": 1}
    assert vol.top_errors == [("HTTP 503", 1)]


def test_split_windows() -> None:
    records = [_at(float(i) * 60) for i in range(100)]  # one a minute
    reference, recent = split_windows(records, Windows())
    assert [r.time for r in reference] == [i * 60.0 for i in range(50)]
    assert [r.time for r in recent] == [i * 60.0 for i in range(80, 100)]
    reference, recent = split_windows(records, Windows(recent_hours=1.0))
    assert len(recent) == 61 and len(reference) == 39  # the reference stops where recent starts
    reference, recent = split_windows(
        records, Windows(reference_since=0, reference_until=600, recent_since=5400)
    )
    assert len(reference) == 10 and len(recent) == 10
    with pytest.raises(ValueError, match="recent_share"):
        Windows(recent_share=0.0)


def test_drifted_log_raises_the_right_alerts() -> None:
    records = synthetic_records(500, drift_at=0.6, seed=1)
    analysis = analyse(records, embedder=HashEmbedder(256), drift=FAST)
    report = analysis.report
    assert report.drift is not None and report.drift.drifted
    assert report.drift.p_value == 1 / 201 and report.drift_verdict.startswith("DRIFTED")
    checks = {a.check for a in report.alerts}
    assert checks == {"drift_p_value", "refusal_rate", "low_retrieval_share"}
    assert all(a.action for a in report.alerts)
    # The most novel recent queries are about the new topics.
    novel = " ".join(report.drift.novel_queries)
    assert not any(word in novel for word in ("invoice", "refund", "receipt"))


def test_steady_log_raises_no_alert() -> None:
    records = synthetic_records(500, drift_at=None, seed=2)
    report = analyse(records, embedder=HashEmbedder(256), drift=FAST).report
    assert report.drift is not None and not report.drift.drifted
    assert report.drift.p_value > 0.05, report.drift_verdict
    assert report.alerts == []
    assert report.drift_verdict.startswith("no drift detected")


def test_latency_and_error_alerts() -> None:
    slow = synthetic_records(300, drift_at=0.8, latency_after_s=30.0, refusal_rate_after=0.05)
    report = analyse(slow, embedder=None).report
    assert [a.check for a in report.alerts if a.check != "low_retrieval_share"] == ["p95_latency"]
    failing = [
        replace(r, status=503, error="overloaded") if i % 5 == 0 else r
        for i, r in enumerate(synthetic_records(300, drift_at=None))
    ]
    report = analyse(failing, embedder=None, thresholds=Thresholds(max_error_rate=0.1)).report
    assert [a.check for a in report.alerts] == ["error_rate"]
    assert report.volume.top_errors[0][0] == "overloaded"


def test_drift_is_skipped_with_a_reason() -> None:
    records = synthetic_records(200)
    assert analyse(records, embedder=None).report.drift_verdict == "not tested: no embedder"
    no_text = [replace(r, query=None) for r in records]
    verdict = analyse(no_text, embedder=HashEmbedder()).report.drift_verdict
    assert verdict.startswith("not tested: 0 reference and 0 recent queries")
    with pytest.raises(ValueError, match="no requests"):
        analyse([], embedder=None)


def test_write_report_files(tmp_path: Path) -> None:
    analysis = analyse(synthetic_records(300), embedder=HashEmbedder(128), drift=FAST)
    written = write_report(analysis, tmp_path / "out")
    names = {p.name for p in written}
    assert names == {
        "report.json",
        "report.md",
        "requests.png",
        "latency.png",
        "retrieval.png",
        "drift.png",
    }
    for path in written:
        assert path.stat().st_size > 0
        if path.suffix == ".png":
            assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    data = json.loads((tmp_path / "out" / "report.json").read_text())
    assert data["drift"]["drifted"] is True and data["recent"]["name"] == "recent"
    assert {a["check"] for a in data["alerts"]} >= {"drift_p_value"}
    md = (tmp_path / "out" / "report.md").read_text()
    assert "## Alerts" in md and "queries drifted" in md and "![drift.png](drift.png)" in md


def test_plots_skip_what_has_no_data(tmp_path: Path) -> None:
    records = [_at(float(i), endpoint="/v1/embeddings") for i in range(30)]
    written = write_report(analyse(records, embedder=None), tmp_path)
    assert {p.name for p in written} == {"report.json", "report.md", "requests.png", "latency.png"}


@pytest.mark.packaged
def test_drift_verdicts_with_minilm() -> None:
    from mentor.models.loading import load_embedder

    embedder = load_embedder("minilm-l6", device="cpu")
    drifted = analyse(synthetic_records(300, drift_at=0.6), embedder=embedder, drift=FAST)
    steady = analyse(synthetic_records(300, drift_at=None), embedder=embedder, drift=FAST)
    assert drifted.report.drift is not None and drifted.report.drift.drifted
    assert steady.report.drift is not None and not steady.report.drift.drifted
    assert drifted.report.drift.mean_cosine_shift > 5 * steady.report.drift.mean_cosine_shift
