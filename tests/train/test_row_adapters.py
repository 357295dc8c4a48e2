"""Per-row adapters (use_row_adapters): a batch whose rows run different adapters gives each row
the logits it gets alone under use_adapter, by both the stacked and the grouped update, with a KV
cache too; mixing is refused where it would be wrong."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from transformers import DynamicCache

from mentor.testing import tiny_llama
from mentor.train import lora
from mentor.train.lora import (
    LoRAConfig,
    LoRALinear,
    add_lora,
    lora_layers,
    merge,
    set_adapter,
    use_adapter,
    use_row_adapters,
)

ROWS = ["a", None, "b", "a", "c", None, "b"]


def _randomise(model: nn.Module, seed: int = 1) -> None:
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for layer in lora_layers(model).values():
            for b in layer.lora_B.values():
                b.weight.copy_(torch.randn(b.weight.shape, generator=gen) * 0.05)


@pytest.fixture
def model() -> nn.Module:
    """A tiny llama with three adapters of different ranks and scalings; "c" adapts only q_proj."""
    model, _ = tiny_llama(seed=0)
    add_lora(model, LoRAConfig(r=4, alpha=8, dropout=0.0), "a")
    add_lora(model, LoRAConfig(r=8, alpha=4, dropout=0.0), "b")
    add_lora(model, LoRAConfig(r=2, alpha=2, dropout=0.0, targets=("q_proj",)), "c")
    _randomise(model)
    set_adapter(model, None)
    return model.eval()


def _ids(rows: int, length: int = 9, seed: int = 0) -> torch.Tensor:
    return torch.randint(5, 200, (rows, length), generator=torch.Generator().manual_seed(seed))


def _alone(model: nn.Module, ids: torch.Tensor, names: list[str | None]) -> torch.Tensor:
    """Each row on its own under use_adapter: the reference."""
    out = []
    with torch.no_grad():
        for i, name in enumerate(names):
            with use_adapter(model, name):
                out.append(model(input_ids=ids[i : i + 1]).logits)
    return torch.cat(out)


@pytest.fixture(params=["stacked", "grouped"])
def mode(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    if request.param == "grouped":
        monkeypatch.setattr(lora, "_STACK_RANKS", 0)
    return str(request.param)


def test_mixed_rows_match_each_row_alone(model: nn.Module, mode: str) -> None:
    ids = _ids(len(ROWS))
    expected = _alone(model, ids, ROWS)
    with torch.no_grad(), use_row_adapters(model, ROWS):
        got = model(input_ids=ids).logits
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)
    # the adapters really change the rows: the test would catch a batch run on the base alone
    with torch.no_grad():
        base = model(input_ids=ids).logits
    for i, name in enumerate(ROWS):
        assert torch.equal(got[i], base[i]) == (name is None), f"row {i} ({name})"


def test_decode_steps_with_a_cache_match_each_row_alone(model: nn.Module, mode: str) -> None:
    ids, steps = _ids(len(ROWS), length=6), _ids(len(ROWS), length=3, seed=1)
    full = torch.cat([ids, steps], dim=1)
    expected = _alone(model, full, ROWS)[:, -1]
    with torch.inference_mode(), use_row_adapters(model, ROWS):
        cache = DynamicCache()
        model(input_ids=ids, cache=cache, use_cache=True)
        for t in range(steps.shape[1]):
            got = model(input_ids=steps[:, t : t + 1], cache=cache, use_cache=True).logits[:, -1]
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)


def test_one_layer_matches_the_formula_per_row(mode: str) -> None:
    torch.manual_seed(0)
    layer = LoRALinear(nn.Linear(8, 6))
    layer.add_adapter("p", LoRAConfig(r=3, alpha=6, dropout=0.0))
    layer.add_adapter("q", LoRAConfig(r=2, alpha=1, dropout=0.0))
    with torch.no_grad():
        for b in layer.lora_B.values():
            b.weight.normal_()
    x = torch.randn(4, 5, 8)  # (rows, T, d_in)
    names: list[str | None] = ["q", "p", None, "q"]
    w, bias = layer.base_layer.weight, layer.base_layer.bias
    expected = []
    for i, name in enumerate(names):
        row = x[i] @ w.T + bias
        if name is not None:
            a, b = layer.a(name).weight, layer.b(name).weight
            row = row + layer.scaling[name] * (x[i] @ a.T @ b.T)
        expected.append(row)
    with torch.no_grad(), use_row_adapters(layer, names):
        got = layer(x)
    torch.testing.assert_close(got, torch.stack(expected))


def test_bf16_rows_on_cpu_match_the_fp32_formula(mode: str) -> None:
    torch.manual_seed(0)
    layer = LoRALinear(nn.Linear(64, 32, bias=False))
    layer.add_adapter("p", LoRAConfig(r=4, alpha=8, dropout=0.0))
    layer.add_adapter("q", LoRAConfig(r=4, alpha=8, dropout=0.0))
    with torch.no_grad():
        for b in layer.lora_B.values():
            b.weight.normal_()
    x = torch.randn(2, 1, 64)  # a decode step: few tokens, the CPU's fp32 update
    with torch.no_grad():
        a, b = layer.a("p").weight, layer.b("p").weight
        reference = x @ layer.base_layer.weight.T + 2.0 * (x @ a.T @ b.T)
    layer.to(torch.bfloat16)
    with torch.no_grad(), use_row_adapters(layer, ["p", None]):
        got = layer(x.bfloat16()).float()
        base = layer.base_layer(x.bfloat16()).float()
    torch.testing.assert_close(got[0], reference[0], atol=0.05, rtol=0.02)
    torch.testing.assert_close(got[1], base[1])


def test_one_adapter_for_every_row_is_the_single_adapter_path(model: nn.Module) -> None:
    ids = _ids(3)
    with torch.no_grad(), use_row_adapters(model, ["b"] * 3):
        assert all(layer.row_adapters is None for layer in lora_layers(model).values())
        got = model(input_ids=ids).logits
    torch.testing.assert_close(got, _alone(model, ids, ["b"] * 3), atol=1e-5, rtol=1e-5)


def test_state_is_restored_and_nesting_works(model: nn.Module) -> None:
    set_adapter(model, "a")
    layers = list(lora_layers(model).values())
    with use_row_adapters(model, ["a", "b"]):
        outer = layers[0].row_adapters
        assert outer is not None and outer.names == ("a", "b")
        with use_row_adapters(model, ["c", "c"]):
            assert layers[0].row_adapters is None and layers[0].active_adapter == "c"
        assert layers[0].row_adapters is outer
    assert all(m.row_adapters is None and m.active_adapter == "a" for m in layers)


def test_changed_weights_are_seen_by_the_stacked_update(model: nn.Module) -> None:
    ids = _ids(2)
    with torch.no_grad(), use_row_adapters(model, ["a", "b"]):
        model(input_ids=ids)  # builds and keeps the stacked weights
    _randomise(model, seed=7)  # in-place change, as an optimiser step or a reload does
    with torch.no_grad(), use_row_adapters(model, ["a", "b"]):
        got = model(input_ids=ids).logits
    torch.testing.assert_close(got, _alone(model, ids, ["a", "b"]), atol=1e-5, rtol=1e-5)


def test_bad_uses_are_refused(model: nn.Module) -> None:
    with pytest.raises(KeyError, match="row 1: no adapter 'zzz'"):
        use_row_adapters(model, ["a", "zzz"]).__enter__()
    with pytest.raises(ValueError, match="one adapter name"):
        use_row_adapters(model, []).__enter__()
    with (
        pytest.raises(ValueError, match="3 adapter names, but the batch has 2 rows"),
        torch.no_grad(),
        use_row_adapters(model, ["a", "b", None]),
    ):
        model(input_ids=_ids(2))
    lora_layers(model)["model.layers.0.self_attn.q_proj"].a("a").weight.requires_grad_(True)
    with pytest.raises(RuntimeError, match="for inference"), use_row_adapters(model, ["a", "b"]):
        model(input_ids=_ids(2))
    merge(model, "a")
    with pytest.raises(RuntimeError, match="'a' is merged"):
        use_row_adapters(model, ["a", "b"]).__enter__()
