"""Where a LoRA training step's time goes, beside full fine-tuning's: a profile for a GPU.

The loop bench (``bench/finetune_bench.py --part loop``) says how fast; this says why. Each row
trains a SmolLM2-135M-shaped model (random weights, bf16 on CUDA, fp32 on CPU) for a few steps on
random tokens, then profiles three steps with ``torch.profiler``: tokens/s, the device's busy
time per step (the sum of its kernels' times), the host's time per step, and the kernels that
took most device time, grouped as matrix products, elementwise/copies, and the rest. A step whose
host time is above its device busy time is bound by Python and kernel launches, not by the GPU.

Rows: full fine-tuning; mentor LoRA r=16 on the seven projections with dropout 0.05 and 0.

Run: ``PYTHONPATH=src python bench/lora_profile.py --device cuda`` (``--tiny`` for a CPU test).
"""

from __future__ import annotations

import argparse
import re
import time
from collections import defaultdict
from typing import Any

import torch

TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
_MATMUL = re.compile(r"gemm|gemv|sm90|sm80|cutlass|xmma|matmul|addmm|::mm|bmm|linear", re.I)
_ELEMENTWISE = re.compile(r"elementwise|vectorized|copy|fill|bernoulli|dropout|cast|mul|add", re.I)


def _model(tiny: bool, device: str) -> Any:
    from transformers import AutoModelForCausalLM, LlamaConfig

    shape = (
        {"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2}
        if tiny
        else {"hidden_size": 576, "intermediate_size": 1536, "num_hidden_layers": 30}
    )
    config = LlamaConfig(
        vocab_size=512 if tiny else 49152,
        num_attention_heads=4 if tiny else 9,
        num_key_value_heads=2 if tiny else 3,
        max_position_embeddings=2048,
        tie_word_embeddings=True,
        **shape,
    )
    torch.manual_seed(0)
    dtype = torch.bfloat16 if device.startswith("cuda") else torch.float32
    return AutoModelForCausalLM.from_config(config, dtype=dtype).to(device).train()


def _build(row: str, tiny: bool, device: str) -> tuple[Any, list[torch.nn.Parameter]]:
    from mentor.train.lora import LoRAConfig, add_lora, mark_trainable

    model = _model(tiny, device)
    if row == "full":
        model.requires_grad_(True)
    else:
        dropout = 0.0 if row == "lora-nodrop" else 0.05
        add_lora(model, LoRAConfig(r=16, alpha=32, dropout=dropout, targets=TARGETS))
        mark_trainable(model, "default")
        model.to(next(model.parameters()).dtype)  # adapters in the model's dtype, as the bench
    return model, [p for p in model.parameters() if p.requires_grad]


def _kind(name: str) -> str:
    if _MATMUL.search(name):
        return "matmul"
    if _ELEMENTWISE.search(name):
        return "elementwise"
    return "other"


def profile_row(row: str, device: str, tiny: bool, batch: int, seq_len: int) -> dict[str, Any]:
    """Train ``row`` two steps, then profile three: speed, busy times and the top kernels."""
    from torch.profiler import ProfilerActivity, profile

    cuda = device.startswith("cuda")
    model, params = _build(row, tiny, device)
    optimizer = torch.optim.AdamW(params, lr=1e-4)
    vocab = model.config.vocab_size
    tokens = torch.randint(0, vocab, (batch, seq_len), generator=torch.Generator().manual_seed(0))
    tokens = tokens.to(device)

    def step() -> None:
        model(input_ids=tokens, labels=tokens).loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    def sync() -> None:
        if cuda:
            torch.cuda.synchronize()

    for _ in range(2):
        step()
    sync()
    steps = 3
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    started = time.perf_counter()
    with profile(activities=activities) as prof:
        for _ in range(steps):
            step()
        sync()
    wall = (time.perf_counter() - started) / steps
    by_kernel: dict[str, float] = defaultdict(float)
    kinds: dict[str, float] = defaultdict(float)
    for event in prof.key_averages():
        us = float(event.self_device_time_total if cuda else event.self_cpu_time_total)
        if us <= 0 or (cuda and event.device_type != torch.autograd.DeviceType.CUDA):
            continue
        by_kernel[event.key] += us
        kinds[_kind(event.key)] += us
    busy_ms = sum(by_kernel.values()) / 1e3 / steps
    top = sorted(by_kernel.items(), key=lambda kv: -kv[1])[:8]
    return {
        "row": row,
        "tokens_per_s": batch * seq_len / wall,
        "step_ms": wall * 1e3,
        "device_busy_ms": busy_ms,
        "kinds_ms": {k: v / 1e3 / steps for k, v in kinds.items()},
        "top": [(name[:70], us / 1e3 / steps) for name, us in top],
    }


def profile_rows(device: str, tiny: bool) -> list[dict[str, Any]]:
    """The rows of the GPU check: full fine-tuning, LoRA with and without dropout."""
    batch, seq_len = (2, 32) if tiny else (16, 1024)
    rows = []
    for row in ("full", "lora", "lora-nodrop"):
        rows.append(profile_row(row, device, tiny, batch, seq_len))
        if device.startswith("cuda"):
            torch.cuda.empty_cache()
    return rows


def print_rows(rows: list[dict[str, Any]]) -> None:
    full = rows[0]["tokens_per_s"]
    print(f"{'row':<12} {'tokens/s':>10} {'vs full':>8} {'step ms':>8} {'device ms':>9}  by kind")
    for r in rows:
        kinds = "  ".join(f"{k} {v:.1f}" for k, v in sorted(r["kinds_ms"].items()))
        print(
            f"{r['row']:<12} {r['tokens_per_s']:>10,.0f} {r['tokens_per_s'] / full:>7.2f}x "
            f"{r['step_ms']:>8.1f} {r['device_busy_ms']:>9.1f}  {kinds}"
        )
    for r in rows:
        print(f"top kernels, {r['row']} (ms per step):")
        for name, ms in r["top"]:
            print(f"  {ms:8.2f}  {name}")
    print("target (issue 19): LoRA with dropout 0.05 >= 0.90x full fine-tuning's tokens/s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--tiny", action="store_true", help="tiny shapes (a CPU test)")
    args = parser.parse_args()
    print_rows(profile_rows(args.device, args.tiny))


if __name__ == "__main__":
    main()
