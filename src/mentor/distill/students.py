"""Building a student: a smaller config of the teacher's architecture, or the teacher with only
every k-th layer kept (the DistilBERT initialisation, Sanh et al., 2019), with its size reported.

Keeping layers copies the embeddings, the kept blocks, the final norm and the head, so the student
starts from the teacher's own weights instead of noise; the layer stack is found by architecture
(decoder ``model.layers``, encoder ``encoder.layer``).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any, cast

from torch import nn


@dataclass(frozen=True)
class StudentSize:
    """How a student compares with its teacher."""

    teacher_params: int
    student_params: int
    teacher_layers: int
    student_layers: int
    kept_layers: tuple[int, ...] | None  # teacher layer indices, for layer-dropped students

    @property
    def ratio(self) -> float:
        return self.student_params / self.teacher_params

    def __str__(self) -> str:
        kept = f", teacher layers {list(self.kept_layers)}" if self.kept_layers else ""
        return (
            f"student {self.student_params / 1e6:,.1f}M params, {self.student_layers} layers; "
            f"teacher {self.teacher_params / 1e6:,.1f}M, {self.teacher_layers} layers "
            f"({self.ratio:.1%} of the teacher{kept})"
        )


def count_params(model: nn.Module) -> int:
    """Parameters of the model itself: tied weights once, LoRA adapters not counted."""
    unique = {id(p): p for n, p in model.named_parameters() if "lora_" not in n}
    return sum(p.numel() for p in unique.values())


def _stack(model: nn.Module) -> tuple[str, nn.ModuleList]:
    """The block stack: the outermost ``ModuleList`` with ``config.num_hidden_layers`` entries
    (``model.layers`` in decoders, ``encoder.layer`` in BERT-style encoders)."""
    n_layers = getattr(getattr(model, "config", None), "num_hidden_layers", None)
    if n_layers is None:
        raise ValueError("the model's config has no num_hidden_layers")
    for name, module in model.named_modules():  # outermost first
        if isinstance(module, nn.ModuleList) and len(module) == n_layers:
            return name, module
    raise ValueError(f"no stack of {n_layers} blocks found in this {type(model).__name__}")


def layers_to_keep(n_layers: int, every: int) -> list[int]:
    """Every ``every``-th layer, always ending on the last (its output feeds the head).

    12 layers, every 2 -> [1, 3, 5, 7, 9, 11]; 30 layers, every 3 -> [2, 5, ..., 29]."""
    if every < 1:
        raise ValueError(f"keep every k-th layer needs k >= 1, got {every}")
    if every > n_layers:
        raise ValueError(f"cannot keep every {every}th of {n_layers} layers")
    return list(range(n_layers - 1, -1, -every))[::-1]


def keep_every_kth_layer(teacher: nn.Module, every: int) -> tuple[nn.Module, StudentSize]:
    """A copy of ``teacher`` with only every ``every``-th block (teacher left untouched)."""
    path, stack = _stack(teacher)
    kept = layers_to_keep(len(stack), every)
    student = copy.deepcopy(teacher)
    new_stack = nn.ModuleList([copy.deepcopy(stack[i]) for i in kept])
    parent_path, _, leaf = path.rpartition(".")
    parent = student.get_submodule(parent_path) if parent_path else student
    setattr(parent, leaf, new_stack)
    config: Any = student.config
    config.num_hidden_layers = len(kept)
    for new_index, block in enumerate(new_stack):
        _renumber(block, new_index)
    if getattr(config, "layer_types", None) is not None:  # per-layer attention kinds (qwen2)
        config.layer_types = [config.layer_types[i] for i in kept]
    size = StudentSize(
        count_params(teacher), count_params(student), len(stack), len(kept), tuple(kept)
    )
    return student, size


def _renumber(block: nn.Module, index: int) -> None:
    """Blocks that know their index (for the KV cache) get their new one."""
    for module in block.modules():
        if hasattr(module, "layer_idx"):
            setattr(module, "layer_idx", index)  # noqa: B010 (typed Module attribute)


def smaller_config(config: Any, **overrides: Any) -> Any:
    """A copy of a transformers ``config`` with ``overrides`` applied, each checked to exist."""
    config = copy.deepcopy(config)
    for key, value in overrides.items():
        if not hasattr(config, key):
            raise ValueError(f"{type(config).__name__} has no field {key!r}")
        setattr(config, key, value)
    if getattr(config, "layer_types", None) is not None:  # one attention kind per layer
        config.layer_types = config.layer_types[:1] * config.num_hidden_layers
    return config


def from_config(teacher: nn.Module, **overrides: Any) -> tuple[nn.Module, StudentSize]:
    """A randomly initialised model of the teacher's architecture with config ``overrides``
    (for example ``num_hidden_layers=4, hidden_size=256``), on the teacher's tokenizer."""
    from transformers import AutoModel, AutoModelForCausalLM

    config = smaller_config(teacher.config, **overrides)
    is_causal = hasattr(teacher, "generate") and hasattr(teacher, "lm_head")
    factory = AutoModelForCausalLM if is_causal else AutoModel
    student = cast(nn.Module, factory.from_config(config))  # type: ignore[no-untyped-call]
    layers = getattr(teacher.config, "num_hidden_layers", 0)
    size = StudentSize(
        count_params(teacher),
        count_params(student),
        int(layers),
        int(config.num_hidden_layers),
        None,
    )
    return student, size
