"""``mentor distill --report-to ...``: a logit-KD run on tiny models reports its config, every
training step (the numbers of metrics.jsonl), the report and the student."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from mentor.cli import app
from mentor.testing import RecordingTracker, save_model_folder, tiny_qwen2
from mentor.train.trainer import read_metrics
from mentor.utils import trackers


def test_a_distill_run_reports_to_the_trackers_named(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    save_model_folder(*tiny_qwen2(seed=1, num_layers=2), tmp_path / "teacher")
    save_model_folder(
        *tiny_qwen2(seed=2, num_layers=1, hidden_size=32, intermediate_size=64),
        tmp_path / "student",
    )
    chats = [
        {"messages": [{"role": "user", "content": f"box {i}?"},
                      {"role": "assistant", "content": f"box {i} is red"}]}
        for i in range(12)
    ]  # fmt: skip
    (tmp_path / "train.jsonl").write_text("".join(json.dumps(c) + "\n" for c in chats))
    made: list[RecordingTracker] = []

    def recording(run_dir: Path, name: str) -> RecordingTracker:
        assert name.startswith("distill-out-")
        made.append(RecordingTracker())
        return made[-1]

    monkeypatch.setitem(trackers.BACKENDS, "trackio", recording)
    out = tmp_path / "out"
    result = CliRunner().invoke(
        app,
        [
            "distill", "--teacher", str(tmp_path / "teacher"),
            "--student", str(tmp_path / "student"), "--data", str(tmp_path / "train.jsonl"),
            "--out", str(out), "--batch-size", "4", "--max-steps", "2", "--max-length", "32",
            "--precision", "fp32", "--device", "cpu", "--similarity-embedder", "",
            "--report-to", "trackio",
        ],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    (tracker,) = made
    assert tracker.config is not None and tracker.config["report_to"] == ["trackio"]
    written = read_metrics(out / "metrics.jsonl")
    assert [s for s, _ in tracker.logs] == [1, 2]
    assert [m["loss"] for _, m in tracker.logs] == [r["loss"] for r in written]
    kinds = {p.name: kind for p, kind in tracker.artifacts}
    assert kinds["report.json"] == "report" and kinds["student"] == "model"
    assert tracker.status == "finished"
