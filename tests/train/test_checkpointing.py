"""Gradient checkpointing: the same loss and the same gradients as without it (LoRA with dropout,
full fine-tuning, transformers' checkpointing and our per-block fallback), blocks really
recomputed, and the auto decision."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from rich.console import Console
from torch import nn

from mentor.testing import tiny_llama
from mentor.train.checkpointing import decide, enable_checkpointing, setup_checkpointing
from mentor.train.distributed import World
from mentor.train.lora import LoRAConfig, add_lora, lora_layers, mark_trainable
from mentor.train.memory import MemoryEstimate
from mentor.train.objectives import CausalLMLoss
from mentor.train.trainer import TrainSettings
from mentor.utils.config import load_yaml_config


def _model(method: str) -> nn.Module:
    model, _ = tiny_llama(seed=0, num_layers=3)
    torch.manual_seed(1)  # the adapter's init
    if method == "lora":
        add_lora(model, LoRAConfig(r=4, alpha=8, dropout=0.3))
        mark_trainable(model, "default")
        with torch.no_grad():  # B starts at zero, which would leave A without a gradient
            for layer in lora_layers(model).values():
                layer.lora_B["default"].weight.normal_(0, 0.05)
    else:
        model.requires_grad_(True)
    return model.train()


def _step(model: nn.Module) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    ids = torch.randint(5, 200, (2, 24), generator=torch.Generator().manual_seed(0))
    labels = ids.clone()
    labels[:, :5] = -100
    torch.manual_seed(7)  # the dropout masks
    loss = CausalLMLoss(model)(input_ids=ids, labels=labels)
    loss.backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    return loss.detach(), grads


def _recomputations(model: nn.Module) -> list[int]:
    """How often the first block's MLP starts in one step: twice when recomputed (a pre-hook: the
    recomputation stops early, once the last saved tensor is back, before the MLP returns)."""
    calls = [0]
    mlp = model.model.layers[0].mlp  # type: ignore[union-attr,index]
    mlp.register_forward_pre_hook(lambda *_: calls.__setitem__(0, calls[0] + 1))
    return calls


def _no_transformers_checkpointing(model: nn.Module) -> nn.Module:
    model.supports_gradient_checkpointing = False  # type: ignore[assignment]
    return model


@pytest.mark.parametrize("method", ["lora", "full"])
@pytest.mark.parametrize("how", ["transformers", "blocks"])
def test_same_loss_and_gradients(method: str, how: str) -> None:
    plain_loss, plain_grads = _step(_model(method))
    model = _model(method)
    if how == "blocks":
        _no_transformers_checkpointing(model)
    assert enable_checkpointing(model) == how
    calls = _recomputations(model)
    loss, grads = _step(model)
    assert calls[0] == 2  # forward, then again in backward
    assert plain_grads.keys() == grads.keys()
    if method == "lora":  # A and B, and nothing else, get gradients
        assert grads and all("lora_" in n and g.abs().sum() > 0 for n, g in grads.items())
        assert any(".lora_A." in n for n in grads) and any(".lora_B." in n for n in grads)
    torch.testing.assert_close(loss, plain_loss, rtol=0, atol=0)
    for name, grad in plain_grads.items():
        torch.testing.assert_close(grads[name], grad, rtol=1e-6, atol=1e-7, msg=name)


def test_without_the_rng_restored_the_masks_differ() -> None:
    """The check above can fail: recomputing with fresh dropout masks changes the gradients."""
    plain_loss, plain_grads = _step(_model("lora"))
    model: Any = _model("lora")
    model.activation_checkpointing_enable(
        activation_checkpointing_kwargs={"use_reentrant": False, "preserve_rng_state": False}
    )
    loss, grads = _step(model)
    torch.testing.assert_close(loss, plain_loss, rtol=0, atol=0)  # forward is the same
    for kind in (".lora_A.", ".lora_B."):
        names = [n for n in grads if kind in n]
        assert any(not torch.allclose(grads[n], plain_grads[n]) for n in names)


def test_eval_and_no_grad_run_once() -> None:
    model = _no_transformers_checkpointing(_model("lora"))
    enable_checkpointing(model)
    calls = _recomputations(model)
    ids = torch.randint(5, 200, (1, 8))
    with torch.no_grad():
        model(input_ids=ids)
    model.eval()
    model(input_ids=ids).logits.sum().backward()
    assert calls[0] == 2  # once each: nothing recomputed


def test_state_dict_names_do_not_change() -> None:
    model = _model("lora")
    names = list(model.state_dict())
    enable_checkpointing(_no_transformers_checkpointing(model))
    assert list(model.state_dict()) == names


def test_a_model_without_blocks_is_refused() -> None:
    with pytest.raises(ValueError, match="no repeated blocks"):
        enable_checkpointing(nn.Sequential(nn.Linear(2, 2)))


def _estimate(total_gb: float, weights_gb: float = 1.0) -> MemoryEstimate:
    rest = int((total_gb - weights_gb) * 1e9)
    return MemoryEstimate(int(weights_gb * 1e9), 0, 0, rest, 0, checkpointing=False)


@pytest.mark.parametrize(
    ("setting", "without", "with_it", "free", "on", "words"),
    [
        ("on", 100.0, 50.0, 1000.0, True, "asked"),
        ("off", 100.0, 50.0, 1.0, False, "asked"),
        # 9 GB still to allocate against 0.9 x 10 GB free: fits, just
        ("auto", 10.0, 5.0, 10.0, False, "10.0 GB, 11.0 GB available"),
        ("auto", 10.1, 5.0, 10.0, True, "10.1 GB without it (5.0 GB with it), 11.0 GB"),
        ("auto", 30.0, 20.0, 10.0, True, "may still not fit"),
    ],
)
def test_decision(
    setting: Any, without: float, with_it: float, free: float, on: bool, words: str
) -> None:
    decision = decide(setting, _estimate(without), _estimate(with_it), int(free * 1e9))
    assert decision.on is on
    assert words in decision.reason


def test_setup_follows_the_setting_and_the_free_memory(monkeypatch: pytest.MonkeyPatch) -> None:
    console = Console(record=True, width=200)

    def setup(model: nn.Module, setting: Any) -> bool:
        return setup_checkpointing(
            model,
            setting,
            tokens=2 * 1024,
            logit_positions=2 * 1024,
            bf16=False,
            device=torch.device("cpu"),
            world=World(),
            console=console,
        )

    assert not setup(_model("lora"), "off")
    assert not setup(_model("lora"), "auto")  # a tiny model fits in any CPU's memory
    monkeypatch.setattr("mentor.train.checkpointing.free_memory", lambda device: 2**20)
    model = _model("lora")
    calls = _recomputations(model)
    assert setup(model, "auto")
    _step(model)
    assert calls[0] == 2
    assert "gradient checkpointing on: a step needs about" in console.export_text()
    assert setup(_model("full"), "on")
    assert "gradient checkpointing on (asked) [transformers" in console.export_text()


def test_the_setting_from_yaml(tmp_path: Path) -> None:
    path = tmp_path / "train.yaml"
    for written, read in [("on", "on"), ("off", "off"), ('"auto"', "auto"), ("true", "on")]:
        path.write_text(f"gradient_checkpointing: {written}\n")
        assert load_yaml_config(TrainSettings, path, {}).gradient_checkpointing == read
    path.write_text("gradient_checkpointing: sometimes\n")
    with pytest.raises(ValueError, match="gradient_checkpointing"):
        load_yaml_config(TrainSettings, path, {})
