"""`mentor monitor report` and `mentor monitor tail` end to end on synthetic request logs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from mentor.cli import app
from mentor.testing import HashEmbedder
from mentor.testing.requests import synthetic_records, write_synthetic_log

runner = CliRunner()


@pytest.fixture(autouse=True)
def hash_embedder(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Replace the real embedder loader with the hash embedder; record what was asked for."""
    asked: list[str] = []

    def load(name: str, **_: object) -> HashEmbedder:
        asked.append(name)
        return HashEmbedder(256, name=f"hash:{name}")

    monkeypatch.setattr("mentor.models.loading.load_embedder", load)
    return asked


def test_report_on_a_drifted_log(tmp_path: Path, hash_embedder: list[str]) -> None:
    log = write_synthetic_log(tmp_path / "requests.db", synthetic_records(400, drift_at=0.6))
    out = tmp_path / "report"
    args = ["monitor", "report", "--log", str(log), "--out", str(out), "--permutations", "200"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert hash_embedder == ["minilm-l6"]
    for figure in ("requests stored", "latency p95 (s)", "refusal rate", "top-1 score mean"):
        assert figure in result.output
    assert "drift: DRIFTED" in result.output and "ALERT queries drifted" in result.output
    assert "rebuild the index" in result.output
    assert {p.name for p in out.iterdir()} == {
        "report.json",
        "report.md",
        "requests.png",
        "latency.png",
        "retrieval.png",
        "drift.png",
    }
    report = json.loads((out / "report.json").read_text())
    assert report["volume"]["stored"] == 400 and report["drift"]["embedder"] == "hash:minilm-l6"

    failing = runner.invoke(app, [*args, "--fail-on-alert"])
    assert failing.exit_code == 1 and "ALERT" in failing.output


def test_report_on_a_steady_log_with_options(tmp_path: Path) -> None:
    records = synthetic_records(400, drift_at=None, interval_s=60.0)
    log = write_synthetic_log(tmp_path / "requests.db", records)
    result = runner.invoke(
        app,
        [
            "monitor",
            "report",
            "--log",
            str(log),
            "--out",
            str(tmp_path / "r"),
            "--recent-hours",
            "1.5",
            "--embedder",
            "mpnet-base",
            "--permutations",
            "200",
            "--max-p95-latency",
            "5",
            "--fail-on-alert",
        ],
    )
    assert result.exit_code == 0, result.output
    assert "no drift detected" in result.output and "no alerts" in result.output
    report = json.loads((tmp_path / "r" / "report.json").read_text())
    assert report["thresholds"]["max_p95_latency_s"] == 5.0
    assert report["recent"]["requests"] == 91  # 90 minutes of one request a minute, inclusive

    # Windows by time; drift off.
    start = records[0].time
    timed = runner.invoke(
        app,
        [
            "monitor",
            "report",
            "--log",
            str(log),
            "--out",
            str(tmp_path / "t"),
            "--no-drift",
            "--reference-until",
            str(start + 3600),
            "--recent-since",
            "2023-11-15T03:00:00",
        ],
    )
    assert timed.exit_code == 0, timed.output
    report = json.loads((tmp_path / "t" / "report.json").read_text())
    assert report["reference"]["requests"] == 60 and report["drift"] is None
    assert report["recent"]["start"] >= 1_700_017_200  # 2023-11-15T03:00Z


def test_report_errors_are_clear(tmp_path: Path) -> None:
    missing = runner.invoke(app, ["monitor", "report", "--log", str(tmp_path / "nope.db")])
    assert missing.exit_code == 1 and "no request log here" in missing.output
    log = write_synthetic_log(tmp_path / "requests.db", synthetic_records(50))
    both = runner.invoke(
        app,
        ["monitor", "report", "--log", str(log), "--recent-hours", "1", "--recent-share", "0.1"],
    )
    assert both.exit_code == 1 and "not both" in both.output
    bad_time = runner.invoke(app, ["monitor", "report", "--log", str(log), "--since", "lunch"])
    assert bad_time.exit_code == 1 and "--since: expected unix seconds" in bad_time.output
    empty = runner.invoke(
        app, ["monitor", "report", "--log", str(log), "--until", "2000-01-01", "--no-drift"]
    )
    assert empty.exit_code == 1 and "no requests logged" in empty.output


def test_tail(tmp_path: Path) -> None:
    log = write_synthetic_log(tmp_path / "requests.db", synthetic_records(30))
    result = runner.invoke(
        app, ["monitor", "tail", "--log", str(log), "-n", "5"], env={"COLUMNS": "200"}
    )
    assert result.exit_code == 0, result.output
    assert result.output.count("/v1/") == 5 and "2023-11-14" in result.output
