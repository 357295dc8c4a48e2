"""``mentor export``: GGUF files read back by the ``gguf`` package, and loaded by llama.cpp itself
(``llama-cpp-python``, the ``gguf-verify`` extra) where it is installed."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

gguf = pytest.importorskip("gguf")

from mentor.cli import app  # noqa: E402
from mentor.quantize.convert import quantize_model  # noqa: E402
from mentor.quantize.export import (  # noqa: E402
    ExportError,
    export_lora,
    export_model,
    modelfile_text,
)
from mentor.quantize.ggml import int4_to_q4_1, int8_to_q8_0, permute_rope_rows  # noqa: E402
from mentor.quantize.int4 import dequantize_int4, quantize_int4, unpack_int4  # noqa: E402
from mentor.quantize.int8 import quantize_rows  # noqa: E402
from mentor.quantize.io import new_manifest, save_quantized  # noqa: E402
from mentor.testing.tiny_models import save_model_folder, tiny_llama, tiny_qwen2  # noqa: E402
from mentor.train.adapters import save_adapter  # noqa: E402
from mentor.train.lora import LoRAConfig, add_lora  # noqa: E402

HAS_LLAMA_CPP = importlib.util.find_spec("llama_cpp") is not None
# CI builds llama.cpp (make llama) and sets this, so a broken build fails instead of skipping.
REQUIRE_LLAMA_CPP = os.environ.get("MENTOR_REQUIRE_LLAMA_CPP") == "1"
needs_llama_cpp = pytest.mark.skipif(
    not HAS_LLAMA_CPP and not REQUIRE_LLAMA_CPP,
    reason="llama_cpp is not importable: `make llama` builds it (about 4 minutes on 2 cores) "
    "to check the exported files in llama.cpp itself",
)


def _read(path: Path) -> tuple[dict[str, object], dict[str, np.ndarray]]:
    reader = gguf.GGUFReader(str(path))
    fields = {
        name: f.contents() for name, f in reader.fields.items() if not name.startswith("GGUF")
    }
    tensors = {}
    for t in reader.tensors:
        shape = tuple(int(n) for n in reversed(t.shape.tolist()))
        values = gguf.quants.dequantize(t.data, t.tensor_type)
        tensors[t.name] = np.asarray(values, dtype=np.float32).reshape(shape)
        fields[f"type:{t.name}"] = t.tensor_type.name
    return fields, tensors


# --- the block layouts, against the gguf package's own reader ---------------------------------


def test_int4_codes_become_q4_1_blocks_unchanged() -> None:
    weight = torch.randn(6, 128, generator=torch.Generator().manual_seed(0))
    q = quantize_int4(weight, 64)  # a group of 64 is two ggml blocks sharing one header
    raw = int4_to_q4_1(unpack_int4(q.packed), q.scales, q.offsets)
    assert raw.shape == (6, 128 // 32 * 20)
    back = gguf.quants.dequantize(raw, gguf.GGMLQuantizationType.Q4_1).reshape(6, 128)
    # mentor's rule with the scale and offset rounded to fp16, as Q4_1 stores them
    half = dequantize_int4(q.packed, q.scales.half().float(), q.offsets.half().float(), 64)
    np.testing.assert_allclose(back, half.numpy(), rtol=0, atol=1e-6)
    exact = dequantize_int4(q.packed, q.scales, q.offsets, 64)
    assert np.abs(back - exact.numpy()).max() < 5e-3  # only the fp16 headers differ


def test_int8_rows_become_q8_0_blocks_unchanged() -> None:
    weight = torch.randn(4, 96, generator=torch.Generator().manual_seed(1))
    codes, scale = quantize_rows(weight)
    raw = int8_to_q8_0(codes, scale)
    back = gguf.quants.dequantize(raw, gguf.GGMLQuantizationType.Q8_0).reshape(4, 96)
    expected = codes.float() * scale.half().float()[:, None]
    np.testing.assert_array_equal(back, expected.numpy())


def test_block_layouts_refuse_groups_that_are_not_whole_blocks() -> None:
    q = quantize_int4(torch.randn(2, 48), 16)
    with pytest.raises(ValueError, match="group of 16"):
        int4_to_q4_1(unpack_int4(q.packed), q.scales, q.offsets)
    with pytest.raises(ValueError, match="40 columns"):
        int8_to_q8_0(torch.zeros(2, 40, dtype=torch.int8), torch.ones(2))


def test_rope_permutation_pairs_the_halves_of_each_head() -> None:
    rows = torch.arange(8.0)[:, None]  # two heads of four rows: halves (0 1 | 2 3), (4 5 | 6 7)
    assert permute_rope_rows(rows, 2).flatten().tolist() == [0, 2, 1, 3, 4, 6, 5, 7]
    with pytest.raises(ValueError, match="3 heads"):
        permute_rope_rows(rows, 3)


# --- whole files -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def llama_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    model, tokenizer = tiny_llama(seed=3)
    return save_model_folder(model, tokenizer, tmp_path_factory.mktemp("llama") / "m")


def test_f32_export_holds_every_weight_in_llama_cpp_order(
    llama_folder: Path, tmp_path: Path
) -> None:
    from safetensors.torch import load_file

    result = export_model(llama_folder, tmp_path / "m.gguf", "f32")
    fields, tensors = _read(result.path)
    assert fields["general.architecture"] == "llama"
    assert fields["llama.block_count"] == 2
    assert fields["llama.attention.head_count_kv"] == 2
    assert fields["tokenizer.ggml.model"] == "gpt2"
    assert "<|im_start|>" in str(fields["tokenizer.chat_template"])
    assert "output.weight" not in tensors  # tied: llama.cpp reuses token_embd
    hf = load_file(str(llama_folder / "model.safetensors"))
    np.testing.assert_array_equal(
        tensors["blk.1.ffn_down.weight"], hf["model.layers.1.mlp.down_proj.weight"].numpy()
    )
    q = permute_rope_rows(hf["model.layers.0.self_attn.q_proj.weight"], 4)
    np.testing.assert_array_equal(tensors["blk.0.attn_q.weight"], q.numpy())
    k = permute_rope_rows(hf["model.layers.0.self_attn.k_proj.weight"], 2)
    np.testing.assert_array_equal(tensors["blk.0.attn_k.weight"], k.numpy())
    assert result.tensors == {"f32": len(tensors)}


def test_qwen2_keeps_row_order_biases_and_untied_head(tmp_path: Path) -> None:
    from safetensors.torch import load_file

    model, tokenizer = tiny_qwen2(seed=4)
    folder = save_model_folder(model, tokenizer, tmp_path / "q")
    fields, tensors = _read(export_model(folder, tmp_path / "q.gguf", "f16").path)
    hf = load_file(str(folder / "model.safetensors"))
    assert fields["general.architecture"] == "qwen2"
    assert fields["type:blk.0.attn_q.weight"] == "F16"
    assert fields["type:blk.0.attn_q.bias"] == "F32"
    np.testing.assert_allclose(
        tensors["blk.0.attn_q.weight"],
        hf["model.layers.0.self_attn.q_proj.weight"].numpy(),
        atol=1e-3,
    )
    assert "output.weight" in tensors


def _quantized_folder(source: Path, out: Path, method: str) -> Path:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(str(source))
    plans = quantize_model(model, method, 32)
    manifest = new_manifest(
        method=method,
        group_size=32,
        layers=plans,
        base_model=str(source),
        base_fingerprint="test",
        adapter=None,
        dtype=torch.float32,
    )
    save_quantized(model, AutoTokenizer.from_pretrained(str(source)), out, manifest)
    return out


def test_int4_folder_exports_its_own_codes_as_q4_1(llama_folder: Path, tmp_path: Path) -> None:
    from mentor.quantize.io import load_quantized

    folder = _quantized_folder(llama_folder, tmp_path / "int4", "int4")
    result = export_model(folder, tmp_path / "m.gguf", "q4_1")
    assert result.exact == 14  # 7 projections x 2 layers, none quantized a second time
    fields, tensors = _read(result.path)
    assert fields["type:blk.0.attn_v.weight"] == "Q4_1"
    assert fields["type:token_embd.weight"] == "Q8_0"
    mentor = load_quantized(folder, pack=False)
    layer = mentor.model.layers[0].mlp.up_proj  # type: ignore[union-attr]
    diff = np.abs(tensors["blk.0.ffn_up.weight"] - layer.dequantized_weight().numpy()).max()
    assert diff < 1e-3  # fp16 headers only


def test_int8_folder_exports_its_own_codes_as_q8_0(llama_folder: Path, tmp_path: Path) -> None:
    folder = _quantized_folder(llama_folder, tmp_path / "int8", "int8")
    result = export_model(folder, tmp_path / "m.gguf", "q8_0")
    assert result.exact == 14
    assert result.tensors["q8_0"] == 15  # and the embeddings, quantized from floats


def test_lora_adapter_is_written_as_llama_cpp_lays_it_out(
    llama_folder: Path, tmp_path: Path
) -> None:
    adapter = _adapter(llama_folder, tmp_path / "adapter")
    result = export_lora(adapter, llama_folder, tmp_path / "lora.gguf", "f32")
    fields, tensors = _read(result.path)
    assert fields["general.type"] == "adapter"
    assert fields["adapter.type"] == "lora"
    assert fields["adapter.lora.alpha"] == pytest.approx(16.0)
    assert tensors["blk.0.attn_q.weight.lora_a"].shape == (4, 64)  # A: (r, d_in)
    assert tensors["blk.0.attn_q.weight.lora_b"].shape == (64, 4)  # B: (d_out, r)
    assert tensors["blk.1.attn_v.weight.lora_b"].shape == (32, 4)
    with pytest.raises(ExportError, match="f32 or f16"):
        export_lora(adapter, llama_folder, tmp_path / "x.gguf", "q4_1")


def _adapter(base: Path, out: Path) -> Path:
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(str(base))
    config = LoRAConfig(r=4, alpha=16.0, dropout=0.0, targets=("q_proj", "v_proj"))
    add_lora(model, config)
    torch.manual_seed(5)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "lora_B" in name:
                param.normal_(0, 0.5)  # a trained-looking update, not PEFT's zeros
    return save_adapter(model, out, config=config, base_model=str(base))


def test_modelfile_carries_the_chat_template_and_stops() -> None:
    text = modelfile_text("m.gguf", "{{ '<|im_start|>' }}", ["<|im_end|>"])
    assert text.startswith("FROM ./m.gguf\n")
    assert "<|im_start|>{{ .Role }}" in text
    assert 'PARAMETER stop "<|im_end|>"' in text


def test_cli_exports_with_a_modelfile_and_refuses_bad_input(
    llama_folder: Path, tmp_path: Path
) -> None:
    runner = CliRunner()
    out = tmp_path / "m.gguf"
    done = runner.invoke(
        app, ["export", str(llama_folder), "--type", "q8_0", "--out", str(out), "--modelfile"]
    )
    assert done.exit_code == 0, done.output
    assert out.exists() and (tmp_path / "Modelfile").exists()
    assert 'PARAMETER stop "<|im_end|>"' in (tmp_path / "Modelfile").read_text()
    bad = runner.invoke(app, ["export", str(llama_folder), "--type", "q3", "--out", str(out)])
    assert bad.exit_code != 0 and "--type 'q3'" in bad.output
    other = runner.invoke(app, ["export", str(llama_folder), "--to", "onnx", "--out", str(out)])
    assert other.exit_code != 0 and "only gguf" in other.output


def test_unknown_architecture_is_refused_naming_the_field(tmp_path: Path) -> None:
    from mentor.testing.tiny_models import tiny_bert

    model, tokenizer = tiny_bert()
    folder = save_model_folder(model, tokenizer, tmp_path / "bert")
    with pytest.raises(ExportError, match="architectures"):
        export_model(folder, tmp_path / "b.gguf", "f16")


# --- llama.cpp itself ---------------------------------------------------------------------------


def _llama(path: Path, lora: Path | None = None) -> object:
    if not HAS_LLAMA_CPP:
        pytest.fail("MENTOR_REQUIRE_LLAMA_CPP=1 but llama_cpp is not importable: run `make llama`")
    from llama_cpp import Llama

    extra = {"lora_path": str(lora)} if lora is not None else {}
    return Llama(model_path=str(path), n_ctx=256, logits_all=True, verbose=False, seed=0, **extra)


def _mentor_greedy(model: torch.nn.Module, prompt: list[int], n: int) -> list[int]:
    ids = torch.tensor([prompt])
    with torch.no_grad():
        out = model.generate(ids, max_new_tokens=n, do_sample=False, min_new_tokens=n)  # type: ignore[operator]
    return [int(t) for t in out[0, len(prompt) :]]


def _llama_greedy(llm: object, prompt: list[int], n: int) -> list[int]:
    llm.reset()  # type: ignore[attr-defined]
    got: list[int] = []
    for token in llm.generate(prompt, temp=0.0, top_k=1):  # type: ignore[attr-defined]
        got.append(int(token))
        if len(got) == n:
            break
    return got


@needs_llama_cpp
@pytest.mark.slow
def test_llama_cpp_loads_the_export_and_decodes_mentors_tokens(
    llama_folder: Path, tmp_path: Path
) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = export_model(llama_folder, tmp_path / "m.gguf", "f32").path
    llm = _llama(path)
    model = AutoModelForCausalLM.from_pretrained(str(llama_folder)).eval()
    tokenizer = AutoTokenizer.from_pretrained(str(llama_folder))
    text = "the product ships with a warranty"
    assert llm.tokenize(text.encode(), add_bos=False, special=True) == tokenizer(text).input_ids  # type: ignore[attr-defined]
    prompt = tokenizer(text).input_ids
    llm.eval(prompt)  # type: ignore[attr-defined]
    theirs = np.asarray(llm.scores[: len(prompt)])  # type: ignore[attr-defined]
    with torch.no_grad():
        ours = model(torch.tensor([prompt])).logits[0].numpy()
    assert np.abs(theirs - ours).max() < 1e-3
    assert _llama_greedy(llm, prompt, 12) == _mentor_greedy(model, prompt, 12)


@needs_llama_cpp
@pytest.mark.slow
def test_llama_cpp_applies_the_lora_as_mentor_merges_it(llama_folder: Path, tmp_path: Path) -> None:
    from transformers import AutoModelForCausalLM

    adapter = _adapter(llama_folder, tmp_path / "adapter")
    base = export_model(llama_folder, tmp_path / "m.gguf", "f32").path
    lora = export_lora(adapter, llama_folder, tmp_path / "lora.gguf", "f32").path
    model = AutoModelForCausalLM.from_pretrained(str(llama_folder)).eval()
    from mentor.train.adapters import load_adapter

    load_adapter(model, adapter)
    prompt = [5, 17, 90, 33, 240]
    llm = _llama(base, lora)
    llm.eval(prompt)  # type: ignore[attr-defined]
    with torch.no_grad():
        ours = model(torch.tensor([prompt])).logits[0].numpy()
    theirs = np.asarray(llm.scores[: len(prompt)])  # type: ignore[attr-defined]
    assert np.abs(theirs - ours).max() < 1e-3
    merged = export_model(llama_folder, tmp_path / "merged.gguf", "f32", merge=adapter).path
    llm_merged = _llama(merged)
    llm_merged.eval(prompt)  # type: ignore[attr-defined]
    np.testing.assert_allclose(np.asarray(llm_merged.scores[: len(prompt)]), theirs, atol=1e-3)  # type: ignore[attr-defined]


@needs_llama_cpp
@pytest.mark.slow
def test_llama_cpp_runs_mentors_int4_as_q4_1(llama_folder: Path, tmp_path: Path) -> None:
    from mentor.quantize.io import load_quantized

    folder = _quantized_folder(llama_folder, tmp_path / "int4", "int4")
    path = export_model(folder, tmp_path / "m.gguf", "q4_1").path
    mentor = load_quantized(folder, pack=False)
    prompt = [5, 17, 90, 33, 240]
    llm = _llama(path)
    llm.eval(prompt)  # type: ignore[attr-defined]
    with torch.no_grad():
        ours = mentor(torch.tensor([prompt])).logits[0].numpy()
    theirs = np.asarray(llm.scores[: len(prompt)])  # type: ignore[attr-defined]
    # llama.cpp also rounds activations to 8 bits per block for its Q4_1 dot products
    assert np.corrcoef(theirs.ravel(), ours.ravel())[0, 1] > 0.99
