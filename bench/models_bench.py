"""Model hub benchmark: load time after a pull, and which dtype is fastest for what on this CPU.

Prints one table beside the reference figures of ../shared/MODELS.md (measured on this kind of
machine). Everything is measured in one run, as ratios where the machine's noise matters.

Run: ``python bench/models_bench.py [--model smollm2-135m-instruct]``.
"""

from __future__ import annotations

import argparse
import time

import torch
from rich.console import Console
from rich.table import Table

from mentor.models import REGISTRY, load_causal_lm, load_tokenizer, pull
from mentor.models.sources import PackagedFile, ensure_dist
from mentor.utils.logs import quiet_libraries


def timed(fn: object) -> float:
    started = time.perf_counter()
    fn()  # type: ignore[operator]
    return time.perf_counter() - started


def decode_rate(model: torch.nn.Module, ids: dict[str, torch.Tensor], tokens: int) -> float:
    with torch.inference_mode():
        model.generate(**ids, max_new_tokens=4, do_sample=False)  # type: ignore[operator]
        seconds = timed(
            lambda: model.generate(  # type: ignore[operator]
                **ids, max_new_tokens=tokens, min_new_tokens=tokens, do_sample=False
            )
        )
    return tokens / seconds


def forward_rate(model: torch.nn.Module, batch: int, length: int) -> float:
    x = torch.randint(0, 1000, (batch, length))
    with torch.inference_mode():
        model(x)
        seconds = min(timed(lambda: model(x)) for _ in range(3))
    return batch * length / seconds


def main() -> None:
    parser = argparse.ArgumentParser(description="model load and dtype benchmark")
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--tokens", type=int, default=48, help="tokens to decode per timing")
    args = parser.parse_args()
    quiet_libraries()
    spec = REGISTRY[args.model]
    pull(args.model)
    rows: list[tuple[str, str, str]] = []

    if isinstance(spec.packaged, PackagedFile):
        from transformers import AutoModelForCausalLM

        gguf = ensure_dist(spec.packaged.dist) / spec.packaged.relpath
        from_gguf = timed(
            lambda: AutoModelForCausalLM.from_pretrained(
                str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32
            )
        )
        from_cache = timed(lambda: load_causal_lm(args.model, dtype="float32", device="cpu"))
        rows.append(("load from GGUF (s)", f"{from_gguf:.1f}", "13 (SmolLM2)"))
        rows.append(("load from mentor cache (s)", f"{from_cache:.1f}", "0.4-4"))
        rows.append(("speed-up of the cached load", f"{from_gguf / from_cache:.1f}x", "-"))

    tokenizer = load_tokenizer(args.model)
    ids = tokenizer.apply_chat_template(
        [{"role": "user", "content": "Write a short story about a lighthouse."}],
        add_generation_prompt=True,
        return_tensors="pt",
        return_dict=True,
    )
    rates = {}
    for dtype in (torch.float32, torch.bfloat16):
        model = load_causal_lm(args.model, dtype=dtype, device="cpu")
        rates[dtype] = (decode_rate(model, ids, args.tokens), forward_rate(model, 4, 256))
    (dec32, fwd32), (dec16, fwd16) = rates[torch.float32], rates[torch.bfloat16]
    rows += [
        ("decode tok/s fp32", f"{dec32:.1f}", "22-24 (SmolLM2)"),
        ("decode tok/s bf16", f"{dec16:.1f}", "-"),
        ("decode bf16/fp32", f"{dec16 / dec32:.2f}x", "mentor picks bf16 where faster"),
        ("forward tok/s fp32 (4x256)", f"{fwd32:.0f}", "830 (SmolLM2)"),
        ("forward tok/s bf16 (4x256)", f"{fwd16:.0f}", "-"),
        ("forward bf16/fp32", f"{fwd16 / fwd32:.2f}x", "3-4x with AMX"),
    ]
    table = Table(
        title=f"models_bench: {args.model}, torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads"
    )
    for column in ("measure", "here", "reference (MODELS.md)"):
        table.add_column(column)
    for row in rows:
        table.add_row(*row)
    Console().print(table)


if __name__ == "__main__":
    main()
