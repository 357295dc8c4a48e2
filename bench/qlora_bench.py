"""QLoRA memory and speed on a Llama-2-7B-shaped model: NF4 base + our LoRA against bf16 LoRA.

The model (hidden 4096, 32 layers, 32 heads, intermediate 11008, vocabulary 32000; random
weights) is built on the ``meta`` device and materialised layer by layer: each linear layer is
drawn on the device and quantized to NF4 at once, so no dense bf16 copy of the whole model ever
exists for the QLoRA row. Both rows: LoRA r=16 on all seven projections, 1,024-token sequences,
batch 1, gradient checkpointing (non-reentrant), bf16 autocast; QLoRA with paged 8-bit AdamW
where bitsandbytes is installed on CUDA, LoRA with torch's AdamW.

Target (issue 19): QLoRA peak ``torch.cuda.max_memory_allocated`` <= 12 GB (an RTX 4070), with
tokens/s beside bf16 LoRA. ``tiny=True`` runs a small shape (CPU-sized) through the same code.

Run: ``python bench/qlora_bench.py [--device cuda] [--tiny] [--steps 3]``; from the GPU check:
``from bench.qlora_bench import qlora_rows; rows = qlora_rows("cuda", tiny=False)``.
"""

from __future__ import annotations

import argparse
import gc
import time
from typing import Any

import torch
from torch import nn

TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
LLAMA2_7B = {
    "hidden_size": 4096,
    "num_hidden_layers": 32,
    "num_attention_heads": 32,
    "num_key_value_heads": 32,
    "intermediate_size": 11008,
    "vocab_size": 32000,
}
TINY = {
    "hidden_size": 128,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 4,
    "intermediate_size": 344,
    "vocab_size": 512,
}
MEMORY_TARGET_GB = 12.0


def build(shape: dict[str, int], device: torch.device, quantize: bool) -> Any:
    """The model with random weights on ``device``: linear layers in NF4 (``quantize``) or bf16,
    everything else bf16; built on ``meta`` and filled one module at a time."""
    from transformers import LlamaConfig, LlamaForCausalLM

    from mentor.train.nf4 import NF4Linear, quantize_nf4

    config = LlamaConfig(**shape, max_position_embeddings=4096, tie_word_embeddings=False)
    with torch.device("meta"):
        model = LlamaForCausalLM(config)
    generator = torch.Generator(device=device).manual_seed(0)
    for path, module in list(model.named_modules()):
        if isinstance(module, nn.Linear) and path.rsplit(".", 1)[-1] in TARGETS:
            weight = torch.empty(module.out_features, module.in_features, device=device)
            weight = weight.normal_(0, 0.02, generator=generator).to(torch.bfloat16)
            if quantize:
                new: nn.Module = NF4Linear(quantize_nf4(weight), None, _backend(device))
            else:
                new = nn.Linear(module.in_features, module.out_features, bias=False, device="meta")
                new.weight = nn.Parameter(weight, requires_grad=False)
            del weight
            parent, _, child = path.rpartition(".")
            setattr(model.get_submodule(parent), child, new)
        elif any(t.is_meta for t in module.parameters(recurse=False)):
            module.to_empty(device=device, recurse=False)
            for name, param in module.named_parameters(recurse=False):
                with torch.no_grad():
                    if "norm" in type(module).__name__.lower():
                        param.fill_(1.0)
                    else:
                        param.normal_(0, 0.02, generator=generator)
                    setattr(module, name, nn.Parameter(param.to(torch.bfloat16)))
    rotary = model.model.rotary_emb
    with torch.device(device):
        model.model.rotary_emb = type(rotary)(config)
    model.requires_grad_(False)
    return model


def _backend(device: torch.device) -> Any:
    from mentor.train.nf4 import default_backend

    return default_backend(device)


def _row(method: str, shape: dict[str, int], device: torch.device, steps: int, seq: int) -> dict:
    from mentor.train.checkpointing import enable_checkpointing
    from mentor.train.lora import LoRAConfig, add_lora, mark_trainable
    from mentor.train.nf4 import nf4_bytes
    from mentor.train.trainer import TrainSettings, build_optimizer

    cuda = device.type == "cuda"
    if cuda:
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
    model = build(shape, device, quantize=method == "qlora")
    add_lora(model, LoRAConfig(r=16, alpha=32, dropout=0.05, targets=TARGETS))
    mark_trainable(model, "default")
    model.config.use_cache = False  # training: no KV cache (checkpointing would say so)
    enable_checkpointing(model)
    model.train()
    paged = method == "qlora" and cuda and _backend(device) == "bitsandbytes"
    settings = TrainSettings(lr=1e-4, optimizer="paged_adamw_8bit" if paged else "adamw")
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = build_optimizer(params, settings, device)
    dense_weights = sum(p.numel() * p.element_size() for p in model.parameters())
    base_gb = (nf4_bytes(model) + dense_weights) / 2**30
    ids = torch.randint(
        0, shape["vocab_size"], (1, seq), generator=torch.Generator().manual_seed(1)
    ).to(device)
    losses, seconds = [], 0.0
    for step in range(steps + 1):  # step 0 warms up (allocator, kernels) and is not timed
        if cuda:
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        with torch.autocast(device.type, dtype=torch.bfloat16):
            loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if cuda:
            torch.cuda.synchronize(device)
        if step:
            seconds += time.perf_counter() - start
        losses.append(float(loss.detach()))
    peak = torch.cuda.max_memory_allocated(device) / 2**30 if cuda else None
    del model, optimizer, params
    gc.collect()
    return {
        "method": method,
        "shape": "tiny" if shape is TINY else "llama-2-7b",
        "seq_len": seq,
        "optimizer": settings.optimizer,
        "base_weights_gb": round(base_gb, 3),
        "peak_memory_gb": None if peak is None else round(peak, 2),
        "tokens_per_s": round(steps * seq / seconds, 1),
        "loss_first": round(losses[1], 4),
        "loss_last": round(losses[-1], 4),
    }


def qlora_rows(device: str, tiny: bool, steps: int = 3) -> list[dict[str, Any]]:
    """QLoRA (NF4 base) and bf16 LoRA rows, same model, sequence and adapter; the QLoRA row
    carries ``memory_ok`` (peak <= 12 GB; None off CUDA) and ``speed_vs_lora``."""
    dev = torch.device(device)
    shape = TINY if tiny else LLAMA2_7B
    seq = 128 if tiny else 1024
    rows = [_row(method, shape, dev, steps, seq) for method in ("qlora", "lora")]
    q, lora = rows
    q["speed_vs_lora"] = round(q["tokens_per_s"] / lora["tokens_per_s"], 3)
    peak = q["peak_memory_gb"]
    q["memory_ok"] = None if peak is None else peak <= MEMORY_TARGET_GB
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--tiny", action="store_true", help="a small shape (runs on a CPU)")
    parser.add_argument("--steps", type=int, default=3)
    args = parser.parse_args()
    from rich.console import Console
    from rich.table import Table

    rows = qlora_rows(args.device, args.tiny, args.steps)
    table = Table(title=f"QLoRA vs bf16 LoRA ({rows[0]['shape']}, {args.device})")
    for key in rows[0]:
        table.add_column(key)
    table.add_column("target")
    for row in rows:
        target = f"peak <= {MEMORY_TARGET_GB:g} GB" if row["method"] == "qlora" else "reference"
        table.add_row(*(str(row.get(k)) for k in rows[0]), target)
    Console(width=220).print(table)


if __name__ == "__main__":
    main()
