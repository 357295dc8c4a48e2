"""How an arm's model is loaded: an adapter merged as ``mentor adapters merge`` merges it."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from mentor.bakeoff import arms
from mentor.models import loading
from mentor.testing import save_tiny_llama
from mentor.train.adapters import save_adapter
from mentor.train.lora import LoRAConfig, add_lora


def test_an_adapter_is_merged_from_float32_and_rounded_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """W + s·BA from the stored float32 weights, cast to bf16 once: equal to the merged model a
    user writes with ``mentor adapters merge --dtype bfloat16``, where merging into bf16 weights
    (rounded, then the sum rounded again) is not."""
    base = save_tiny_llama(tmp_path / "base", seed=0)
    model = loading.load_causal_lm(base, dtype="float32", device="cpu")
    config = LoRAConfig(r=4, alpha=8, dropout=0.0)
    add_lora(model, config, "default")
    with torch.no_grad():  # a delta near bf16's resolution of the weights
        for name, param in model.named_parameters():
            if "lora_B" in name:
                param.normal_(0, 0.02, generator=torch.Generator().manual_seed(1))
    adapter = save_adapter(model, tmp_path / "adapter", config=config, base_model=str(base))

    monkeypatch.setattr(loading, "preferred_dtype", lambda device: torch.bfloat16)
    merged = arms.load_merged(str(base), adapter, "cpu")
    assert next(merged.parameters()).dtype == torch.bfloat16

    reference = loading.load_causal_lm(base, dtype="float32", device="cpu")
    from mentor.quantize.recipe import merge_adapter

    merge_adapter(reference, adapter)
    twice = loading.load_causal_lm(base, dtype="bfloat16", device="cpu")
    merge_adapter(twice, adapter)
    key = "model.layers.0.self_attn.q_proj.weight"
    once = reference.state_dict()[key].to(torch.bfloat16)
    assert torch.equal(merged.state_dict()[key], once)
    assert not torch.equal(twice.state_dict()[key], once)  # the double rounding this avoids
