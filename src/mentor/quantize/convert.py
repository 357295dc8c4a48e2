"""Which layers of a causal LM are quantized and how, and the swap of each for its quantized form.

Every ``nn.Linear`` of the model is quantized with the chosen method, with two exceptions:

- the output head, when tied to the input embeddings (SmolLM2), stays as it is: quantizing it
  would store a second copy of the embedding matrix;
- an untied head (Qwen2.5-Coder-0.5B's: 136M of its 630M parameters) is int8 under both methods,
  because its errors land directly on the logits; llama.cpp's 4-bit recipes also keep the output
  at 6 bits or more.

For int4, a layer whose ``in_features`` is not a multiple of the group size asked for takes the
largest of the CPU kernel's sizes (256, 128, 64, 32) that is smaller and divides it: SmolLM2's
576-wide projections take 64 where 128 was asked. A layer that no such size divides is refused
with an error naming it. Embeddings, norms and biases keep their dtype.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, replace
from typing import Any

import torch
from torch import nn

from mentor.quantize.int4 import KERNEL_GROUP_SIZES, Int4Linear
from mentor.quantize.int8 import Int8Linear

METHODS: dict[str, str] = {
    "int8": "int8 weights per output channel, int8 activations per token (dynamic)",
    "int4": "int4 weights per group of inputs, asymmetric; floating-point activations",
}
"""The quantization levels ``mentor quantize --to`` offers, by name."""

QuantizedLinear = Int8Linear | Int4Linear


class QuantizeError(ValueError):
    """A model or setting that cannot be quantized as asked (names the layer or value)."""


@dataclass(frozen=True)
class LayerPlan:
    """How one linear layer is quantized: enough to rebuild its empty module when loading."""

    path: str
    method: str
    in_features: int
    out_features: int
    bias: bool
    group_size: int | None = None
    """Int4 only: inputs per scale/offset pair."""
    smoothed: bool = False
    """Int8 only: SmoothQuant factors were folded in (the layer holds a ``smooth`` vector)."""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> LayerPlan:
        return cls(**data)


def check_method(method: str) -> None:
    if method not in METHODS:
        raise QuantizeError(f"unknown quantization {method!r}; choose one of: {', '.join(METHODS)}")


def int4_group_size(path: str, in_features: int, group_size: int) -> int:
    """``group_size`` if it divides ``in_features``, else the fallback the module doc describes."""
    if in_features % group_size == 0:
        return group_size
    for size in sorted(KERNEL_GROUP_SIZES, reverse=True):
        if size < group_size and in_features % size == 0:
            return size
    raise QuantizeError(
        f"{path}: in_features {in_features} is not a multiple of the group size {group_size} "
        f"nor of any smaller one of {', '.join(map(str, KERNEL_GROUP_SIZES))}; "
        "choose a --group-size that divides it"
    )


def _tied_head(model: nn.Module) -> nn.Module | None:
    """The output head when its weight is the input embedding matrix itself."""
    get_out = getattr(model, "get_output_embeddings", None)
    get_in = getattr(model, "get_input_embeddings", None)
    if get_out is None or get_in is None:
        return None
    head, embeddings = get_out(), get_in()
    if head is None or embeddings is None:
        return None
    return head if head.weight is embeddings.weight else None


def _head(model: nn.Module) -> nn.Module | None:
    get_out = getattr(model, "get_output_embeddings", None)
    return get_out() if get_out is not None else None


def plan_layers(model: nn.Module, method: str, group_size: int = 128) -> list[LayerPlan]:
    """The layers :func:`quantize_model` would swap, in module order, and how."""
    check_method(method)
    if method == "int4" and (group_size < 2 or group_size % 2):
        raise QuantizeError(f"--group-size must be an even number >= 2, got {group_size}")
    tied, head = _tied_head(model), _head(model)
    plans: list[LayerPlan] = []
    for path, module in model.named_modules():
        if type(module) is not nn.Linear or module is tied:
            continue
        layer_method = "int8" if module is head else method
        size = None
        if layer_method == "int4":
            size = int4_group_size(path, module.in_features, group_size)
        plans.append(
            LayerPlan(
                path=path,
                method=layer_method,
                in_features=module.in_features,
                out_features=module.out_features,
                bias=module.bias is not None,
                group_size=size,
            )
        )
    if not plans:
        raise QuantizeError("the model has no nn.Linear layer to quantize")
    return plans


def _replace(model: nn.Module, path: str, module: nn.Module) -> None:
    parent, _, child = path.rpartition(".")
    setattr(model.get_submodule(parent), child, module)


@torch.no_grad()
def quantize_model(
    model: nn.Module,
    method: str,
    group_size: int = 128,
    *,
    smooth: Mapping[str, torch.Tensor] | None = None,
    on_layer: Callable[[int, int], None] = lambda done, total: None,
) -> list[LayerPlan]:
    """Swap every planned ``nn.Linear`` of ``model`` for its quantized form, in place.

    ``smooth`` maps int8 layer paths to SmoothQuant factors (:func:`.smooth.smoothing`); layers
    without an entry are quantized as they are. Returns the plans (what
    :func:`mentor.quantize.io.save_quantized` records); ``on_layer(done, total)`` is called
    after each layer, for a progress bar."""
    smooth = smooth or {}
    plans = plan_layers(model, method, group_size)
    for i, plan in enumerate(plans):
        linear = model.get_submodule(plan.path)
        assert isinstance(linear, nn.Linear)
        quantized: nn.Module
        if plan.method == "int8":
            factors = smooth.get(plan.path)
            quantized = Int8Linear.from_linear(linear, factors)
            plans[i] = replace(plan, smoothed=factors is not None)
        else:
            assert plan.group_size is not None
            quantized = Int4Linear.from_linear(linear, plan.group_size)
        _replace(model, plan.path, quantized)
        on_layer(i + 1, len(plans))
    return plans


def empty_layer(plan: LayerPlan, device: torch.device | None = None) -> nn.Module:
    """The quantized module ``plan`` describes, with placeholder values, ready to be loaded."""
    if plan.method == "int8":
        return Int8Linear(plan.in_features, plan.out_features, plan.bias, plan.smoothed, device)
    if plan.method == "int4" and plan.group_size is not None:
        return Int4Linear(plan.in_features, plan.out_features, plan.bias, plan.group_size, device)
    raise QuantizeError(f"{plan.path}: unknown layer method {plan.method!r}")


def install_empty_layers(model: nn.Module, plans: list[LayerPlan]) -> None:
    """Put an empty quantized module at each planned path (the loading half of the swap)."""
    for plan in plans:
        try:
            current = model.get_submodule(plan.path)
        except AttributeError:
            raise QuantizeError(f"{plan.path}: no such layer in this model") from None
        if not isinstance(current, nn.Linear) or (
            current.in_features,
            current.out_features,
        ) != (plan.in_features, plan.out_features):
            raise QuantizeError(
                f"{plan.path}: the model has {current} there, the plan a "
                f"{plan.in_features} -> {plan.out_features} linear layer"
            )
        _replace(model, plan.path, empty_layer(plan, current.weight.device))


def quantized_layers(model: nn.Module) -> dict[str, QuantizedLinear]:
    return {p: m for p, m in model.named_modules() if isinstance(m, Int8Linear | Int4Linear)}


def pack_for_device(model: nn.Module, kernels: Mapping[str, str] | None = None) -> dict[str, int]:
    """Give every quantized layer its kernel for the device it is on (:mod:`.kernels`): the
    CPU's and tinygemm repack int4 layers, the others only switch. ``kernels`` maps a method to
    the kernel to force (``{"int8": "aten"}``); the rest take their device's default. Returns
    how many layers run each kernel, by ``method:kernel``.

    Do this after saving: packed int4 layers cannot be saved (see :class:`Int4Linear`)."""
    kernels = kernels or {}
    counts: dict[str, int] = {}
    for layer in quantized_layers(model).values():
        if isinstance(layer, Int4Linear):
            name = f"int4:{layer.pack_for_device(kernels.get('int4'))}"
        else:
            name = f"int8:{layer.use_kernel(kernels.get('int8'))}"
        counts[name] = counts.get(name, 0) + 1
    return counts
