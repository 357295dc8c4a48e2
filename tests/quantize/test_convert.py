"""Which layers get quantized, group-size fallback and its errors, and logits after the swap."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from mentor.quantize.convert import (
    METHODS,
    QuantizeError,
    plan_layers,
    quantize_model,
    quantized_layers,
)
from mentor.quantize.int4 import Int4Linear
from mentor.quantize.int8 import Int8Linear
from mentor.testing import tiny_llama, tiny_qwen2


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm())


def test_a_tied_head_is_left_alone_and_an_untied_one_is_int8() -> None:
    llama, _ = tiny_llama()  # head tied to the embeddings
    plans = plan_layers(llama, "int4", 32)
    assert len(plans) == 2 * 7 and all(p.method == "int4" for p in plans)
    assert "lm_head" not in {p.path for p in plans}
    qwen, _ = tiny_qwen2()  # untied head
    plans = {p.path: p for p in plan_layers(qwen, "int4", 32)}
    assert plans["lm_head"].method == "int8" and plans["lm_head"].group_size is None
    assert plans["model.layers.0.self_attn.q_proj"].bias  # Qwen2's attention biases are kept


def test_group_size_falls_back_to_the_largest_kernel_size_that_divides() -> None:
    model, _ = tiny_llama(hidden_size=96, intermediate_size=192, num_heads=4, num_kv_heads=2)
    plans = {p.path: p for p in plan_layers(model, "int4", 128)}
    assert plans["model.layers.0.self_attn.q_proj"].group_size == 32  # 96 = 3 x 32
    assert plans["model.layers.0.mlp.down_proj"].group_size == 64  # 192 = 3 x 64


def test_a_layer_no_group_size_divides_is_named_in_the_error() -> None:
    model, _ = tiny_llama(hidden_size=40, intermediate_size=80, num_heads=4, num_kv_heads=2)
    with pytest.raises(QuantizeError, match=r"model\.layers\.0\.self_attn\.q_proj: in_features 40"):
        plan_layers(model, "int4", 128)
    assert plan_layers(model, "int8")  # int8 has no groups


def test_unknown_methods_and_odd_group_sizes_are_refused() -> None:
    model, _ = tiny_llama()
    with pytest.raises(
        QuantizeError, match="unknown quantization 'int3'; choose one of: int8, int4"
    ):
        plan_layers(model, "int3")
    with pytest.raises(QuantizeError, match="even number"):
        plan_layers(model, "int4", 33)
    assert set(METHODS) == {"int8", "int4"}
    with pytest.raises(QuantizeError, match=r"no nn\.Linear"):
        plan_layers(nn.Sequential(nn.ReLU()), "int8")


@pytest.mark.parametrize(
    ("build", "method", "max_rel", "min_top1"),
    [
        # tolerances on random tiny models (Gaussian weights, the hardest case for 16 levels)
        (tiny_llama, "int8", 0.03, 0.95),
        (tiny_qwen2, "int8", 0.03, 0.95),
        (tiny_llama, "int4", 0.15, 0.75),
        (tiny_qwen2, "int4", 0.15, 0.75),
    ],
)
def test_quantized_logits_stay_close_to_the_original(
    build: object, method: str, max_rel: float, min_top1: float
) -> None:
    model, tok = build()  # type: ignore[operator]
    ids = torch.randint(0, len(tok), (2, 24), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        ref = model(ids).logits
    plans = quantize_model(model, method, 32)
    with torch.no_grad():
        out = model(ids).logits
    layers = quantized_layers(model)
    assert set(layers) == {p.path for p in plans}
    kind = Int8Linear if method == "int8" else Int4Linear
    assert all(isinstance(layers[p.path], kind) for p in plans if p.path != "lm_head")
    assert not any(type(m) is nn.Linear for m in model.modules() if m is not model.lm_head)
    assert _rel(out, ref) < max_rel
    top1 = float((out.argmax(-1) == ref.argmax(-1)).float().mean())
    assert top1 >= min_top1
    assert _rel(out, ref) > 0  # something was quantized


def test_progress_is_reported_per_layer() -> None:
    model, _ = tiny_llama()
    seen: list[tuple[int, int]] = []
    quantize_model(model, "int8", on_layer=lambda done, total: seen.append((done, total)))
    assert seen == [(i, 14) for i in range(1, 15)]
