"""``mentor quantize`` end to end on tiny model folders: both levels, an adapter merged first,
the report files, and clear errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from mentor.cli import app
from mentor.quantize import load_quantized, read_manifest
from mentor.quantize.convert import METHODS
from mentor.testing import save_model_folder, save_tiny_llama, tiny_qwen2
from mentor.train.adapters import save_adapter
from mentor.train.lora import LoRAConfig, add_lora, merge, unwrap

runner = CliRunner()
IDS = torch.tensor([[5, 17, 42, 99, 3, 250, 7, 61, 11, 4]])
TEXT = (
    "The river runs past the old mill and under the stone bridge. In spring the water is high "
    "and the meadows flood; by late summer children wade across it to the island. "
) * 6


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("quantize")
    save_tiny_llama(root / "llama")
    save_model_folder(*tiny_qwen2(seed=1), root / "qwen")
    save_tiny_llama(root / "narrow", hidden_size=40, intermediate_size=80, num_heads=4)
    (root / "text.txt").write_text(TEXT)
    qa = [{"question": f"what colour is box {i}?", "answer": "red"} for i in range(4)]
    (root / "test.jsonl").write_text("".join(json.dumps(r) + "\n" for r in qa))
    return root


def _args(ws: Path, model: str, to: str, out: Path, *extra: str) -> list[str]:
    return [
        "quantize", str(ws / model), "--to", to, "--out", str(out),
        "--text", str(ws / "text.txt"), "--new-tokens", "3", "--max-new-tokens", "4", *extra,
    ]  # fmt: skip


@pytest.mark.e2e
def test_int4_run_writes_a_loadable_folder_and_its_report(
    workspace: Path, tmp_path: Path, device_args: list[str]
) -> None:
    out = tmp_path / "q4"
    args = _args(workspace, "qwen", "int4", out, "--group-size", "32", "--no-smooth", "--eval")
    result = runner.invoke(
        app, [*args, str(workspace / "test.jsonl"), "--limit", "3", *device_args]
    )
    assert result.exit_code == 0, result.output
    assert "| perplexity |" in result.stdout and "int4, group size 32" in result.stdout
    report = json.loads((out / "report.json").read_text())
    assert report["method"] == "int4" and report["n_eval"] == 3
    for side in ("reference", "quantized"):
        row = report[side]
        assert row["disk_bytes"] > 0 and row["memory_bytes"] > 0 and row["perplexity"] > 1
        assert row["tokens_per_s"] > 0 and row["latency_ms_per_token"] > 0
        assert set(row["task"]) == {"exact_match", "token_f1", "rouge_l", "contains"}
    assert report["quantized"]["disk_bytes"] == (out / "quantized.safetensors").stat().st_size
    assert report["disk_ratio"] > 2  # tiny Qwen2's untied head is int8, the rest int4
    assert abs(report["perplexity_change"]) < 0.2
    assert [c["name"] for c in report["task_changes"]] == [
        "exact_match",
        "token_f1",
        "rouge_l",
        "contains",
    ]
    assert (out / "report.md").read_text().startswith("# ")
    manifest = read_manifest(out)
    assert manifest.method == "int4" and manifest.base_model == str(workspace / "qwen")
    assert len(manifest.base_fingerprint) == 64
    assert manifest.smooth_alpha is None and not any(p.smoothed for p in manifest.layers)
    with torch.no_grad():
        assert load_quantized(out)(IDS).logits.shape == (1, 10, 512)


@pytest.mark.e2e
def test_an_adapter_is_merged_before_quantizing(
    workspace: Path, tmp_path: Path, device_args: list[str]
) -> None:
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(str(workspace / "llama")).eval()
    with torch.no_grad():
        base = model(IDS).logits
    config = LoRAConfig(r=4, alpha=8, dropout=0.0, targets=("q_proj", "v_proj", "up_proj"))
    add_lora(model, config)
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if ".lora_B." in name:
                param.copy_(torch.randn(param.shape, generator=gen) * 0.3)
    save_adapter(model, tmp_path / "adapter", config=config, base_model="tiny-llama")
    merge(model, "default")
    unwrap(model)
    with torch.no_grad():
        merged = model(IDS).logits
    out = tmp_path / "q8"
    args = _args(workspace, "llama", "int8", out, "--adapter", str(tmp_path / "adapter"))
    result = runner.invoke(app, [*args, *device_args])
    assert result.exit_code == 0, result.output
    with torch.no_grad():
        quantized = load_quantized(out)(IDS).logits
    to_merged = float((quantized - merged).norm() / merged.norm())
    to_base = float((quantized - base).norm() / base.norm())
    assert to_merged < 0.03 and to_base > 5 * to_merged  # the adapter's change is in there
    manifest = read_manifest(out)
    assert manifest.smooth_alpha == 0.5 and manifest.calibration == "packaged"
    assert all(p.smoothed for p in manifest.layers)  # and they load back with their factors
    adapter = manifest.adapter
    assert adapter is not None and adapter["r"] == 4 and adapter["base_model"] == "tiny-llama"
    assert adapter["path"] == str(tmp_path / "adapter")


def test_an_adapter_for_another_base_is_refused(workspace: Path, tmp_path: Path) -> None:
    from transformers import AutoModelForCausalLM

    other = AutoModelForCausalLM.from_pretrained(str(workspace / "qwen"))
    config = LoRAConfig(r=2, targets=("q_proj",))
    add_lora(other, config)
    save_adapter(other, tmp_path / "adapter", config=config, base_model="qwen")
    result = runner.invoke(
        app,
        _args(workspace, "llama", "int8", tmp_path / "q", "--adapter", str(tmp_path / "adapter")),
    )
    assert result.exit_code == 1
    assert "trained on a different base model" in result.output


@pytest.mark.parametrize(
    ("model", "extra", "message"),
    [
        ("llama", ["--to", "int3"], "unknown quantization 'int3'; choose one of: int8, int4"),
        ("narrow", ["--to", "int4"], "model.layers.0.self_attn.q_proj: in_features 40 is not a"),
        ("llama", ["--to", "int8", "--eval", "missing.jsonl"], "missing.jsonl: no such file"),
        ("llama", ["--to", "int8", "--limit", "0"], "--limit must be at least 1"),
    ],
)
def test_bad_requests_fail_with_a_clear_message(
    workspace: Path, tmp_path: Path, model: str, extra: list[str], message: str
) -> None:
    result = runner.invoke(
        app, ["quantize", str(workspace / model), "--out", str(tmp_path / "q"), *extra]
    )
    assert result.exit_code == 1
    assert message in " ".join(result.output.split())
    assert not (tmp_path / "q").exists()


def test_the_cli_offers_every_registered_method() -> None:
    result = runner.invoke(app, ["quantize", "--help"])
    assert result.exit_code == 0
    for method in METHODS:
        assert method in result.output
