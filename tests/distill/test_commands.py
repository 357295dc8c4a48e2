"""``mentor distill`` end to end on tiny model folders: logit KD with an offline teacher that a
second run reuses without loading the teacher, the tokenizer check, sequence KD across
tokenizers, and a student built from every other teacher layer."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from mentor.cli import app
from mentor.distill import recipe
from mentor.testing import FakeVLLM, save_model_folder, save_tiny_llama, tiny_qwen2
from mentor.train.trainer import read_metrics

runner = CliRunner()
COLOURS = ["red", "green", "blue", "amber", "violet", "teal", "coral", "olive"]


def _chat(i: int) -> dict[str, object]:
    return {
        "messages": [
            {"role": "user", "content": f"what colour is box {i}?"},
            {"role": "assistant", "content": f"box {i} is {COLOURS[i % len(COLOURS)]}"},
        ]
    }


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("kd")
    save_model_folder(*tiny_qwen2(seed=1, num_layers=4), root / "teacher")
    save_model_folder(
        *tiny_qwen2(seed=2, num_layers=1, hidden_size=32, intermediate_size=64), root / "student"
    )
    save_tiny_llama(root / "other-vocab", seed=3, vocab_size=300)
    (root / "train.jsonl").write_text("".join(json.dumps(_chat(i)) + "\n" for i in range(24)))
    test = [{"question": f"what colour is box {i}?", "answer": COLOURS[i % 8]} for i in range(3)]
    (root / "test.jsonl").write_text("".join(json.dumps(t) + "\n" for t in test))
    return root


def _args(
    ws: Path, out: Path, *extra: str, student: str = "student", device: str = "cpu"
) -> list[str]:
    return [
        "distill", "--teacher", str(ws / "teacher"), "--student", str(ws / student),
        "--data", str(ws / "train.jsonl"), "--eval", str(ws / "test.jsonl"), "--out", str(out),
        "--batch-size", "4", "--epochs", "1", "--lr", "5e-3", "--max-length", "64",
        "--precision", "fp32", "--device", device, "--max-new-tokens", "8",
        "--similarity-embedder", "", *extra,
    ]  # fmt: skip


@pytest.mark.e2e
def test_logit_kd_writes_the_report_and_a_second_run_reuses_the_teacher_cache(
    workspace: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, test_device: str
) -> None:
    """The run that crashed in the report on an H200 (the cached agreement)."""
    args = ["--top-k", "8", "--cache-dir", str(tmp_path / "cache")]
    first = runner.invoke(app, _args(workspace, tmp_path / "a", *args, device=test_device))
    assert first.exit_code == 0, first.output
    data = json.loads((tmp_path / "a" / "report.json").read_text())
    assert "cache computed" in data["teacher_logits"]
    pair = data["teacher_student"]
    assert pair["examples"] == 3 and 0 <= pair["agreement"]["top1"] <= 1
    assert pair["param_ratio"] < 1
    assert pair["retention"] is None or pair["retention"] >= 0  # None when the teacher scores 0
    assert pair["similarity"]["bleu"] >= 0
    assert set(pair["student_before"]) == {"exact_match", "token_f1", "rouge_l", "contains"}
    report = (tmp_path / "a" / "report.md").read_text()
    assert "Teacher and student" in report and "top-1 agreement" in report
    assert (tmp_path / "a" / "student" / "model.safetensors").exists()

    def no_teacher(self):  # type: ignore[no-untyped-def]
        raise AssertionError("the teacher was loaded although everything is cached")

    monkeypatch.setattr(recipe.LazyTeacher, "__call__", no_teacher)
    second = runner.invoke(
        app, _args(workspace, tmp_path / "b", *args, "--student-method", "lora", device=test_device)
    )
    assert second.exit_code == 0, second.output
    data = json.loads((tmp_path / "b" / "report.json").read_text())
    assert "reused, no teacher forward pass" in data["teacher_logits"]
    assert (tmp_path / "b" / "adapter" / "adapter_model.safetensors").exists()


def test_logit_kd_refuses_different_tokenizers(workspace: Path, tmp_path: Path) -> None:
    result = runner.invoke(app, _args(workspace, tmp_path / "x", student="other-vocab"))
    assert result.exit_code == 1
    assert "different tokenizers" in result.output and "--method sequence" in result.output


@pytest.mark.e2e
def test_sequence_kd_works_across_tokenizers(
    workspace: Path, tmp_path: Path, test_device: str
) -> None:
    out = tmp_path / "seq"
    result = runner.invoke(
        app,
        _args(workspace, out, "--method", "sequence", student="other-vocab", device=test_device),
    )
    assert result.exit_code == 0, result.output
    lines = (out / "teacher_answers.jsonl").read_text().splitlines()
    assert len(lines) == 24
    assert json.loads((out / "teacher_answers.provenance.json").read_text())["count"] == 24
    data = json.loads((out / "report.json").read_text())
    assert data["teacher_student"]["agreement"] is None
    assert "not comparable (different tokenizers)" in (out / "report.md").read_text()


@pytest.mark.e2e
def test_online_teacher_and_a_student_from_every_other_layer(
    workspace: Path, tmp_path: Path, test_device: str
) -> None:
    """The uncached agreement: teacher and student forward passes side by side."""
    out = tmp_path / "layers"
    result = runner.invoke(
        app, _args(workspace, out, "--top-k", "0", "--keep-every", "2", device=test_device)
    )
    assert result.exit_code == 0, result.output
    data = json.loads((out / "report.json").read_text())
    assert data["teacher_logits"].startswith("online teacher")
    assert data["teacher_student"]["param_ratio"] < 1
    assert json.loads((out / "student" / "config.json").read_text())["num_hidden_layers"] == 2


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "mentor.cli", *args]


@pytest.mark.slow
def test_kill_9_then_resume_reaches_the_same_losses(workspace: Path, tmp_path: Path) -> None:
    settings = ["--epochs", "6", "--save-every", "3", "--eval-every", "1000", "--batch-size", "2",
                "--top-k", "8", "--cache-dir", str(tmp_path / "cache")]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    whole = subprocess.run(
        _cli(*_args(workspace, tmp_path / "whole", *settings)), env=env, capture_output=True,
        text=True, timeout=600,
    )  # fmt: skip
    assert whole.returncode == 0, whole.stderr[-2000:]
    expected = [m["loss"] for m in read_metrics(tmp_path / "whole" / "metrics.jsonl")]

    cut = tmp_path / "cut"
    proc = subprocess.Popen(
        _cli(*_args(workspace, cut, *settings)), env=env, stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )  # fmt: skip
    deadline = time.time() + 300
    while time.time() < deadline and not (cut / "checkpoints" / "step-000006").exists():
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    done = len(read_metrics(cut / "metrics.jsonl"))
    assert 6 <= done < len(expected), "the kill must land mid-run"
    resumed = subprocess.run(
        _cli(*_args(workspace, cut, *settings, "--resume")), env=env, capture_output=True,
        text=True, timeout=600,
    )  # fmt: skip
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    got = [m["loss"] for m in read_metrics(cut / "metrics.jsonl")]
    assert got == pytest.approx(expected, rel=1e-6, abs=1e-7)


@pytest.mark.slow
def test_the_same_command_runs_under_torchrun(workspace: Path, tmp_path: Path) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    launched = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "-m",
         "mentor.cli", *_args(workspace, tmp_path / "ddp", "--max-steps", "3", "--top-k", "8",
                              "--batch-size", "2")],
        env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert launched.returncode == 0, launched.stderr[-3000:]
    assert len(read_metrics(tmp_path / "ddp" / "metrics.jsonl")) == 3
    assert (tmp_path / "ddp" / "report.md").exists()


@pytest.mark.e2e
def test_classifier_distillation_from_the_same_command(
    tmp_path: Path, device_args: list[str]
) -> None:
    from mentor.testing import tiny_sentence_transformer_folder
    from mentor.train.classifier import LabelSet, build_classifier, save_classifier

    teacher_enc = tiny_sentence_transformer_folder(tmp_path / "t-enc", seed=0)
    student_enc = tiny_sentence_transformer_folder(tmp_path / "s-enc", seed=1)
    teacher, tok = build_classifier(teacher_enc, LabelSet(("card", "refund")), method="full")
    save_classifier(teacher, tmp_path / "teacher", tokenizer=tok, base_model=str(teacher_enc))
    rows = ["text,category"] + [
        f"{word} {i},{label}"
        for i in range(12)
        for word, label in (("refund money back", "refund"), ("card lost stolen", "card"))
    ]
    (tmp_path / "labels.csv").write_text("\n".join(rows) + "\n")
    (tmp_path / "extra.txt").write_text("my card is gone\nplease send my money back\n")
    result = runner.invoke(
        app,
        ["distill", "--teacher", str(tmp_path / "teacher"), "--student", str(student_enc),
         "--data", str(tmp_path / "labels.csv"), "--unlabelled", str(tmp_path / "extra.txt"),
         "--out", str(tmp_path / "kd"), "--epochs", "2", "--batch-size", "4", *device_args],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "kd" / "report.json").read_text())
    assert report["unlabelled_rows"] == 2 and report["labels"] == 2
    assert "held out as the test set" in result.output


def test_a_student_built_from_a_smaller_config(workspace: Path, tmp_path: Path) -> None:
    config = tmp_path / "kd.yaml"
    config.write_text(
        f"teacher: {workspace / 'teacher'}\ndata: {workspace / 'train.jsonl'}\n"
        "student_config:\n  num_hidden_layers: 1\n  intermediate_size: 32\n"
        "kd:\n  top_k: 4\ntrain:\n  max_steps: 2\n  batch_size: 4\n  precision: fp32\n"
    )
    out = tmp_path / "small"
    result = runner.invoke(
        app, ["distill", "--config", str(config), "--out", str(out), "--device", "cpu"]
    )
    assert result.exit_code == 0, result.output
    saved = json.loads((out / "student" / "config.json").read_text())
    assert saved["num_hidden_layers"] == 1 and saved["intermediate_size"] == 32
    lora = runner.invoke(
        app, ["distill", "--config", str(config), "--out", str(tmp_path / "x"),
              "--student-method", "lora"],
    )  # fmt: skip
    assert lora.exit_code == 1 and "train it in full" in lora.output


def test_sequence_kd_teacher_answers_come_from_the_chosen_engine(
    workspace: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake = FakeVLLM()
    monkeypatch.setitem(sys.modules, "mentor.models.vllm", fake.module())
    out = tmp_path / "seq-vllm"
    args = _args(workspace, out, "--method", "sequence", "--max-steps", "1", "--engine", "vllm")
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert [o.folder for o in fake.opened] == [workspace / "teacher"]  # the teacher, once
    assert len(fake.opened[0].request_adapters) == 24
    lines = (out / "teacher_answers.jsonl").read_text().splitlines()
    answers = [json.loads(line) for line in lines]
    assert all(a["messages"][-1]["content"] == "nothing scripted" for a in answers)


def test_gradient_checkpointing_reaches_the_student(
    workspace: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from mentor.train import checkpointing

    enabled: list[str] = []
    original = checkpointing.enable_checkpointing
    monkeypatch.setattr(
        checkpointing,
        "enable_checkpointing",
        lambda model: enabled.append(type(model).__name__) or original(model),
    )
    out = tmp_path / "run"
    args = _args(workspace, out, "--max-steps", "2", "--gradient-checkpointing", "--top-k", "0")
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert enabled == ["Qwen2ForCausalLM"]  # the student; the teacher is never trained
    assert len(read_metrics(out / "metrics.jsonl")) == 2
