"""bench/gpu_check.py: runs end to end with --tiny on a CPU in a python without pydantic, fastapi
or openai (as on the GPU machine); its 135M shape is the packaged model's; its tokenizer files
are checked."""

from __future__ import annotations

import json
import os
import runpy
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "bench" / "gpu_check.py"


pytestmark = pytest.mark.packaged  # the real tokenizer: the pulled smollm2-135m-instruct's


@pytest.fixture(scope="module")
def tokenizer_folder() -> Path:
    from mentor.models.loading import resolve_model_path

    return resolve_model_path("smollm2-135m-instruct")


@pytest.fixture(scope="module")
def script() -> dict[str, Any]:
    return runpy.run_path(str(SCRIPT))  # the module's globals; main() does not run


def test_tiny_run_without_server_packages(tmp_path: Path, tokenizer_folder: Path) -> None:
    out = tmp_path / "rows.json"
    blocked = ["pydantic", "fastapi", "openai"]
    code = (
        f"import runpy, sys; sys.modules.update(dict.fromkeys({blocked!r})); "
        f"sys.argv = ['gpu_check.py', '--tiny', '--device', 'cpu', '--parts', 'decode', "
        f"'--out', {str(out)!r}, "
        f"'--tokenizer', {str(tokenizer_folder)!r}]; "
        f"runpy.run_path({str(SCRIPT)!r}, run_name='__main__')"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "HF_HUB_OFFLINE": "1"}
    done = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-3000:]
    rows = {row["measure"]: row for row in json.loads(out.read_text())["decode"]}
    assert "gpu_check on CPU: 8 new tokens" in done.stdout
    timed = [m for m in rows if not m.startswith(("vLLM", "batch 1: vLLM", "64 requests: vLLM"))]
    assert len(timed) == 5 and all(rows[m]["tokens_per_s"] > 0 for m in timed)
    static = rows["batch 1: StaticDecoder (dynamic cache, eager)"]
    assert "first 8/8 tokens as generate" in static["note"]  # fp32: the same greedy tokens
    assert rows["vLLM"]["note"].startswith("not importable") or "batch 1: vLLM" in rows


def test_the_135m_shape_is_the_packaged_models(script: dict[str, Any], tmp_path: Path) -> None:
    packaged = script["PACKAGED"]
    if not packaged.exists():
        pytest.skip("smollm2-135m-instruct is not pulled")
    check = script["mismatches_with_packaged"]
    assert check(script["SHAPES"]["135m"]) == []
    config = json.loads(packaged.read_text())
    config["num_key_value_heads"] = 9
    wrong = tmp_path / "config.json"
    wrong.write_text(json.dumps(config))
    assert check(script["SHAPES"]["135m"], wrong) == ["num_key_value_heads: 3 here, 9 packaged"]


def test_tokenizer_files_are_checked(
    script: dict[str, Any], tmp_path: Path, tokenizer_folder: Path
) -> None:
    tokenizer = script["load_tokenizer"](tokenizer_folder)
    assert len(tokenizer) == script["SHAPES"]["135m"]["vocab_size"]
    assert tokenizer.chat_template
    for name in script["TOKENIZER_SHA256"]:
        (tmp_path / name).write_bytes((tokenizer_folder / name).read_bytes())
    (tmp_path / "tokenizer_config.json").write_text("{}")
    with pytest.raises(SystemExit, match=r"tokenizer_config.json: sha256 .*, expected 9a35ec"):
        script["load_tokenizer"](tmp_path)
    (tmp_path / "tokenizer.json").unlink()
    with pytest.raises(SystemExit, match=r"tokenizer\.json: missing"):
        script["load_tokenizer"](tmp_path)


def _bench(name: str) -> dict[str, Any]:
    return runpy.run_path(str(ROOT / "bench" / f"{name}.py"))


def test_the_train_rows_run_on_tiny_shapes() -> None:
    """What the train part prints: each function on a tiny model on the CPU."""
    profiled = _bench("lora_profile")["profile_rows"]("cpu", True)
    assert [r["row"] for r in profiled] == ["full", "lora", "lora-nodrop"]
    assert all(r["tokens_per_s"] > 0 and r["top"] for r in profiled)
    off, on = _bench("finetune_bench")["checkpointing_rows"]("cpu", True)
    assert (off["checkpointing"], on["checkpointing"]) == (False, True)
    assert on["estimate_step_mb"] < off["estimate_step_mb"]
    qlora, lora = _bench("qlora_bench")["qlora_rows"]("cpu", True, steps=2)
    assert (qlora["method"], lora["method"]) == ("qlora", "lora")
    assert qlora["loss_last"] < qlora["loss_first"] + 0.05 and qlora["speed_vs_lora"] > 0


def test_the_commands_part_runs_mentor_on_random_model_folders(
    tmp_path: Path, tokenizer_folder: Path
) -> None:
    out = tmp_path / "rows.json"
    command = [
        sys.executable, str(SCRIPT), "--tiny", "--device", "cpu", "--parts", "commands",
        "--commands", "finetune qlora + checkpointing,distill*,serve", "--work",
        str(tmp_path / "work"), "--out", str(out), "--tokenizer", str(tokenizer_folder),
    ]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "HF_HUB_OFFLINE": "1"}
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    rows = {r["command"]: r for r in json.loads(out.read_text())["commands"]}
    assert list(rows) == [
        "finetune qlora + checkpointing", "distill logits", "distill sequence", "serve"
    ]  # fmt: skip
    assert all(r["ok"] for r in rows.values()), rows
    assert "tok/s" in rows["finetune qlora + checkpointing"]["figures"]
    assert "3 chat completions" in rows["serve"]["figures"]
