"""Quantized folders: saved, loaded back in a fresh process with identical logits, and refused
clearly when damaged or opened the wrong way."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from mentor.quantize.convert import QuantizeError, pack_for_device, quantize_model
from mentor.quantize.io import (
    MANIFEST_FILE,
    WEIGHTS_FILE,
    compute_dtype,
    load_quantized,
    new_manifest,
    read_manifest,
    save_quantized,
)
from mentor.testing import tiny_llama, tiny_qwen2

IDS = [[5, 17, 42, 99, 3, 250, 7, 61], [8, 8, 120, 33, 19, 2, 77, 300]]

FRESH = """
import sys, torch
from pathlib import Path
from safetensors.torch import save_file
from mentor.quantize import load_quantized
for folder, out in zip(sys.argv[1::2], sys.argv[2::2]):
    model = load_quantized(Path(folder))
    with torch.no_grad():
        logits = model(torch.tensor({ids})).logits
    save_file({{"logits": logits.contiguous()}}, out)
"""


def _save(tmp_path: Path, build: object, method: str) -> tuple[Path, torch.Tensor]:
    model, tok = build()  # type: ignore[operator]
    plans = quantize_model(model, method, 32)
    manifest = new_manifest(
        method=method,
        group_size=32,
        layers=plans,
        base_model="tiny",
        base_fingerprint="f" * 64,
        adapter=None,
        dtype=torch.float32,
    )
    folder = tmp_path / f"q-{method}"
    save_quantized(model, tok, folder, manifest)
    pack_for_device(model)  # what load_quantized gives back
    with torch.no_grad():
        logits = model(torch.tensor(IDS)).logits
    return folder, logits


def test_a_fresh_process_loads_identical_logits(tmp_path: Path) -> None:
    args, expected = [], []
    for build, method in ((tiny_llama, "int4"), (tiny_qwen2, "int8")):
        folder, logits = _save(tmp_path, build, method)
        args += [str(folder), str(tmp_path / f"{method}.safetensors")]
        expected.append(logits)
    subprocess.run(
        [sys.executable, "-c", FRESH.format(ids=IDS), *args], check=True, capture_output=True
    )
    for out, logits in zip(args[1::2], expected, strict=True):
        assert torch.equal(load_file(out)["logits"], logits)


def test_the_manifest_records_the_method_layers_and_versions(tmp_path: Path) -> None:
    folder, _ = _save(tmp_path, tiny_llama, "int4")
    manifest = read_manifest(folder)
    assert manifest.method == "int4" and manifest.group_size == 32
    assert len(manifest.layers) == 14 and manifest.layers[0].group_size == 32
    assert manifest.tied == {"lm_head.weight": "model.embed_tokens.weight"}  # stored once
    assert manifest.torch_version == torch.__version__ and manifest.transformers_version
    assert manifest.base_fingerprint == "f" * 64 and manifest.adapter is None
    assert manifest.dtype == "float32"
    stored = load_file(str(folder / WEIGHTS_FILE))
    assert "lm_head.weight" not in stored
    assert stored["model.layers.0.mlp.up_proj.qweight"].dtype == torch.uint8
    assert {"config.json", "tokenizer.json", "generation_config.json"} <= {
        p.name for p in folder.iterdir()
    }
    loaded = load_quantized(folder)
    assert loaded.lm_head.weight is loaded.model.embed_tokens.weight  # still one matrix


def test_from_pretrained_refuses_the_folder_instead_of_loading_random_weights(
    tmp_path: Path,
) -> None:
    from transformers import AutoModelForCausalLM

    folder, _ = _save(tmp_path, tiny_llama, "int8")
    with pytest.raises(OSError, match=r"model\.safetensors"):
        AutoModelForCausalLM.from_pretrained(str(folder))


def test_damaged_folders_are_named(tmp_path: Path) -> None:
    folder, _ = _save(tmp_path, tiny_qwen2, "int8")
    with pytest.raises(QuantizeError, match="not a quantized folder"):
        load_quantized(tmp_path)
    state = load_file(str(folder / WEIGHTS_FILE))
    del state["model.layers.1.mlp.down_proj.scale"]
    save_file(state, str(folder / WEIGHTS_FILE))
    with pytest.raises(QuantizeError, match=r"1 tensors missing \(e\.g\. model\.layers\.1\.mlp"):
        load_quantized(folder)
    data = json.loads((folder / MANIFEST_FILE).read_text())
    data["method"] = "int2"
    (folder / MANIFEST_FILE).write_text(json.dumps(data))
    with pytest.raises(QuantizeError, match="unknown quantization 'int2'"):
        read_manifest(folder)
    (folder / MANIFEST_FILE).write_text("{")
    with pytest.raises(QuantizeError, match=f"{MANIFEST_FILE}: invalid JSON"):
        read_manifest(folder)


def test_a_packed_model_cannot_be_saved(tmp_path: Path) -> None:
    folder, _ = _save(tmp_path, tiny_llama, "int4")
    model = load_quantized(folder)
    if not any(getattr(m, "packed_for_cpu", False) for m in model.modules()):
        pytest.skip("no CPU int4 kernel here")
    manifest = read_manifest(folder)
    with pytest.raises(RuntimeError, match="save the quantized model before packing"):
        save_quantized(model, object(), tmp_path / "again", manifest)  # type: ignore[arg-type]
    from transformers import AutoTokenizer

    unpacked = load_quantized(folder, pack=False)  # re-saving works from an unpacked load
    save_quantized(
        unpacked, AutoTokenizer.from_pretrained(str(folder)), tmp_path / "again", manifest
    )
    assert (
        load_file(str(tmp_path / "again" / WEIGHTS_FILE)).keys()
        == load_file(str(folder / WEIGHTS_FILE)).keys()
    )


def test_compute_dtype_is_the_saved_one_off_cuda_and_the_gpus_on_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert compute_dtype("float32", torch.device("cpu")) == torch.float32
    assert compute_dtype("bfloat16", torch.device("cpu")) == torch.bfloat16
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda: True)
    assert compute_dtype("float32", torch.device("cuda")) == torch.bfloat16
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda: False)
    assert compute_dtype("float32", torch.device("cuda")) == torch.float16
    with pytest.raises(QuantizeError, match="'float9' is not a torch dtype"):
        compute_dtype("float9", torch.device("cpu"))


def test_load_takes_auto_a_dtype_and_forced_kernels(tmp_path: Path) -> None:
    folder, packed_logits = _save(tmp_path, tiny_llama, "int4")
    ids = torch.tensor(IDS)
    slow = load_quantized(folder, device="auto", kernels={"int4": "dequant"})  # no GPU here
    assert slow.device.type == "cpu"
    kernels = {m.kernel for m in slow.modules() if hasattr(m, "kernel")}
    assert kernels == {"dequant"}
    with torch.no_grad():
        unpacked = slow(ids).logits
    torch.testing.assert_close(unpacked, load_quantized(folder, pack=False)(ids).logits)
    # the CPU kernel computes in bf16: close to the dequantized path, not equal
    assert float((packed_logits - unpacked).norm() / unpacked.norm()) < 2e-2
    half = load_quantized(folder, dtype=torch.bfloat16)
    assert half.model.embed_tokens.weight.dtype == torch.bfloat16
    with pytest.raises(ValueError, match="'tinygemm' cannot run cpu"):
        load_quantized(folder, kernels={"int4": "tinygemm"})
