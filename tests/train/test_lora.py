"""LoRA: equals the base at step 0, the forward and merge match W + (alpha/r)·B·A, merge and
unmerge are exact, adapters are chosen per call, and the parameter report counts right."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from mentor.testing import tiny_bert, tiny_llama, tiny_qwen2
from mentor.train.lora import (
    LoRAConfig,
    LoRALinear,
    adapter_names,
    add_lora,
    base_fingerprint,
    base_state,
    bernoulli_mask,
    delete_adapter,
    draw_seed,
    dropout_mask,
    lora_layers,
    mark_trainable,
    matches,
    merge,
    parameter_report,
    set_adapter,
    unmerge,
    unwrap,
    use_adapter,
)


def _randomise(model: nn.Module, seed: int = 1) -> None:
    """Give every B matrix values so the adapter changes the output."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for layer in lora_layers(model).values():
            for b in layer.lora_B.values():
                b.weight.copy_(torch.randn(b.weight.shape, generator=gen) * 0.05)


def _logits(model: nn.Module, ids: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model(input_ids=ids).logits  # type: ignore[no-any-return]


@pytest.fixture
def llama() -> tuple[nn.Module, torch.Tensor]:
    model, _ = tiny_llama(seed=0)
    ids = torch.randint(5, 200, (2, 12), generator=torch.Generator().manual_seed(0))
    return model.eval(), ids


def test_forward_matches_the_formula() -> None:
    torch.manual_seed(0)
    base = nn.Linear(8, 6)
    layer = LoRALinear(base)
    layer.add_adapter("a", LoRAConfig(r=4, alpha=8, dropout=0.0))
    layer.active_adapter = "a"
    with torch.no_grad():
        layer.lora_B["a"].weight.normal_()
    x = torch.randn(3, 8)
    a, b = layer.lora_A["a"].weight, layer.lora_B["a"].weight
    expected = x @ base.weight.T + base.bias + (8 / 4) * (x @ a.T @ b.T)
    torch.testing.assert_close(layer(x), expected)


@pytest.mark.parametrize(
    ("factory", "adapted"),
    [(tiny_llama, 2 * 7), (tiny_qwen2, 2 * 7), (tiny_bert, None)],
    ids=["llama", "qwen2", "bert"],
)
def test_defaults_wrap_attention_and_mlp_and_start_equal(factory, adapted) -> None:  # type: ignore[no-untyped-def]
    model, _ = factory(seed=0)
    model.eval()
    ids = torch.tensor([[2, 7, 9, 11, 13]])
    before = model(input_ids=ids)[0].detach()
    paths = add_lora(model, LoRAConfig(r=4, alpha=8))
    if adapted is not None:
        assert len(paths) == adapted
    assert all(isinstance(model.get_submodule(p), LoRALinear) for p in paths)
    torch.testing.assert_close(model(input_ids=ids)[0].detach(), before, rtol=0, atol=0)


def test_target_rules() -> None:
    assert matches("model.layers.0.self_attn.q_proj", ("q_proj",))
    assert not matches("model.layers.0.self_attn.qq_proj", ("q_proj",))
    assert matches("model.layers.1.mlp.up_proj", r".*\.1\.mlp\..*")
    assert not matches("model.layers.0.mlp.up_proj", r".*\.1\.mlp\..*")
    model, _ = tiny_llama(seed=0)
    assert len(add_lora(model, LoRAConfig(targets=r".*\.1\.self_attn\.[qv]_proj"))) == 2
    with pytest.raises(ValueError, match=r"no nn\.Linear layer matches"):
        add_lora(model, LoRAConfig(targets=("nothing",)), name="other")


def test_merge_equals_the_adapted_forward_and_unmerge_is_exact(llama) -> None:  # type: ignore[no-untyped-def]
    model, ids = llama
    original = {k: v.clone() for k, v in base_state(model).items()}
    add_lora(model, LoRAConfig(r=4, alpha=16, dropout=0.0))
    _randomise(model)
    adapted = _logits(model, ids)
    merge(model, "default")
    torch.testing.assert_close(_logits(model, ids), adapted, rtol=1e-5, atol=1e-5)
    unmerge(model)
    for key, value in base_state(model).items():
        assert torch.equal(value, original[key]), key
    torch.testing.assert_close(_logits(model, ids), adapted, rtol=0, atol=0)


def test_merged_weight_is_w_plus_scaled_ba() -> None:
    layer = LoRALinear(nn.Linear(5, 3, bias=False))
    layer.add_adapter("a", LoRAConfig(r=2, alpha=6, dropout=0.0))
    with torch.no_grad():
        layer.lora_A["a"].weight.copy_(torch.tensor([[1.0, 0, 0, 0, 1], [0, 2, 0, 0, 0]]))
        layer.lora_B["a"].weight.copy_(torch.tensor([[1.0, 0], [0, 1], [1, 1]]))
    w = layer.base_layer.weight.detach().clone()
    layer.merge("a")
    ba = torch.tensor([[1.0, 0, 0, 0, 1], [0, 2, 0, 0, 0], [1, 2, 0, 0, 1]])
    torch.testing.assert_close(layer.base_layer.weight.detach(), w + 3.0 * ba)


def test_several_adapters_chosen_per_call(llama) -> None:  # type: ignore[no-untyped-def]
    model, ids = llama
    base = _logits(model, ids)
    add_lora(model, LoRAConfig(r=4, dropout=0.0), name="a")
    _randomise(model, seed=1)
    only_a = _logits(model, ids)
    add_lora(model, LoRAConfig(r=2, dropout=0.0, targets=("q_proj", "v_proj")), name="b")
    for layer in lora_layers(model).values():
        if "b" in layer.lora_B:
            torch.nn.init.normal_(layer.lora_B["b"].weight, std=0.05)
    assert adapter_names(model) == ["a", "b"]
    with use_adapter(model, "b"):
        only_b = _logits(model, ids)
    with use_adapter(model, None):
        torch.testing.assert_close(_logits(model, ids), base, rtol=0, atol=0)
    set_adapter(model, "a")
    torch.testing.assert_close(_logits(model, ids), only_a, rtol=0, atol=0)
    assert not torch.allclose(only_a, only_b)
    delete_adapter(model, "b")
    assert adapter_names(model) == ["a"]
    with pytest.raises(KeyError, match="no adapter 'b'"):
        set_adapter(model, "b")
    with pytest.raises(ValueError, match="already exists"):
        add_lora(model, LoRAConfig(), name="a")


def test_unwrap_after_merge_gives_a_plain_model(llama) -> None:  # type: ignore[no-untyped-def]
    model, ids = llama
    add_lora(model, LoRAConfig(r=4, dropout=0.0))
    _randomise(model)
    adapted = _logits(model, ids)
    merge(model, "default", keep_original=False)
    plain = unwrap(model)
    assert not lora_layers(plain)
    assert not any("lora" in k or "base_layer" in k for k in plain.state_dict())
    torch.testing.assert_close(_logits(plain, ids), adapted, rtol=1e-5, atol=1e-5)


def test_fingerprint_ignores_adapters_merges_and_dtype(llama) -> None:  # type: ignore[no-untyped-def]
    model, _ = llama
    before = base_fingerprint(model)
    add_lora(model, LoRAConfig(r=4))
    _randomise(model)
    assert base_fingerprint(model) == before
    merge(model, "default")
    assert base_fingerprint(model) == before
    unmerge(model)
    other, _ = tiny_llama(seed=1)
    assert base_fingerprint(other) != before
    assert base_fingerprint(tiny_llama(seed=0)[0].to(torch.bfloat16)) == before


def test_parameter_report_and_trainable_mask() -> None:
    model, _ = tiny_llama(seed=0)
    total = sum(p.numel() for p in model.parameters())
    add_lora(model, LoRAConfig(r=4))
    mark_trainable(model, "default")
    hidden, inter, kv = 64, 128, 32  # tiny_llama: 4 heads of 16, 2 kv heads
    per_layer = (
        2 * 4 * (hidden + hidden)  # q, o: A (4, 64) and B (64, 4)
        + 2 * 4 * (hidden + kv)  # k, v
        + 3 * 4 * (hidden + inter)  # gate, up, down
    )
    report = parameter_report(model)
    assert report.base == total
    assert report.trainable == 2 * per_layer
    assert str(report).endswith(f"{report.trainable / total:.2%} trainable")
    names = [n for n, p in model.named_parameters() if p.requires_grad]
    assert names and all(".lora_A." in n or ".lora_B." in n for n in names)


def test_dtype_mix_without_autocast() -> None:
    layer = LoRALinear(nn.Linear(8, 4).to(torch.bfloat16))
    layer.add_adapter("a", LoRAConfig(r=2, dropout=0.0))
    layer.lora_A.float()
    layer.lora_B.float()
    layer.active_adapter = "a"
    out = layer(torch.randn(2, 8, dtype=torch.bfloat16))
    assert out.dtype == torch.bfloat16


def test_config_validation() -> None:
    with pytest.raises(ValueError, match="rank"):
        LoRAConfig(r=0)
    with pytest.raises(ValueError, match="dropout"):
        LoRAConfig(dropout=1.0)
    assert LoRAConfig(r=16, alpha=32).scaling == 2.0
    assert LoRAConfig(r=16, alpha=32, use_rslora=True).scaling == 8.0


def test_an_adapter_added_to_an_eval_model_runs_without_dropout(llama) -> None:  # type: ignore[no-untyped-def]
    model, ids = llama
    add_lora(model, LoRAConfig(r=4, dropout=0.5))
    _randomise(model)
    assert not any(m.training for m in model.modules())
    torch.testing.assert_close(_logits(model, ids), _logits(model, ids), rtol=0, atol=0)


def _composed(
    layer: LoRALinear, x: torch.Tensor, mask: torch.Tensor | None, scale: float
) -> torch.Tensor:
    """The textbook adapter path (dropout, A, B, scale, add), for checking the fused one."""
    a, b = layer.lora_A["a"].weight, layer.lora_B["a"].weight
    dropped = x if mask is None else x * mask * scale
    return layer.base_layer(x) + layer.scaling["a"] * (dropped @ a.T @ b.T)


@pytest.mark.parametrize(("p", "train_base"), [(0.0, False), (0.3, False), (0.3, True)])
def test_fused_training_path_has_the_composed_gradients(p: float, train_base: bool) -> None:
    torch.manual_seed(0)
    layer = LoRALinear(nn.Linear(8, 6).double())
    layer.add_adapter("a", LoRAConfig(r=4, alpha=8, dropout=p))
    layer.double().train()
    layer.active_adapter = "a"
    with torch.no_grad():
        layer.lora_B["a"].weight.normal_()
    layer.base_layer.requires_grad_(train_base)
    x = torch.randn(2, 5, 8, dtype=torch.double, requires_grad=True)
    torch.manual_seed(7)
    out = layer(x)
    torch.manual_seed(7)  # the same draw gives the mask the fused path used
    seed = draw_seed()
    mask, scale = dropout_mask(torch.Size([10, 8]), p, x.device, seed) if p else (None, 1.0)
    mask = None if mask is None else mask.view(x.shape)
    weights = [x, layer.lora_A["a"].weight, layer.lora_B["a"].weight]
    if train_base:  # LoRA on top of a base being trained too: W and bias get gradients
        weights += [layer.base_layer.weight, layer.base_layer.bias]
    upstream = torch.randn_like(out)
    fused = torch.autograd.grad(out, weights, upstream)
    expected_out = _composed(layer, x, mask, scale)
    composed = torch.autograd.grad(expected_out, weights, upstream)
    torch.testing.assert_close(out, expected_out)
    for got, want in zip(fused, composed, strict=True):
        torch.testing.assert_close(got, want)
    if p == 0.0:  # and the analytic gradient agrees with finite differences
        assert torch.autograd.gradcheck(lambda t: layer(t), (x,))


def test_fused_path_under_bf16_autocast_matches_fp32() -> None:
    torch.manual_seed(0)
    layer = LoRALinear(nn.Linear(16, 8))
    layer.add_adapter("a", LoRAConfig(r=4, alpha=8, dropout=0.0))
    layer.active_adapter = "a"
    with torch.no_grad():
        layer.lora_B["a"].weight.normal_()
    x = torch.randn(3, 16, requires_grad=True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = layer(x)
    assert out.dtype == torch.bfloat16
    out.float().sum().backward()
    grad_a = layer.lora_A["a"].weight.grad
    assert grad_a is not None and grad_a.dtype == torch.float32
    assert x.grad is not None and x.grad.dtype == torch.float32
    reference = _composed(layer, x.detach(), None, 1.0)
    torch.testing.assert_close(out.float(), reference, rtol=0.05, atol=0.05)


@pytest.mark.parametrize("p", [0.05, 0.5])
def test_dropout_mask_keeps_one_minus_p_and_the_mean(p: float) -> None:
    mask, scale = dropout_mask(torch.Size([301, 999]), p, torch.device("cpu"), 1234)  # odd count
    assert mask.shape == (301, 999) and mask.dtype == torch.bool
    keep = mask.float().mean().item()
    assert keep == pytest.approx(1 - p, abs=0.003)
    assert scale == pytest.approx(1 / (1 - p), rel=1e-4)
    assert (mask.float() * scale).mean().item() == pytest.approx(1.0, abs=0.004)
    # a pure function of the seed (backward draws it again), and another seed gives another mask
    cpu = torch.device("cpu")
    assert torch.equal(dropout_mask(torch.Size([301, 999]), p, cpu, 1234)[0], mask)
    assert not torch.equal(dropout_mask(torch.Size([301, 999]), p, cpu, 99)[0], mask)
    torch.manual_seed(0)
    first = draw_seed()
    torch.manual_seed(0)  # seeds come from the default generator, which checkpoints keep
    assert draw_seed() == first


def test_the_gpu_mask_keeps_one_minus_p_and_is_a_function_of_the_seed() -> None:
    # bernoulli_mask is the non-CPU branch of dropout_mask; its maths runs on a CPU generator too
    mask, scale = bernoulli_mask(torch.Size([301, 999]), 0.05, torch.Generator().manual_seed(3))
    assert mask.dtype == torch.bool and mask.shape == (301, 999)
    assert mask.float().mean().item() == pytest.approx(0.95, abs=0.003)
    assert scale == pytest.approx(1 / 0.95)
    again, _ = bernoulli_mask(torch.Size([301, 999]), 0.05, torch.Generator().manual_seed(3))
    assert torch.equal(mask, again)


def test_training_keeps_no_dropout_mask_for_backward() -> None:
    """What the fused path keeps for backward is the same with dropout as without: the mask is
    drawn again from its seed, not stored (a byte per input element per layer)."""

    def saved_bytes(p: float) -> int:
        torch.manual_seed(0)
        layer = LoRALinear(nn.Linear(64, 32))
        layer.add_adapter("a", LoRAConfig(r=4, alpha=8, dropout=p))
        layer.active_adapter = "a"
        layer.train()
        x = torch.randn(128, 64, requires_grad=True)
        seen: dict[int, int] = {}

        def pack(t: torch.Tensor) -> torch.Tensor:
            seen[t.data_ptr()] = t.numel() * t.element_size()
            return t

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            out = layer(x)
        out.sum().backward()
        assert layer.lora_A["a"].weight.grad is not None
        return sum(seen.values())

    assert saved_bytes(0.3) == saved_bytes(0.0)


def test_bf16_inference_update_is_the_same_for_few_and_many_rows() -> None:
    # Up to 16 rows a CPU takes the fp32 update path, beyond it the bf16 one: same result.
    torch.manual_seed(0)
    layer = LoRALinear(nn.Linear(64, 96).to(torch.bfloat16))
    layer.add_adapter("a", LoRAConfig(r=4, alpha=8, dropout=0.0))
    nn.init.normal_(layer.b("a").weight)
    layer.active_adapter = "a"
    layer.eval()
    x = torch.randn(1, 40, 64).to(torch.bfloat16)
    expected = (
        x.float() @ layer.base_layer.weight.float().t()
        + layer.base_layer.bias.float()
        + 2.0 * (x.float() @ layer.a("a").weight.t() @ layer.b("a").weight.t())
    )
    with torch.inference_mode():
        many = layer(x)  # 40 rows: bf16 update
        few = torch.cat([layer(x[:, i : i + 8]) for i in range(0, 40, 8)], dim=1)  # fp32 update
    assert few.dtype == many.dtype == torch.bfloat16
    scale = expected.abs().max()
    assert (few.float() - expected).abs().max() / scale < 0.02
    assert (many.float() - expected).abs().max() / scale < 0.02
    assert (few.float() - expected).abs().mean() <= (many.float() - expected).abs().mean() * 1.5
