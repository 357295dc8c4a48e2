"""What ``mentor finetune --report-to ...`` reports: the config, every step's metrics (the same
numbers as metrics.jsonl), the report files and the adapter; read back from a fake tracker and
from the real TensorBoard event files and MLflow file store where those packages are installed."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from mentor.cli import app
from mentor.finetune.commands import run
from mentor.finetune.config import load_config
from mentor.testing import RecordingTracker, save_tiny_llama
from mentor.train.trainer import read_metrics

runner = CliRunner()
STEPS = 3


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("ft-track")
    save_tiny_llama(root / "base", seed=0)
    chats = [
        {"messages": [{"role": "user", "content": f"box {i}?"},
                      {"role": "assistant", "content": f"box {i} is red"}]}
        for i in range(16)
    ]  # fmt: skip
    (root / "train.jsonl").write_text("".join(json.dumps(c) + "\n" for c in chats))
    return root


def _overrides(ws: Path, out: Path) -> dict[str, object]:
    return {
        "model": str(ws / "base"), "data": str(ws / "train.jsonl"), "out": str(out),
        "max_length": 32, "device": "cpu", "train.batch_size": 2, "train.max_steps": STEPS,
        "train.eval_every": 2, "train.precision": "fp32", "train.lr": 5e-3,
    }  # fmt: skip


def test_a_finetune_run_reports_config_every_step_report_and_adapter(
    workspace: Path, tmp_path: Path
) -> None:
    out = tmp_path / "run"
    tracker = RecordingTracker()
    run(load_config(None, _overrides(workspace, out)), False, trackers=[("fake", tracker)])

    assert tracker.config is not None
    assert tracker.config["model"] == str(workspace / "base")
    assert tracker.config["train"]["max_steps"] == STEPS
    written = read_metrics(out / "metrics.jsonl")
    assert [step for step, _ in tracker.logs] == [1, 2, 3]
    assert [m for _, m in tracker.logs] == [
        {k: float(v) for k, v in r.items() if k != "step"} for r in written
    ]
    assert {"loss", "lr", "grad_norm", "tokens_per_s"} <= set(tracker.logs[0][1])
    assert "val_loss" in tracker.logs[1][1]  # validation every 2 steps
    assert [(p.name, kind) for p, kind in tracker.artifacts] == [
        ("report.json", "report"),
        ("report.md", "report"),
        ("metrics.jsonl", "report"),
        ("loss_curve.png", "report"),
        ("adapter", "adapter"),
    ]
    assert tracker.calls[0] == "start"
    assert tracker.calls[-1] == "finish"
    assert tracker.status == "finished"


def test_a_tracker_that_fails_every_call_does_not_stop_training(
    workspace: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "run"
    broken = RecordingTracker(fail_on=("start", "log", "artifact", "finish"))
    run(load_config(None, _overrides(workspace, out)), False, trackers=[("broken", broken)])
    assert (out / "adapter" / "adapter_model.safetensors").exists()
    assert len(read_metrics(out / "metrics.jsonl")) == STEPS
    assert broken.calls == ["start"]
    assert capsys.readouterr().err.count("tracker broken failed") == 1


def test_a_missing_tracker_package_fails_before_training(
    workspace: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import sys

    monkeypatch.setitem(sys.modules, "wandb", None)
    out = tmp_path / "run"
    args = ["finetune", "--model", str(workspace / "base"), "--data",
            str(workspace / "train.jsonl"), "--out", str(out), "--report-to", "wandb"]  # fmt: skip
    result = runner.invoke(app, args)
    assert result.exit_code == 1
    assert "pip install 'mentor[wandb]'" in result.output
    assert not (out / "metrics.jsonl").exists()


INSTALLED = [n for n in ("tensorboard", "mlflow") if importlib.util.find_spec(n) is not None]


@pytest.mark.skipif(
    not INSTALLED, reason="neither tensorboard nor mlflow is installed (mentor[tensorboard])"
)
def test_tensorboard_and_mlflow_get_the_run_from_the_command_line(
    workspace: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each of the two that is installed (the dev extra has tensorboard; mlflow is
    mentor[mlflow]) gets the run from one command and is read back with its own reader."""
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("MLFLOW_EXPERIMENT_NAME", raising=False)
    out = tmp_path / "run"
    args = [
        "finetune", "--model", str(workspace / "base"), "--data", str(workspace / "train.jsonl"),
        "--out", str(out), "--batch-size", "2", "--max-length", "32", "--max-steps", str(STEPS),
        "--eval-every", "2", "--precision", "fp32", "--device", "cpu",
        *(arg for name in INSTALLED for arg in ("--report-to", name)),
    ]  # fmt: skip
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "failed" not in result.output
    losses = [r["loss"] for r in read_metrics(out / "metrics.jsonl")]
    if "tensorboard" in INSTALLED:
        _check_tensorboard(out, losses)
    if "mlflow" in INSTALLED:
        _check_mlflow(out, losses)


def _check_tensorboard(out: Path, losses: list[float]) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    (logdir,) = (out / "tensorboard").iterdir()
    events = EventAccumulator(str(logdir), size_guidance={"tensors": 0, "scalars": 0})
    events.Reload()
    scalars = events.Scalars("loss")
    assert [e.step for e in scalars] == [1, 2, 3]
    assert [e.value for e in scalars] == pytest.approx(losses, rel=1e-6)
    assert [e.step for e in events.Scalars("val_loss")] == [2, 3]
    texts = events.Tags()["tensors"]
    assert {"config/text_summary", "report/report.md/text_summary"} <= set(texts)


def _check_mlflow(out: Path, losses: list[float]) -> None:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{(out / 'mlflow.db').resolve()}")
    experiment = client.get_experiment_by_name("mentor")
    assert experiment is not None
    (found,) = client.search_runs([experiment.experiment_id])
    assert found.info.status == "FINISHED"
    assert found.data.params["train.max_steps"] == str(STEPS)
    history = client.get_metric_history(found.info.run_id, "loss")
    assert [m.step for m in history] == [1, 2, 3]
    assert [m.value for m in history] == pytest.approx(losses, rel=1e-12)
    stored = {a.path for a in client.list_artifacts(found.info.run_id, "report")}
    assert {"report/report.json", "report/report.md", "report/metrics.jsonl"} <= stored
    adapter = {a.path for a in client.list_artifacts(found.info.run_id, "adapter/adapter")}
    assert "adapter/adapter/adapter_model.safetensors" in adapter
    assert (out / "mlartifacts").is_dir()  # artifacts stay in the run folder, not the cwd


def test_under_torchrun_only_process_0_reports(workspace: Path, tmp_path: Path) -> None:
    pytest.importorskip("tensorboard", reason="pip install 'mentor[tensorboard]' to test it")
    import os
    import subprocess
    import sys

    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out = tmp_path / "ddp"
    launched = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "-m",
         "mentor.cli", "finetune", "--model", str(workspace / "base"), "--data",
         str(workspace / "train.jsonl"), "--out", str(out), "--batch-size", "2",
         "--max-length", "32", "--max-steps", str(STEPS), "--precision", "fp32",
         "--device", "cpu", "--report-to", "tensorboard"],
        env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert launched.returncode == 0, launched.stderr[-3000:]
    (logdir,) = (out / "tensorboard").iterdir()  # one run, not one per process
    assert len(list(logdir.glob("events.out.tfevents.*"))) == 1
    events = EventAccumulator(str(logdir), size_guidance={"scalars": 0})
    events.Reload()
    assert [e.step for e in events.Scalars("loss")] == [1, 2, 3]
