"""What ``mentor bakeoff --report-to ...`` hands the trackers: each trained arm's curve, every
arm's scores, the scores table and the reports; and the flag and YAML key reaching the run."""

from __future__ import annotations

import csv
import dataclasses
import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from mentor.bakeoff.config import load_bakeoff_config
from mentor.bakeoff.results import ArmResult, BakeoffResult, Costs, Estimate, Exported, Verdict
from mentor.bakeoff.tracking import SCORES_FILE, report_bakeoff, scores_table
from mentor.cli import app
from mentor.testing import RecordingTracker
from mentor.utils.tracking import Fanout, Tracker

EXAMPLE = Path(__file__).parents[2] / "examples" / "bakeoff" / "tidepool.yaml"


def _result() -> BakeoffResult:
    curve = [{"step": 1.0, "loss": 2.0}, {"step": 2.0, "loss": 1.5, "val_loss": 1.7}]
    base = ArmResult(
        "closed-book", "base", ["prompting"], "the base", questions=10,
        quality={"token_f1": Estimate(0.3, 0.2, 0.4)}, latency_ms={"p50": 120.0},
        peak_memory_mb=900.0, costs=Costs(0.0, 0.05, 50.0, None),
    )  # fmt: skip
    lora = ArmResult(
        "lora", "lora", ["lora"], "tuned", questions=10,
        quality={"token_f1": Estimate(0.5, 0.4, 0.6)}, vs_base=Estimate(20.0, 10.0, 30.0),
        latency_ms={"p50": 130.0}, peak_memory_mb=950.0, costs=Costs(0.1, 0.05, 80.0, 1.5),
        curve=curve,
    )  # fmt: skip
    failed = ArmResult("int4", "base", ["quantization"], "quantized", "failed", error="OOM")
    return BakeoffResult(
        name="t", profile=None, primary="token_f1", metrics=["token_f1"], base="closed-book",
        arms=[base, lora, failed],
    )  # fmt: skip


def test_scores_table_has_a_row_per_arm() -> None:
    rows = scores_table(_result())
    assert [r["arm"] for r in rows] == ["closed-book", "lora", "int4"]
    assert rows[1] == {
        "arm": "lora", "status": "done", "token_f1": 0.5, "vs_base_points": 20.0,
        "latency_p50_ms": 130.0, "peak_memory_mb": 950.0, "yearly_usd": 80.0,
    }  # fmt: skip
    assert rows[2]["token_f1"] is None and rows[2]["status"] == "failed"


def test_report_bakeoff_sends_curves_scores_table_and_reports(tmp_path: Path) -> None:
    (tmp_path / "report.json").write_text("{}")
    (tmp_path / "report.html").write_text("<html></html>")
    recorded = RecordingTracker()
    report_bakeoff(Fanout([recorded]), _result(), tmp_path)
    assert recorded.logs[:2] == [
        (1, {"lora/loss": 2.0}),
        (2, {"lora/loss": 1.5, "lora/val_loss": 1.7}),
    ]
    step, scores = recorded.logs[2]
    assert step == 0
    assert scores["score/closed-book/token_f1"] == 0.3
    assert scores["score/lora/vs_base_points"] == 20.0
    assert not any(k.startswith("score/int4/") for k in scores)  # a failed arm has no numbers
    assert [(p.name, kind) for p, kind in recorded.artifacts] == [
        (SCORES_FILE, "table"), ("report.json", "report"), ("report.html", "report"),
    ]  # fmt: skip
    with (tmp_path / SCORES_FILE).open() as fh:
        assert [r["arm"] for r in csv.DictReader(fh)] == ["closed-book", "lora", "int4"]


def test_curves_already_sent_live_are_not_sent_again_and_the_gguf_is_an_artifact(
    tmp_path: Path,
) -> None:
    result = _result()
    result.arms.append(dataclasses.replace(result.arms[1], name="lora+rag"))  # the same model
    gguf = tmp_path / "export" / "lora" / "lora.f16.gguf"
    gguf.parent.mkdir(parents=True)
    gguf.write_bytes(b"GGUF")
    result.verdict = Verdict(
        arm="lora", methods=["lora"], paragraph="", reasons=[], fallback="", fallback_arm=None,
        monitoring=[], advisor_methods=[], advisor_summary="", agrees=True, eligible=[],
        excluded={}, export=Exported("lora", str(gguf), "f16"),
    )  # fmt: skip
    again = RecordingTracker()
    report_bakeoff(Fanout([again]), result, tmp_path)
    assert [s for s, m in again.logs if "lora/loss" in m] == [1, 2]  # once per model, not arm
    live = RecordingTracker()
    report_bakeoff(Fanout([live]), result, tmp_path, logged={"lora"})
    assert not any("lora/loss" in m for _, m in live.logs)
    assert (gguf, "model") in live.artifacts


def test_report_to_reaches_the_bakeoff_from_yaml_and_flag(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from mentor.bakeoff import runner

    config = load_bakeoff_config(EXAMPLE, overrides={"report_to": "mlflow, tensorboard"})
    assert config.report_to == ["mlflow", "tensorboard"]
    with pytest.raises(ValueError, match="report_to"):
        load_bakeoff_config(EXAMPLE, overrides={"report_to": ["comet"]})

    pytest.importorskip("tensorboard", reason="pip install 'mentor[tensorboard]' to test it")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    seen: list[list[str]] = []

    def measured(settings: object, *, tracker: Tracker, **_: object) -> BakeoffResult:
        seen.append(settings.report_to)  # type: ignore[attr-defined]
        (tmp_path / "out" / "report.json").write_text(json.dumps({}))
        report_bakeoff(tracker, _result(), tmp_path / "out")  # as run_bakeoff ends
        return _result()

    monkeypatch.setattr(runner, "run_bakeoff", measured)
    out = tmp_path / "out"
    out.mkdir()
    result = CliRunner().invoke(
        app, ["bakeoff", str(EXAMPLE), "--out", str(out), "--report-to", "tensorboard"]
    )
    assert result.exit_code == 0, result.output
    assert seen == [["tensorboard"]]
    (logdir,) = (out / "tensorboard").iterdir()
    events = EventAccumulator(str(logdir), size_guidance={"scalars": 0, "tensors": 0})
    events.Reload()
    assert [(e.step, e.value) for e in events.Scalars("lora/loss")] == [(1, 2.0), (2, 1.5)]
    assert events.Scalars("score/lora/token_f1")[0].value == pytest.approx(0.5)
    assert "table/scores.csv/text_summary" in events.Tags()["tensors"]
