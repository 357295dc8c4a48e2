"""``mentor finetune`` and ``mentor adapters`` end to end on a tiny model folder, including a
``kill -9`` in the middle of training and a resume that lands on the same losses."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from mentor.cli import app
from mentor.testing import FakeVLLM, save_tiny_llama
from mentor.train.adapters import load_adapter, read_info
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
    root = tmp_path_factory.mktemp("ft")
    save_tiny_llama(root / "base", seed=0)
    (root / "train.jsonl").write_text("".join(json.dumps(_chat(i)) + "\n" for i in range(40)))
    test = [{"question": f"what colour is box {i}?", "answer": COLOURS[i % 8]} for i in range(3)]
    (root / "test.jsonl").write_text("".join(json.dumps(t) + "\n" for t in test))
    return root


def _args(ws: Path, out: Path, *extra: str, device: str = "cpu") -> list[str]:
    return [
        "finetune", "--model", str(ws / "base"), "--data", str(ws / "train.jsonl"),
        "--out", str(out), "--batch-size", "2", "--lr", "5e-3", "--max-length", "64",
        "--precision", "fp32", "--device", device, *extra,
    ]  # fmt: skip


@pytest.mark.e2e
def test_lora_run_saves_an_adapter_and_reports_base_against_tuned(
    workspace: Path, tmp_path: Path, test_device: str
) -> None:
    out = tmp_path / "run"
    result = runner.invoke(
        app,
        _args(
            workspace, out, "--epochs", "2", "--eval", str(workspace / "test.jsonl"),
            device=test_device,
        ),
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    info = read_info(out / "adapter")
    assert info.base_model == str(workspace / "base") and info.base_fingerprint
    report = (out / "report.md").read_text()
    assert "| token_f1 |" in report and "general perplexity" in report
    data = json.loads((out / "report.json").read_text())
    assert data["before_after"]["n"] == 3
    assert data["examples"] == {"train": 36, "validation": 4, "rows": data["examples"]["rows"]}
    assert (out / "loss_curve.png").exists() and (out / "metrics.jsonl").exists()

    listed = runner.invoke(app, ["adapters", "list", str(tmp_path)])
    assert listed.exit_code == 0 and "adapter" in listed.output
    shown = runner.invoke(app, ["adapters", "info", str(out / "adapter")])
    assert shown.exit_code == 0 and "base fingerprint" in shown.output

    merged = runner.invoke(
        app,
        ["adapters", "merge", str(out / "adapter"), "--out", str(tmp_path / "merged"),
         "--dtype", "float32"],
    )  # fmt: skip
    assert merged.exit_code == 0, merged.output
    from transformers import AutoModelForCausalLM

    ids = torch.tensor([[3, 14, 15, 92, 65]])
    plain = AutoModelForCausalLM.from_pretrained(str(tmp_path / "merged")).eval()
    adapted = AutoModelForCausalLM.from_pretrained(str(workspace / "base")).eval()
    load_adapter(adapted, out / "adapter")
    with torch.no_grad():
        torch.testing.assert_close(
            plain(input_ids=ids).logits, adapted(input_ids=ids).logits, rtol=1e-4, atol=1e-4
        )

    exported = runner.invoke(
        app, ["adapters", "export", str(out / "adapter"), "--out", str(tmp_path / "export")]
    )
    assert exported.exit_code == 0, exported.output
    assert sorted(p.name for p in (tmp_path / "export").iterdir()) == [
        "README.md",  # the model card: which weights it was trained on
        "adapter_config.json",
        "adapter_model.safetensors",
        "mentor_adapter.json",  # the base it was trained on, for mentor's vLLM engine
    ]
    card = (tmp_path / "export" / "README.md").read_text()
    assert card.startswith("---\n") and "library_name: peft" in card
    assert "GGUF" not in card  # a safetensors base: its own weights, nothing to warn about
    identity = json.loads((tmp_path / "export" / "mentor_adapter.json").read_text())
    assert Path(identity["base_folder"]).resolve() == (workspace / "base").resolve()
    from peft import PeftModel

    base = AutoModelForCausalLM.from_pretrained(str(workspace / "base"))
    peft_model = PeftModel.from_pretrained(base, str(tmp_path / "export")).eval()
    with torch.no_grad():
        torch.testing.assert_close(
            peft_model(input_ids=ids).logits, adapted(input_ids=ids).logits, rtol=1e-5, atol=1e-5
        )

    said = runner.invoke(
        app,
        ["generate", str(workspace / "base"), "what colour is box 1?", "--adapter",
         str(out / "adapter"), "--max-new-tokens", "4", "--device", test_device],
    )  # fmt: skip
    assert said.exit_code == 0, said.output


def test_an_adapter_of_another_base_is_refused(workspace: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    assert runner.invoke(app, _args(workspace, out, "--max-steps", "2")).exit_code == 0
    save_tiny_llama(tmp_path / "other", seed=7)
    said = runner.invoke(
        app, ["generate", str(tmp_path / "other"), "hi", "--adapter", str(out / "adapter")]
    )
    assert said.exit_code == 1
    assert "trained on a different base model" in said.output


@pytest.mark.e2e
def test_full_fine_tuning_writes_a_model(workspace: Path, tmp_path: Path, test_device: str) -> None:
    out = tmp_path / "full"
    result = runner.invoke(
        app,
        _args(
            workspace, out, "--method", "full", "--max-steps", "3", "--no-packing",
            "--eval", str(workspace / "test.jsonl"), device=test_device,
        ),
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert (out / "model" / "model.safetensors").exists()
    assert (out / "model" / "tokenizer.json").exists()


def test_bad_data_fails_before_training_naming_the_line(workspace: Path, tmp_path: Path) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text(
        json.dumps(_chat(1)) + "\n" + '{"messages": [{"role": "user", "content": "x"}]}\n'
    )
    result = runner.invoke(
        app,
        ["finetune", "--model", str(workspace / "base"), "--data", str(bad), "--out",
         str(tmp_path / "run")],
    )  # fmt: skip
    assert result.exit_code == 1
    assert f"{bad}:2:" in result.output and "assistant" in result.output
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_an_over_long_example_stops_the_run_unless_truncate_or_drop_is_chosen(
    workspace: Path, tmp_path: Path
) -> None:
    data = tmp_path / "long.jsonl"
    long = {
        "messages": [
            {"role": "user", "content": "describe box 3"},
            {"role": "assistant", "content": " ".join(["box 3 is red and square"] * 30)},
        ]
    }
    lines = [_chat(i) for i in range(12)]
    lines.insert(5, long)
    data.write_text("".join(json.dumps(line) + "\n" for line in lines))
    args = ["finetune", "--model", str(workspace / "base"), "--data", str(data),
            "--batch-size", "2", "--max-length", "64", "--precision", "fp32", "--device", "cpu",
            "--max-steps", "1"]  # fmt: skip
    refused = runner.invoke(app, [*args, "--out", str(tmp_path / "refused")])
    assert refused.exit_code == 1
    assert "1 example longer than max_length 64 tokens" in refused.output
    assert f"{data}:6: " in refused.output and "answer tokens would be cut" in refused.output
    assert "--overlong truncate" in refused.output
    assert not (tmp_path / "refused" / "checkpoints").exists()
    for policy, said in (("truncate", "truncated"), ("drop", "dropped")):
        out = tmp_path / policy
        done = runner.invoke(app, [*args, "--out", str(out), "--overlong", policy])
        assert done.exit_code == 0, done.output
        assert "warning:" in done.output and said in done.output
        report = json.loads((out / "report.json").read_text())
        assert report["config"]["overlong"] == policy
        assert len(report["overlong"]) == 1 and said in report["overlong"][0]
        counts = report["examples"]
        assert counts["train"] + counts["validation"] == (13 if policy == "truncate" else 12)
        assert said in (out / "report.md").read_text()
    bad = runner.invoke(app, [*args, "--out", str(tmp_path / "x"), "--overlong", "cut"])
    assert bad.exit_code != 0 and "overlong" in bad.output


def test_config_file_and_flag_overrides(workspace: Path, tmp_path: Path) -> None:
    from mentor.finetune.config import load_config

    config = tmp_path / "run.yaml"
    config.write_text(
        f"model: {workspace / 'base'}\ndata: train.jsonl\nmethod: full\n"
        "train:\n  lr: 0.001\n  epochs: 2\nlora:\n  r: 4\n"
    )
    loaded = load_config(config, {"train.lr": 0.01, "method": None})
    assert loaded.train.lr == 0.01 and loaded.train.epochs == 2 and loaded.method == "full"
    assert loaded.data == tmp_path / "train.jsonl" and loaded.lora.r == 4
    config.write_text("model: x\ndata: d.jsonl\ntrain:\n  lr: -1\n  nonsense: 3\n")
    with pytest.raises(ValueError, match=r"run\.yaml: train\.lr: .*train\.nonsense"):
        load_config(config, {})


def test_the_task_flag_reaches_the_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import mentor.finetune.commands as commands

    seen: list[object] = []
    monkeypatch.setattr(commands, "run", lambda settings, resume: seen.append(settings))
    args = ["finetune", "--model", "minilm-l6", "--data", str(tmp_path / "labels.csv")]
    result = runner.invoke(app, [*args, "--task", "classify"])
    assert result.exit_code == 0, result.output
    assert [getattr(s, "task", None) for s in seen] == ["classify"]
    bad = runner.invoke(app, [*args, "--task", "regress"])
    assert bad.exit_code == 1 and "task" in bad.output and len(seen) == 1


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "mentor.cli", *args]


@pytest.mark.slow
def test_kill_9_then_resume_reaches_the_same_losses(workspace: Path, tmp_path: Path) -> None:
    settings = ["--epochs", "8", "--save-every", "3", "--eval-every", "1000"]
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
    assert "resuming from step-" in resumed.stderr
    got = [m["loss"] for m in read_metrics(cut / "metrics.jsonl")]
    assert got == pytest.approx(expected, rel=1e-6, abs=1e-7)


@pytest.mark.slow
def test_the_same_command_runs_under_torchrun(workspace: Path, tmp_path: Path) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    launched = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "-m",
         "mentor.cli", *_args(workspace, tmp_path / "ddp", "--max-steps", "3")],
        env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert launched.returncode == 0, launched.stderr[-3000:]
    assert len(read_metrics(tmp_path / "ddp" / "metrics.jsonl")) == 3
    assert (tmp_path / "ddp" / "adapter" / "adapter_model.safetensors").exists()


def test_a_second_fresh_run_into_the_same_folder_is_refused(
    workspace: Path, tmp_path: Path
) -> None:
    out = tmp_path / "run"
    assert runner.invoke(app, _args(workspace, out, "--max-steps", "2")).exit_code == 0
    again = runner.invoke(app, _args(workspace, out, "--max-steps", "2"))
    assert again.exit_code == 1 and "--resume" in again.output
    missing = runner.invoke(app, _args(workspace, tmp_path / "none", "--resume"))
    assert missing.exit_code == 1 and "no checkpoint to resume from" in missing.output


@pytest.mark.e2e
def test_classification_runs_from_the_same_command(tmp_path: Path, device_args: list[str]) -> None:
    from mentor.testing import tiny_sentence_transformer_folder

    encoder = tiny_sentence_transformer_folder(tmp_path / "enc")
    rows = ["text,category"] + [
        f"{word} {word} {i},{label}"
        for i in range(12)
        for word, label in (("refund money back", "refund"), ("card lost stolen", "card"))
    ]
    (tmp_path / "labels.csv").write_text("\n".join(rows) + "\n")
    result = runner.invoke(
        app,
        ["finetune", "--model", str(encoder), "--data", str(tmp_path / "labels.csv"),
         "--out", str(tmp_path / "cls"), "--epochs", "3", "--lr", "1e-2", "--batch-size", "4",
         *device_args],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "held out as the test set" in result.output
    report = json.loads((tmp_path / "cls" / "report.json").read_text())
    assert report["labels"] == 2 and report["tuned_accuracy"] >= 0.5


def test_the_engine_flags_reach_the_evaluation_before_and_after_training(
    workspace: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """--engine vllm: the held-out set is answered by vLLM (faked), the tuned LoRA model as the
    base folder plus the adapter (served, not merged); a full run's tuned model is its folder."""
    fake = FakeVLLM()
    monkeypatch.setitem(sys.modules, "mentor.models.vllm", fake.module())
    test = str(workspace / "test.jsonl")
    vllm = ["--engine", "vllm", "--vllm-url", "http://gpu:8000", "--eval", test]
    out = tmp_path / "lora"
    result = runner.invoke(app, _args(workspace, out, "--max-steps", "2", *vllm))
    assert result.exit_code == 0, result.output
    before, after = fake.opened
    assert before.folder == after.folder == workspace / "base"
    assert before.adapters == {} and before.request_adapters == [None] * 3
    assert after.adapters == {"adapter": out / "adapter"}
    assert after.request_adapters == ["adapter"] * 3 and after.settings.url == "http://gpu:8000"
    data = json.loads((out / "report.json").read_text())
    assert data["config"]["engine"]["kind"] == "vllm"
    assert data["before_after"]["n"] == 3
    full = tmp_path / "full"
    result = runner.invoke(
        app, _args(workspace, full, "--max-steps", "1", "--method", "full", *vllm)
    )
    assert result.exit_code == 0, result.output
    assert fake.opened[-1].folder == full / "model" and fake.opened[-1].adapters == {}


def test_vllm_is_refused_before_training_for_a_model_it_cannot_run(
    workspace: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "mentor.models.vllm", FakeVLLM().module())
    quantized = tmp_path / "int8"
    quantized.mkdir()
    (quantized / "config.json").write_text((workspace / "base" / "config.json").read_text())
    (quantized / "mentor_quantized.json").write_text("{}")
    args = _args(workspace, tmp_path / "run", "--eval", str(workspace / "test.jsonl"))
    args[args.index("--model") + 1] = str(quantized)
    result = runner.invoke(app, [*args, "--engine", "vllm"])
    assert result.exit_code == 1
    assert "quantized by mentor" in result.output and "use --engine builtin" in result.output
    assert not (tmp_path / "run" / "metrics.jsonl").exists()  # nothing trained


@pytest.mark.slow
@pytest.mark.parametrize(("method", "folder"), [("lora", "adapter"), ("full", "model")])
def test_fsdp_saves_the_files_a_plain_run_saves(
    method: str, folder: str, workspace: Path, tmp_path: Path
) -> None:
    from safetensors.torch import load_file

    from mentor.train.distributed import teardown

    for strategy in ("ddp", "fsdp"):
        try:  # without torchrun, fsdp trains in a process group of one
            result = runner.invoke(
                app,
                _args(workspace, tmp_path / strategy, "--method", method, "--max-steps", "2",
                      "--strategy", strategy),
            )  # fmt: skip
        finally:
            teardown()
        assert result.exit_code == 0, result.output
    plain, sharded = tmp_path / "ddp" / folder, tmp_path / "fsdp" / folder
    assert sorted(p.name for p in sharded.iterdir()) == sorted(p.name for p in plain.iterdir())
    for weights in plain.glob("*.safetensors"):
        a, b = load_file(str(weights)), load_file(str(sharded / weights.name))
        assert a.keys() == b.keys()
        for key in a:
            assert b[key].dtype == a[key].dtype
            torch.testing.assert_close(b[key], a[key], rtol=1e-5, atol=1e-6)
    losses = [
        [m["loss"] for m in read_metrics(tmp_path / s / "metrics.jsonl")] for s in ("ddp", "fsdp")
    ]
    assert losses[1] == pytest.approx(losses[0], rel=1e-6)


@pytest.mark.parametrize("method", ["lora", "full"])
def test_gradient_checkpointing_reaches_the_model_and_changes_no_loss(
    workspace: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, method: str
) -> None:
    from mentor.train import checkpointing

    enabled: list[str] = []
    original = checkpointing.enable_checkpointing

    def recorded(model: torch.nn.Module) -> str:
        enabled.append(type(model).__name__)
        return original(model)

    monkeypatch.setattr(checkpointing, "enable_checkpointing", recorded)
    runs = {}
    for flag in ("--gradient-checkpointing", "--no-gradient-checkpointing"):
        out = tmp_path / flag
        result = runner.invoke(
            app, _args(workspace, out, "--method", method, "--max-steps", "3", flag)
        )
        assert result.exit_code == 0, result.output
        runs[flag] = [r["loss"] for r in read_metrics(out / "metrics.jsonl")]
        config = json.loads((out / "report.json").read_text())["config"]
        assert config["train"]["gradient_checkpointing"] == ("off" if "no-" in flag else "on")
    assert enabled == ["LlamaForCausalLM"]  # once: the --gradient-checkpointing run's model
    assert runs["--gradient-checkpointing"] == runs["--no-gradient-checkpointing"]


def test_an_adapter_on_a_gguf_base_says_it_was_trained_on_the_dequantized_weights(
    workspace: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A base pulled from a GGUF file is that file dequantized, not the hub checkpoint the
    export names for discovery: the model card, mentor's record and the terminal say which file
    (with its quantization read from the GGUF header and its sha256)."""
    from mentor.quantize.export import export_model

    monkeypatch.setenv("MENTOR_HOME", str(tmp_path / "home"))
    gguf_file = tmp_path / "tiny.q8_0.gguf"
    export_model(workspace / "base", gguf_file, "q8_0")
    pulled = runner.invoke(app, ["models", "pull", "tiny-gguf", "--from", str(gguf_file)])
    assert pulled.exit_code == 0, pulled.output
    out = tmp_path / "run"
    trained = runner.invoke(
        app,
        ["finetune", "--model", "tiny-gguf", "--data", str(workspace / "train.jsonl"),
         "--out", str(out), "--batch-size", "2", "--max-steps", "1", "--max-length", "64",
         "--precision", "fp32", "--device", "cpu"],
    )  # fmt: skip
    assert trained.exit_code == 0, trained.output
    exported = runner.invoke(
        app,
        ["adapters", "export", str(out / "adapter"), "--out", str(tmp_path / "export"),
         "--base-id", "org/tiny"],
    )  # fmt: skip
    assert exported.exit_code == 0, exported.output
    said = " ".join(exported.output.split())
    assert f"trained on Q8_0 weights ({gguf_file}, dequantized), not on the org/tiny" in said
    identity = json.loads((tmp_path / "export" / "mentor_adapter.json").read_text())
    weights = identity["base_weights"]
    assert weights["quantization"] == "Q8_0" and weights["path"] == str(gguf_file)
    from mentor.utils.fs import sha256_file

    assert weights["sha256"] == sha256_file(gguf_file)
    card = (tmp_path / "export" / "README.md").read_text()
    assert "base_model: org/tiny" in card
    assert f"**Q8_0 GGUF** `{gguf_file}` (sha256 `{weights['sha256']}`)" in card
    assert "mentor serve --model tiny-gguf --adapter mine=THIS_FOLDER" in card
    settings = json.loads((tmp_path / "export" / "adapter_config.json").read_text())
    assert settings["base_model_name_or_path"] == "org/tiny"
