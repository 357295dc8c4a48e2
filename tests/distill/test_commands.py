"""``mentor distill`` end to end on tiny model folders: logit KD with an offline teacher that a
second run reuses without loading the teacher, the tokenizer check, sequence KD across
tokenizers, and a student built from every other teacher layer."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from mentor.cli import app
from mentor.distill import recipe
from mentor.testing import save_model_folder, save_tiny_llama, tiny_qwen2

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


def _args(ws: Path, out: Path, *extra: str, student: str = "student") -> list[str]:
    return [
        "distill", "--teacher", str(ws / "teacher"), "--student", str(ws / student),
        "--data", str(ws / "train.jsonl"), "--eval", str(ws / "test.jsonl"), "--out", str(out),
        "--batch-size", "4", "--epochs", "1", "--lr", "5e-3", "--max-length", "64",
        "--precision", "fp32", "--device", "cpu", "--max-new-tokens", "8",
        "--similarity-embedder", "", *extra,
    ]  # fmt: skip


def test_logit_kd_writes_the_report_and_a_second_run_reuses_the_teacher_cache(
    workspace: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    args = ["--top-k", "8", "--cache-dir", str(tmp_path / "cache")]
    first = runner.invoke(app, _args(workspace, tmp_path / "a", *args))
    assert first.exit_code == 0, first.output
    data = json.loads((tmp_path / "a" / "report.json").read_text())
    assert "cache computed" in data["teacher_logits"]
    pair = data["teacher_student"]
    assert pair["examples"] == 3 and 0 <= pair["agreement"]["top1"] <= 1
    assert pair["param_ratio"] < 1
    assert pair["retention"] is None or pair["retention"] >= 0  # None when the teacher scores 0
    assert pair["similarity"]["bleu"] >= 0
    report = (tmp_path / "a" / "report.md").read_text()
    assert "Teacher and student" in report and "top-1 agreement" in report
    assert (tmp_path / "a" / "student" / "model.safetensors").exists()

    def no_teacher(self):  # type: ignore[no-untyped-def]
        raise AssertionError("the teacher was loaded although everything is cached")

    monkeypatch.setattr(recipe.LazyTeacher, "__call__", no_teacher)
    second = runner.invoke(app, _args(workspace, tmp_path / "b", *args, "--student-method", "lora"))
    assert second.exit_code == 0, second.output
    data = json.loads((tmp_path / "b" / "report.json").read_text())
    assert "reused, no teacher forward pass" in data["teacher_logits"]
    assert (tmp_path / "b" / "adapter" / "adapter_model.safetensors").exists()


def test_logit_kd_refuses_different_tokenizers(workspace: Path, tmp_path: Path) -> None:
    result = runner.invoke(app, _args(workspace, tmp_path / "x", student="other-vocab"))
    assert result.exit_code == 1
    assert "different tokenizers" in result.output and "--method sequence" in result.output


def test_sequence_kd_works_across_tokenizers(workspace: Path, tmp_path: Path) -> None:
    out = tmp_path / "seq"
    result = runner.invoke(
        app, _args(workspace, out, "--method", "sequence", student="other-vocab")
    )
    assert result.exit_code == 0, result.output
    lines = (out / "teacher_answers.jsonl").read_text().splitlines()
    assert len(lines) == 24
    assert json.loads((out / "teacher_answers.provenance.json").read_text())["count"] == 24
    data = json.loads((out / "report.json").read_text())
    assert data["teacher_student"]["agreement"] is None
    assert "not comparable (different tokenizers)" in (out / "report.md").read_text()


def test_online_teacher_and_a_student_from_every_other_layer(
    workspace: Path, tmp_path: Path
) -> None:
    out = tmp_path / "layers"
    result = runner.invoke(app, _args(workspace, out, "--top-k", "0", "--keep-every", "2"))
    assert result.exit_code == 0, result.output
    data = json.loads((out / "report.json").read_text())
    assert data["teacher_logits"].startswith("online teacher")
    assert data["teacher_student"]["param_ratio"] < 1
    assert json.loads((out / "student" / "config.json").read_text())["num_hidden_layers"] == 2
