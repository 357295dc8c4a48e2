"""Gradient (activation) checkpointing: each transformer block keeps only its input in forward and
recomputes the rest in backward, trading about a third more compute for most of the activation
memory.

Checkpointing is non-reentrant (``use_reentrant=False``): gradients reach LoRA's A and B even
though the frozen embeddings' output does not require grad (the reentrant variant needs
``enable_input_require_grads`` for that), and ``torch.utils.checkpoint`` restores the RNG state
before recomputing, so LoRA's dropout draws the same mask twice: losses and gradients equal
those of a run without checkpointing (``tests/train/test_checkpointing.py``).

``auto`` turns it on when :mod:`mentor.train.memory`'s estimate of a step does not fit in what
the device has free. The recipes call :func:`setup_checkpointing` once the trainable parameters
are marked, before :func:`mentor.train.trainer.train`.
"""

from __future__ import annotations

import types
from dataclasses import dataclass
from typing import Any, Literal

import torch
from rich.console import Console
from torch import nn
from torch.utils.checkpoint import checkpoint

from mentor.train.distributed import World
from mentor.train.memory import MemoryEstimate, estimate_for_model, fits, free_memory
from mentor.utils.fs import human_bytes

Setting = Literal["auto", "on", "off"]


@dataclass(frozen=True)
class Decision:
    on: bool
    reason: str


def decide(
    setting: Setting, without: MemoryEstimate, with_it: MemoryEstimate, free: int
) -> Decision:
    """Whether to checkpoint, and the line that says why. The weights are already loaded when
    this runs, so they count as available beside ``free``."""
    if setting == "off":
        return Decision(False, "gradient checkpointing off (asked)")
    if setting == "on":
        return Decision(True, "gradient checkpointing on (asked)")
    available = human_bytes(free + without.weights)
    if fits(without, free):
        return Decision(
            False,
            f"gradient checkpointing off: a step needs about {human_bytes(without.total)}, "
            f"{available} available",
        )
    still = "" if fits(with_it, free) else "; it may still not fit: lower --batch-size"
    return Decision(
        True,
        f"gradient checkpointing on: a step needs about {human_bytes(without.total)} without it "
        f"({human_bytes(with_it.total)} with it), {available} available{still}",
    )


def _find_blocks(model: nn.Module) -> list[nn.Module]:
    """The repeated blocks: the ``nn.ModuleList`` of one class holding the most parameters."""
    best: list[nn.Module] = []
    best_size = -1
    for module in model.modules():
        if isinstance(module, nn.ModuleList) and len(module) > 0:
            children = list(module)
            if len({type(c) for c in children}) == 1:
                size = sum(p.numel() for p in module.parameters())
                if size > best_size:
                    best, best_size = children, size
    return best


def _checkpointed_forward(self: nn.Module, *args: Any, **kwargs: Any) -> Any:
    """A block's forward, recomputed in backward while training with grad enabled."""
    forward = type(self).forward
    if self.training and torch.is_grad_enabled():
        return checkpoint(forward, self, *args, use_reentrant=False, **kwargs)
    return forward(self, *args, **kwargs)


def enable_checkpointing(model: nn.Module) -> str:
    """Checkpoint each block of ``model``; return how: ``transformers`` (its own per-layer
    checkpointing) or ``blocks`` (each block of the largest ``ModuleList`` wrapped here, for
    models that do not support it). Parameter names and the state dict do not change."""
    if getattr(model, "supports_gradient_checkpointing", False):
        kwargs = {"use_reentrant": False}
        enable = getattr(model, "activation_checkpointing_enable", None)
        if enable is not None:  # transformers >= 5.x; the older name is deprecated there
            enable(activation_checkpointing_kwargs=kwargs)
        else:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)  # type: ignore[operator]
        return "transformers"
    blocks = _find_blocks(model)
    if not blocks:
        raise ValueError(
            f"{type(model).__name__} has no repeated blocks (an nn.ModuleList) to checkpoint"
        )
    for block in blocks:
        block.forward = types.MethodType(_checkpointed_forward, block)
    return "blocks"


def setup_checkpointing(
    model: nn.Module,
    setting: Setting,
    *,
    tokens: int,
    logit_positions: int,
    bf16: bool,
    device: torch.device,
    world: World,
    console: Console,
) -> bool:
    """Decide (``auto``: the estimate of a step of ``tokens`` positions against the device's
    free memory, any process's need turning it on in all), enable, and say so in one line.
    Call it after the trainable parameters are marked. Returns whether it is on."""
    if setting == "off":
        return False
    config = getattr(model, "config", None)
    if setting == "auto" and config is None:
        return False  # no shape to estimate from: a plain module, left as it is
    if setting == "auto":
        without, with_it = (
            estimate_for_model(
                model,
                config,
                tokens=tokens,
                logit_positions=logit_positions,
                bf16=bf16,
                checkpointing=c,
            )
            for c in (False, True)
        )
        decision = decide(setting, without, with_it, free=free_memory(device))
        on = world.any(decision.on)
        if not on:
            return False
        if not decision.on:  # another process ran short: all of them checkpoint
            decision = Decision(True, "gradient checkpointing on: another process needs it")
    else:
        decision = Decision(True, "gradient checkpointing on (asked)")
    how = enable_checkpointing(model)
    if world.is_main:
        console.print(
            f"{decision.reason} [{how} per-block recomputation]", markup=False, highlight=False
        )
    return True
