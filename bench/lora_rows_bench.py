"""Per-row adapters benchmark: one decode step of a batch whose rows run different LoRA adapters.

S-LoRA/Punica serve many adapters on one base by sharing the base forward across rows and adding
each row's low-rank update on top (:func:`mentor.train.lora.use_row_adapters`). This times one
decode step (batch 12, one new token per row, 32 tokens already in the KV cache) of a randomly
initialised SmolLM2-135M (the packaged model's shape), r=16 adapters on every projection, and
prints its throughput beside the same batch with one adapter for every row, in one run:

- 3 adapters mixed, stacked (the default: one concatenated A and B, a per-row mask) and grouped
  (each adapter's rows gathered, updated and added back; what many adapters of high rank use);
- the way without per-row adapters: one forward per adapter over its 4 rows.

Reference: mixed 3 adapters at >= 0.8x the throughput of 1 adapter.

Run: ``python bench/lora_rows_bench.py [--device cpu|cuda] [--batch 12] [--steps 10]`` (on a CPU
shared with other work, ``OMP_NUM_THREADS=1`` steadies the figures).
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager as ContextManager
from contextlib import contextmanager

import torch
from rich.console import Console
from rich.table import Table
from transformers import DynamicCache, LlamaConfig, LlamaForCausalLM

from mentor.train import lora
from mentor.train.lora import LoRAConfig, add_lora, lora_layers, use_adapter, use_row_adapters

SMOLLM2_135M = {
    "hidden_size": 576, "num_hidden_layers": 30, "num_attention_heads": 9,
    "num_key_value_heads": 3, "intermediate_size": 1536, "vocab_size": 49152,
    "tie_word_embeddings": True, "rope_theta": 100000.0, "max_position_embeddings": 8192,
    "rms_norm_eps": 1e-5,
}  # fmt: skip
ADAPTERS = ("a0", "a1", "a2")
PROMPT = 32


def build(device: str) -> LlamaForCausalLM:
    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(**SMOLLM2_135M))
    for name in ADAPTERS:
        add_lora(model, LoRAConfig(r=16, alpha=32, dropout=0.0), name)
    with torch.no_grad():  # B = 0 would let a broken update pass unseen; time real updates
        for layer in lora_layers(model).values():
            for b in layer.lora_B.values():
                b.weight.normal_(0, 0.01)
    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    return model.to(device, dtype).eval()


def decode_step(
    model: LlamaForCausalLM, rows: int, device: str, adapters: Callable[[], ContextManager[None]]
) -> Callable[[], None]:
    """One decode step under ``adapters()`` (entered per step, as an engine does), over a prompt
    prefilled once; the step rolls its token back out of the cache afterwards."""
    gen = torch.Generator().manual_seed(1)
    prompt = torch.randint(5, 49000, (rows, PROMPT), generator=gen).to(device)
    token = torch.randint(5, 49000, (rows, 1), generator=gen).to(device)
    cache = DynamicCache()
    with adapters():
        model(input_ids=prompt, cache=cache, use_cache=True)

    def step() -> None:
        with adapters():
            model(input_ids=token, cache=cache, use_cache=True)
        cache.crop(-1)  # transformers 5: a negative count of tokens to drop

    return step


def timed(run: Callable[[], None], device: str, steps: int) -> float:
    if device == "cuda":
        torch.cuda.synchronize()
    started = time.perf_counter()
    for _ in range(steps):
        run()
    if device == "cuda":
        torch.cuda.synchronize()
    return (time.perf_counter() - started) / steps


@contextmanager
def stack_ranks(ranks: int) -> Iterator[None]:
    saved, lora._STACK_RANKS = lora._STACK_RANKS, ranks
    try:
        yield
    finally:
        lora._STACK_RANKS = saved


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--batch", type=int, default=12, help="rows (a multiple of 3)")
    parser.add_argument("--steps", type=int, default=10, help="decode steps per timing")
    parser.add_argument("--rounds", type=int, default=5, help="timings per variant (best kept)")
    args = parser.parse_args()
    model = build(args.device)
    rows = args.batch
    mixed = [ADAPTERS[i % 3] for i in range(rows)]

    @contextmanager
    def grouped() -> Iterator[None]:
        with stack_ranks(0), use_row_adapters(model, mixed):
            yield

    with torch.inference_mode():
        parts = [
            decode_step(model, rows // 3, args.device, lambda name=name: use_adapter(model, name))
            for name in ADAPTERS
        ]

        def one_forward_each() -> None:
            for part in parts:
                part()

        variants = {
            "1 adapter, every row": decode_step(
                model, rows, args.device, lambda: use_adapter(model, "a0")
            ),
            "3 adapters mixed, stacked": decode_step(
                model, rows, args.device, lambda: use_row_adapters(model, mixed)
            ),
            "3 adapters mixed, grouped": decode_step(model, rows, args.device, grouped),
            "3 adapters, one forward each": one_forward_each,
        }
        timings = dict.fromkeys(variants, float("inf"))
        for run in variants.values():
            run()  # warm-up: stacked weights, allocator
        for _ in range(args.rounds):  # interleaved, best of each: load drifts on a shared machine
            for label, run in variants.items():
                timings[label] = min(timings[label], timed(run, args.device, args.steps))
    one = timings["1 adapter, every row"]
    table = Table(title=f"SmolLM2-135M shape, decode step, batch {rows}, r=16, {args.device}")
    for column in ("", "ms / step", "tokens/s", "throughput vs 1 adapter"):
        table.add_column(column)
    for label, seconds in timings.items():
        table.add_row(
            label, f"{seconds * 1e3:.1f}", f"{rows / seconds:.0f}", f"{one / seconds:.2f}"
        )
    Console().print(table)
    Console().print("reference: 3 adapters mixed >= 0.80 of 1 adapter")


if __name__ == "__main__":
    main()
