"""How much memory a training step takes, and how much the device has free: the numbers behind
``gradient_checkpointing: auto``.

    peak ≈ weights + grads + AdamW states              (each the size of the trainable parameters)
         + layers x tokens x per-layer activations     (everything autograd keeps for backward)
         + logit positions x vocab x 3 fp32            (log-softmax output, its grad, the logits')

the peak falling at the start of backward, when every activation is still alive. With
checkpointing a block keeps only its input (``hidden`` per token) and recomputes the rest in
backward, so the activations are ``layers x tokens x hidden``, and the transient on top is the
larger of the loss's tensors (start of backward) and one block's activations plus its backward's
own temporaries (while it is recomputed, the loss's tensors gone by then), measured at about
``4i`` per token: the MLP's gradients, and LoRA's dropped inputs rebuilt in backward.

Per-layer activations of a Llama-style block, counted from the tensors autograd saves (SDPA or
flash attention, which keep no (T x T) scores)::

    RMSNorm x 2        2 x 2h   input and normalised output
    attention          2h + 3kv  roped q, the output before o_proj; roped k, v (and their copies)
    MLP                4i        gate, silu(gate), up, silu(gate)·up (the down_proj input)

i.e. ``8h + 3kv + 4i`` elements per token (h hidden, kv the key/value width, i the MLP width),
which the test in ``tests/train/test_memory.py`` checks against a measured peak. It is an upper
bound where the loss has targets on only some positions (assistant-only labels).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

_ADAMW_STATES = 2
"""exp_avg and exp_avg_sq, each the size of the parameter."""
_LOSS_COPIES = 3
"""Vocabulary-wide fp32 tensors alive at once at the start of backward (see the module doc)."""
_HEADROOM = 0.9
"""Share of the free memory a run may plan to use: allocators fragment, and kernels need some."""


@dataclass(frozen=True)
class BlockShape:
    """What sizes a transformer block's activations: read from a Hugging Face config."""

    layers: int
    hidden: int
    kv: int
    intermediate: int
    vocab: int

    @classmethod
    def from_config(cls, config: Any) -> BlockShape:
        """A decoder's (or encoder's) config: ``num_hidden_layers``, ``hidden_size``, ..."""
        hidden = int(config.hidden_size)
        heads = int(getattr(config, "num_attention_heads", 1) or 1)
        head_dim = int(getattr(config, "head_dim", None) or hidden // heads)
        kv_heads = int(getattr(config, "num_key_value_heads", None) or heads)
        return cls(
            layers=int(config.num_hidden_layers),
            hidden=hidden,
            kv=kv_heads * head_dim,
            intermediate=int(getattr(config, "intermediate_size", None) or 4 * hidden),
            vocab=int(getattr(config, "vocab_size", 0) or 0),
        )

    def activations_per_token(self) -> int:
        """Elements one block keeps for backward per token (module doc: 8h + 3kv + 4i)."""
        return 8 * self.hidden + 3 * self.kv + 4 * self.intermediate


@dataclass(frozen=True)
class MemoryEstimate:
    """Bytes of one training step, by what holds them."""

    weights: int
    grads: int
    optimizer: int
    activations: int
    """Kept from forward to backward."""
    transient: int
    """The largest short-lived set on top: the loss's vocabulary-wide tensors, or (with
    checkpointing) one block's recomputed activations."""
    checkpointing: bool

    @property
    def total(self) -> int:
        return self.weights + self.grads + self.optimizer + self.activations + self.transient


def estimate_training_memory(
    shape: BlockShape,
    *,
    weight_bytes: int,
    trainable_bytes: int,
    tokens: int,
    logit_positions: int,
    activation_bytes: int,
    checkpointing: bool,
) -> MemoryEstimate:
    """Peak bytes of a step over ``tokens`` (batch x sequence length) positions.

    ``weight_bytes``: every parameter as held; ``trainable_bytes``: those that train (their
    grads and AdamW states are the same size each, as PyTorch keeps them in the parameter's
    dtype); ``logit_positions``: positions whose vocabulary-wide logits exist at once (0 for a
    classifier); ``activation_bytes``: bytes per activation element (2 under bf16, else 4)."""
    per_layer = shape.activations_per_token() * tokens * activation_bytes
    loss = _LOSS_COPIES * logit_positions * shape.vocab * 4
    if checkpointing:  # every block's input; one block at a time recomputed in backward
        activations = shape.layers * shape.hidden * tokens * activation_bytes
        backward = 4 * shape.intermediate * tokens * activation_bytes
        transient = max(loss, per_layer + backward)
    else:
        activations, transient = shape.layers * per_layer, loss
    return MemoryEstimate(
        weights=weight_bytes,
        grads=trainable_bytes,
        optimizer=_ADAMW_STATES * trainable_bytes,
        activations=activations,
        transient=transient,
        checkpointing=checkpointing,
    )


def estimate_for_model(
    model: nn.Module,
    config: Any,
    *,
    tokens: int,
    logit_positions: int,
    bf16: bool,
    checkpointing: bool,
) -> MemoryEstimate:
    """:func:`estimate_training_memory` for ``model`` as it is now (adapters added, trainable
    parameters marked), with the shape read from ``config``."""
    weight_bytes = trainable_bytes = 0
    for p in model.parameters():
        size = p.numel() * p.element_size()
        weight_bytes += size
        trainable_bytes += size if p.requires_grad else 0
    return estimate_training_memory(
        BlockShape.from_config(config),
        weight_bytes=weight_bytes,
        trainable_bytes=trainable_bytes,
        tokens=tokens,
        logit_positions=logit_positions,
        activation_bytes=2 if bf16 else 4,
        checkpointing=checkpointing,
    )


def free_memory(device: torch.device) -> int:
    """Bytes the device can still give: free CUDA memory, or the host's available memory."""
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(free)
    import psutil

    return int(psutil.virtual_memory().available)


def fits(estimate: MemoryEstimate, free: int) -> bool:
    """Whether a step fits: what it still has to allocate (all of it less the weights, loaded
    already) within ``_HEADROOM`` of the ``free`` bytes."""
    return estimate.total - estimate.weights <= _HEADROOM * free
