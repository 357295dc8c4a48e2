"""``mentor finetune --method qlora`` end to end on a tiny model: the 4-bit base trains, the
adapter is an ordinary PEFT folder that PEFT and our loader put on the unquantized base, the
report states the logit gap, merge goes onto the unquantized base, and a resume lands on the
same losses (with torch's AdamW and with bitsandbytes' 8-bit one)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from mentor.cli import app
from mentor.finetune.config import FinetuneConfig
from mentor.finetune.qlora import compare_logits, held_out_rows
from mentor.testing import save_tiny_llama
from mentor.train.adapters import load_adapter, read_info
from mentor.train.trainer import read_metrics

runner = CliRunner()


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("qlora")
    save_tiny_llama(root / "base", seed=0, hidden_size=128, intermediate_size=256)
    colours = ["red", "green", "blue", "amber"]
    chats = [
        {
            "messages": [
                {"role": "user", "content": f"what colour is box {i}?"},
                {"role": "assistant", "content": f"box {i} is {colours[i % 4]}"},
            ]
        }
        for i in range(40)
    ]
    (root / "train.jsonl").write_text("".join(json.dumps(c) + "\n" for c in chats))
    test = [{"question": f"what colour is box {i}?", "answer": colours[i % 4]} for i in range(3)]
    (root / "test.jsonl").write_text("".join(json.dumps(t) + "\n" for t in test))
    return root


def _args(ws: Path, out: Path, *extra: str) -> list[str]:
    return [
        "finetune", "--model", str(ws / "base"), "--data", str(ws / "train.jsonl"),
        "--out", str(out), "--method", "qlora", "--batch-size", "4", "--lr", "1e-2",
        "--max-length", "64", "--precision", "fp32", "--device", "cpu", *extra,
    ]  # fmt: skip


def test_qlora_trains_and_its_adapter_loads_on_the_unquantized_base(
    workspace: Path, tmp_path: Path
) -> None:
    out = tmp_path / "run"
    result = runner.invoke(
        app, _args(workspace, out, "--max-steps", "12", "--eval", str(workspace / "test.jsonl"))
    )
    assert result.exit_code == 0, result.output
    losses = [m["loss"] for m in read_metrics(out / "metrics.jsonl")]
    assert losses[-1] < 0.9 * losses[0]  # it learns through the 4-bit base

    report = json.loads((out / "report.json").read_text())
    gap = report["logit_gap"]
    assert gap["tokens"] > 0 and 0 < gap["mean_abs"] < gap["max_abs"] and gap["kl"] >= 0
    assert report["before_after"]["n"] == 3
    assert "4-bit-trained model against the adapter" in (out / "report.md").read_text()

    # an ordinary PEFT folder, recorded against the unquantized base's weights
    folder = out / "adapter"
    assert {p.name for p in folder.iterdir()} >= {
        "adapter_config.json",
        "adapter_model.safetensors",
    }
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    ours = AutoModelForCausalLM.from_pretrained(str(workspace / "base")).eval()
    load_adapter(ours, folder)  # checks the fingerprint against the fp32 base
    theirs = PeftModel.from_pretrained(
        AutoModelForCausalLM.from_pretrained(str(workspace / "base")), str(folder)
    ).eval()
    ids = torch.tensor([[3, 14, 15, 92, 65, 35]])
    with torch.no_grad():
        mine, peft = ours(input_ids=ids).logits, theirs(input_ids=ids).logits
        plain = AutoModelForCausalLM.from_pretrained(str(workspace / "base"))(input_ids=ids).logits
    torch.testing.assert_close(peft, mine, rtol=1e-5, atol=1e-5)
    assert not torch.allclose(mine, plain, atol=1e-3)  # the adapter changed something

    merged = runner.invoke(
        app,
        ["adapters", "merge", str(folder), "--out", str(tmp_path / "merged"), "--dtype",
         "float32"],
    )  # fmt: skip
    assert merged.exit_code == 0, merged.output
    standalone = AutoModelForCausalLM.from_pretrained(str(tmp_path / "merged")).eval()
    with torch.no_grad():
        torch.testing.assert_close(standalone(input_ids=ids).logits, mine, rtol=1e-4, atol=1e-4)
    assert read_info(folder).base_model == str(workspace / "base")


@pytest.mark.parametrize("optimizer", ["adamw", "adamw_8bit"])
def test_qlora_resume_reaches_the_same_losses(
    workspace: Path, tmp_path: Path, optimizer: str
) -> None:
    if optimizer != "adamw":
        pytest.importorskip("bitsandbytes")
    config = tmp_path / "run.yaml"
    config.write_text(f"train:\n  optimizer: {optimizer}\nqlora:\n  gap_tokens: 0\n")
    settings = ["--max-steps", "4", "--save-every", "2", "--config", str(config)]
    whole = runner.invoke(app, _args(workspace, tmp_path / "whole", *settings))
    assert whole.exit_code == 0, whole.output
    expected = [m["loss"] for m in read_metrics(tmp_path / "whole" / "metrics.jsonl")]

    cut = tmp_path / "cut"
    assert runner.invoke(app, _args(workspace, cut, *settings)).exit_code == 0
    # as if killed after the step-2 checkpoint
    shutil.rmtree(cut / "checkpoints" / "step-000004")
    (cut / "checkpoints" / "latest").write_text("step-000002\n")
    resumed = runner.invoke(app, _args(workspace, cut, *settings, "--resume"))
    assert resumed.exit_code == 0, resumed.output
    got = [m["loss"] for m in read_metrics(cut / "metrics.jsonl")]
    assert got == pytest.approx(expected, rel=1e-5)


def test_qlora_is_refused_for_classification(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="qlora trains causal LMs"):
        FinetuneConfig(data=tmp_path / "x.jsonl", method="qlora", task="classify")


def test_compare_logits_reference_numbers() -> None:
    """Two 1-token rows over a 2-entry vocabulary, worked by hand."""
    q = [torch.tensor([[0.0, 0.0]]), torch.tensor([[1.0, 0.0]])]
    d = [torch.tensor([[0.0, 0.0]]), torch.tensor([[0.0, 1.0]])]
    gap = compare_logits(q, d, "cpu")
    assert gap.tokens == 2 and gap.mean_abs == pytest.approx(0.5) and gap.max_abs == 1.0
    # KL(d || q) on the second token: p_d = (1-s, s), p_q = (s, 1-s), s = sigmoid(1)
    s = torch.sigmoid(torch.tensor(1.0)).item()
    kl = (1 - s) * torch.log(torch.tensor((1 - s) / s)) + s * torch.log(torch.tensor(s / (1 - s)))
    assert gap.kl == pytest.approx(float(kl) / 2, rel=1e-5)
    assert gap.top1_agreement == pytest.approx(0.5)


def test_held_out_rows_cut_to_width() -> None:
    assert held_out_rows([[1, 2, 3], [4, 5]], tokens=4, width=3) == [[1, 2, 3], [4]]
