"""Adapter folders: PEFT loads ours and we load PEFT's with equal logits; the base is checked."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from torch import nn

from mentor.testing import tiny_llama, tiny_qwen2
from mentor.train.adapters import (
    CONFIG_FILE,
    WEIGHTS_FILE,
    AdapterError,
    find_adapters,
    load_adapter,
    read_info,
    save_adapter,
)
from mentor.train.lora import LoRAConfig, add_lora, lora_layers, use_adapter

IDS = torch.tensor([[2, 17, 33, 48, 5, 91, 120, 7]])


def _trained(model: nn.Module, config: LoRAConfig, name: str = "default") -> nn.Module:
    add_lora(model, config, name)
    gen = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for layer in lora_layers(model).values():
            if name in layer.lora_B:
                w = layer.lora_B[name].weight
                w.copy_(torch.randn(w.shape, generator=gen) * 0.05)
    return model.eval()


def _logits(model: nn.Module) -> torch.Tensor:
    with torch.no_grad():
        return model(input_ids=IDS).logits  # type: ignore[no-any-return]


@pytest.mark.parametrize("factory", [tiny_llama, tiny_qwen2], ids=["llama", "qwen2"])
@pytest.mark.parametrize(
    "config",
    [
        LoRAConfig(r=4, alpha=8, dropout=0.0),
        LoRAConfig(r=8, alpha=8, dropout=0.1, targets=("q_proj", "v_proj"), use_rslora=True),
    ],
    ids=["all-linear", "qv-rslora"],
)
def test_peft_loads_ours_with_equal_logits(factory, config, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    from peft import PeftModel

    ours = _trained(factory(seed=0)[0], config)
    expected = _logits(ours)
    save_adapter(ours, tmp_path / "adapter", config=config, base_model="tiny")
    assert (tmp_path / "adapter" / WEIGHTS_FILE).exists()
    peft_model = PeftModel.from_pretrained(factory(seed=0)[0], str(tmp_path / "adapter")).eval()
    torch.testing.assert_close(_logits(peft_model), expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("targets", [["q_proj", "k_proj", "down_proj"], "all-linear"])
def test_we_load_peft_adapters_with_equal_logits(targets, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    from peft import LoraConfig, get_peft_model

    peft_model = get_peft_model(
        tiny_llama(seed=0)[0],
        LoraConfig(r=4, lora_alpha=12, target_modules=targets, init_lora_weights=False),
    ).eval()
    expected = _logits(peft_model)
    peft_model.save_pretrained(str(tmp_path / "theirs"))
    ours = tiny_llama(seed=0)[0].eval()
    info = load_adapter(ours, tmp_path / "theirs")
    assert info.base_fingerprint is None  # PEFT's folders carry no fingerprint
    torch.testing.assert_close(_logits(ours), expected, rtol=1e-5, atol=1e-5)


def test_round_trip_and_info(tmp_path: Path) -> None:
    config = LoRAConfig(r=4, alpha=8, dropout=0.0)
    model = _trained(tiny_llama(seed=0)[0], config)
    expected = _logits(model)
    save_adapter(model, tmp_path / "a", config=config, base_model="tiny", extra={"steps": 7})
    fresh = tiny_llama(seed=0)[0].eval()
    info = load_adapter(fresh, tmp_path / "a", name="a")
    torch.testing.assert_close(_logits(fresh), expected, rtol=0, atol=0)
    assert info.base_model == "tiny"
    assert info.config.r == 4 and info.config.targets is not None
    assert info.extra["steps"] == 7
    assert info.parameters == sum(p.numel() for n, p in model.named_parameters() if "lora_" in n)
    assert read_info(tmp_path / "a").tensors == 2 * 2 * 7
    assert find_adapters([tmp_path]) == [tmp_path / "a"]


def test_refuses_another_base(tmp_path: Path) -> None:
    config = LoRAConfig(r=4)
    save_adapter(_trained(tiny_llama(seed=0)[0], config), tmp_path / "a", config=config)
    other = tiny_llama(seed=5)[0]
    with pytest.raises(AdapterError, match="trained on a different base model"):
        load_adapter(other, tmp_path / "a")
    assert not lora_layers(other)
    load_adapter(other, tmp_path / "a", check_base=False)  # the user's explicit choice


def test_refuses_a_shape_or_layer_mismatch(tmp_path: Path) -> None:
    config = LoRAConfig(r=4)
    save_adapter(_trained(tiny_llama(seed=0)[0], config), tmp_path / "a", config=config)
    wider = tiny_llama(seed=0, hidden_size=32, intermediate_size=64)[0]
    with pytest.raises(AdapterError, match="shape"):
        load_adapter(wider, tmp_path / "a", check_base=False)
    assert not any(layer.lora_A for layer in lora_layers(wider).values())


def test_bad_folders_are_named(tmp_path: Path) -> None:
    with pytest.raises(AdapterError, match="not an adapter folder"):
        read_info(tmp_path)
    (tmp_path / CONFIG_FILE).write_text("{oops")
    with pytest.raises(AdapterError, match=r"adapter_config.json: invalid JSON"):
        read_info(tmp_path)
    (tmp_path / CONFIG_FILE).write_text(
        json.dumps({"peft_type": "LORA", "r": 4, "use_dora": True, "target_modules": ["q_proj"]})
    )
    (tmp_path / WEIGHTS_FILE).write_bytes(b"")
    with pytest.raises(AdapterError, match="use_dora"):
        read_info(tmp_path)


def test_two_adapters_from_files_on_one_base(tmp_path: Path) -> None:
    configs = {"a": LoRAConfig(r=4, dropout=0.0), "b": LoRAConfig(r=2, dropout=0.0)}
    expected = {}
    for seed, (name, config) in enumerate(configs.items()):
        model = tiny_llama(seed=0)[0]
        add_lora(model, config)
        gen = torch.Generator().manual_seed(seed + 10)
        with torch.no_grad():
            for layer in lora_layers(model).values():
                w = layer.lora_B["default"].weight
                w.copy_(torch.randn(w.shape, generator=gen) * 0.05)
        expected[name] = _logits(model.eval())
        save_adapter(model, tmp_path / name, config=config)
    base = tiny_llama(seed=0)[0].eval()
    for name in configs:
        load_adapter(base, tmp_path / name, name=name)
    for name in configs:
        with use_adapter(base, name):
            torch.testing.assert_close(_logits(base), expected[name], rtol=0, atol=0)


def test_a_failed_save_keeps_the_previous_adapter(tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    config = LoRAConfig(r=4)
    model = _trained(tiny_llama(seed=0)[0], config)
    save_adapter(model, tmp_path / "a", config=config)
    before = (tmp_path / "a" / WEIGHTS_FILE).read_bytes()

    def boom(*args, **kwargs):  # type: ignore[no-untyped-def]
        raise OSError("disk full")

    monkeypatch.setattr("mentor.train.adapters.save_file", boom)
    with pytest.raises(OSError, match="disk full"):
        save_adapter(model, tmp_path / "a", config=config)
    assert (tmp_path / "a" / WEIGHTS_FILE).read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["a"]
