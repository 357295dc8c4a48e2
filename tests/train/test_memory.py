"""The memory estimate of a training step: the formula by hand, and against the peak of a real
step measured from the allocator's own events."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.profiler import ProfilerActivity, profile

from mentor.testing import tiny_llama
from mentor.train.checkpointing import enable_checkpointing
from mentor.train.lora import LoRAConfig, add_lora, mark_trainable
from mentor.train.memory import BlockShape, estimate_for_model, estimate_training_memory, fits
from mentor.train.objectives import CausalLMLoss

SMOLLM2_135M = BlockShape(layers=30, hidden=576, kv=192, intermediate=1536, vocab=49152)


def test_block_shape_from_a_config() -> None:
    model, _ = tiny_llama(hidden_size=64, num_heads=4, num_kv_heads=2, intermediate_size=128)
    shape = BlockShape.from_config(model.config)
    assert shape == BlockShape(layers=2, hidden=64, kv=32, intermediate=128, vocab=len(_))
    assert shape.activations_per_token() == 8 * 64 + 3 * 32 + 4 * 128


def test_the_formula_by_hand() -> None:
    """SmolLM2-135M, fp32, 1 x 1024 tokens, LoRA with 4.9M trainable parameters."""
    plain = estimate_training_memory(
        SMOLLM2_135M,
        weight_bytes=540_000_000,
        trainable_bytes=19_600_000,
        tokens=1024,
        logit_positions=1024,
        activation_bytes=4,
        checkpointing=False,
    )
    per_layer = (8 * 576 + 3 * 192 + 4 * 1536) * 1024 * 4  # 46.4 MB
    loss = 3 * 1024 * 49152 * 4  # 604 MB
    assert plain.activations == 30 * per_layer
    assert plain.transient == loss
    assert plain.optimizer == 2 * 19_600_000
    assert plain.total == 540_000_000 + 3 * 19_600_000 + 30 * per_layer + loss
    ckpt = estimate_training_memory(
        SMOLLM2_135M,
        weight_bytes=540_000_000,
        trainable_bytes=19_600_000,
        tokens=1024,
        logit_positions=1024,
        activation_bytes=4,
        checkpointing=True,
    )
    assert ckpt.activations == 30 * 576 * 1024 * 4
    assert ckpt.transient == loss  # larger than one block plus its backward
    assert ckpt.total < 0.5 * plain.total
    # without logits (a classifier) the recomputed block is the transient
    encoder = estimate_training_memory(
        SMOLLM2_135M,
        weight_bytes=0,
        trainable_bytes=0,
        tokens=1024,
        logit_positions=0,
        activation_bytes=2,
        checkpointing=True,
    )
    assert encoder.transient == per_layer // 2 + 4 * 1536 * 1024 * 2


def test_fits_counts_the_loaded_weights_as_spent() -> None:
    plain = estimate_training_memory(
        SMOLLM2_135M,
        weight_bytes=10**9,
        trainable_bytes=0,
        tokens=1,
        logit_positions=0,
        activation_bytes=4,
        checkpointing=False,
    )
    rest = plain.total - plain.weights
    assert fits(plain, free=int(rest / 0.9) + 1)
    assert not fits(plain, free=int(rest / 0.9) - 1)


def _measured_peak(model: nn.Module, batch: int, seq_len: int) -> int:
    """Peak bytes of one optimizer step (weights and AdamW states included), from the CPU
    allocator's own alloc/free events: exact for tensors, blind to allocator caching."""
    objective = CausalLMLoss(model)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params)
    ids = torch.randint(0, model.config.vocab_size, (batch, seq_len))  # type: ignore[union-attr]

    def step() -> None:
        objective(input_ids=ids, labels=ids).backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    step()  # the optimizer's states now exist, as in every later step
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        step()
    events = prof.profiler.kineto_results.events()  # type: ignore[union-attr]
    allocations = sorted((e.start_ns(), e.nbytes()) for e in events if e.name() == "[memory]")
    live = peak = 0
    for _, nbytes in allocations:
        live += nbytes
        peak = max(peak, live)
    held = sum(p.numel() * p.element_size() for p in model.parameters())
    return peak + held + 2 * sum(p.numel() * p.element_size() for p in params)


@pytest.mark.parametrize("method", ["lora", "full"])
@pytest.mark.parametrize("checkpointing", [False, True])
@pytest.mark.parametrize(
    ("batch", "seq_len", "hidden", "intermediate"), [(2, 256, 64, 128), (4, 128, 64, 512)]
)
def test_estimate_against_a_measured_peak(
    method: str, checkpointing: bool, batch: int, seq_len: int, hidden: int, intermediate: int
) -> None:
    """Within 20%: the formula leaves out small per-op temporaries (norm statistics, rope
    tables, attention's own scratch) and the exact overlap of what backward frees and allocates;
    checkpointed full fine-tuning lands high (its backward needs fewer temporaries than LoRA's,
    which rebuilds dropped inputs). Measured: -7% to +19% over these shapes; the decision it
    feeds keeps 10% of the free memory aside."""
    model, _ = tiny_llama(
        hidden_size=hidden,
        intermediate_size=intermediate,
        num_layers=4,
        max_position_embeddings=seq_len,
    )
    model.train()
    torch.manual_seed(0)
    if method == "lora":
        add_lora(model, LoRAConfig(r=8, dropout=0.05))
        mark_trainable(model, "default")
    else:
        model.requires_grad_(True)
    if checkpointing:
        enable_checkpointing(model)
    measured = _measured_peak(model, batch, seq_len)
    estimate = estimate_for_model(
        model,
        model.config,
        tokens=batch * seq_len,
        logit_positions=batch * seq_len,
        bf16=False,
        checkpointing=checkpointing,
    )
    assert 0.8 < estimate.total / measured < 1.2, (estimate, measured)
