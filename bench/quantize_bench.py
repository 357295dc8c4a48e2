"""Quantization table: size, speed and quality of fp32 / bf16 / int8 / int4 for each model.

For SmolLM2-135M and Qwen2.5-Coder-0.5B (both from mentor's cache), each row runs in its own
process: fp32 and bf16 load the model as is; int8 and int4 quantize the fp32 model with
``mentor.quantize``, save the folder and measure it as ``load_quantized`` gives it back. Every
row measures the same way (:mod:`mentor.quantize.report`): weights on disk, parameters and
buffers in memory, greedy decoding speed on fixed prompts after a warm-up (batched tokens/s and
ms per token one prompt at a time), and perplexity on the packaged general-English sample.

Target (issue 6): int8 at least 2x smaller than fp32 on disk with at most 1% relative
perplexity loss. int8 is smoothed (SmoothQuant, alpha 0.5, calibrated on the packaged
``calibration.txt``); int4 uses ``--group-size`` (128; 576-wide SmolLM2 layers fall back to 64)
and ``int4-g32`` group size 32. Note: both cached models were dequantized from 4-bit GGUF files
(SmolLM2 Q4_1, i.e. groups of 32 with a scale and a minimum; Qwen Q4_K_M), so their "fp32"
weights already sit on a 4-bit grid: int4 at group size 32 finds SmolLM2's grid again (near
lossless), while larger groups must re-fit two or more grids with one and lose more than they
would on the original checkpoints.

Run: ``python bench/quantize_bench.py [--models smollm2-135m-instruct] [--quick]``
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

console = Console(width=max(120, Console().width))
MODELS = ["smollm2-135m-instruct", "qwen2.5-coder-0.5b-instruct"]
LEVELS = ["fp32", "bf16", "int8", "int4", "int4-g32"]


def _file_bytes(model: Any) -> int:
    """Bytes of the weights a safetensors file of ``model`` holds, each shared tensor once."""
    seen: set[int] = set()
    total = 0
    for tensor in model.state_dict().values():
        key = tensor.untyped_storage().data_ptr()
        if key not in seen:
            seen.add(key)
            total += tensor.numel() * tensor.element_size()
    return total


def run_row(name: str, level: str, args: argparse.Namespace) -> dict[str, Any]:
    """Load (and quantize) one model at one level and measure it."""
    import torch

    from mentor.evaluate.perplexity import general_sample, perplexity
    from mentor.models.loading import load_causal_lm, load_tokenizer
    from mentor.quantize.convert import plan_layers, quantize_model
    from mentor.quantize.io import WEIGHTS_FILE, load_quantized, new_manifest, save_quantized
    from mentor.quantize.report import SPEED_PROMPTS, measure_speed, memory_bytes
    from mentor.quantize.smooth import DEFAULT_ALPHA, calibration_sample, smoothing

    if args.threads:
        torch.set_num_threads(args.threads)
    tokenizer = load_tokenizer(name)
    dtype = torch.bfloat16 if level == "bf16" else torch.float32
    model = load_causal_lm(name, dtype=dtype, device=args.device)
    with tempfile.TemporaryDirectory(prefix="mentor-qbench-") as tmp:
        if level.startswith("int"):
            method, _, size = level.partition("-g")
            group_size = int(size) if size else args.group_size
            plans = plan_layers(model, method, group_size)
            factors = smoothing(model, tokenizer, plans, calibration_sample(), DEFAULT_ALPHA)
            plans = quantize_model(model, method, group_size, smooth=factors)
            manifest = new_manifest(
                method=method,
                group_size=group_size,
                layers=plans,
                base_model=name,
                base_fingerprint="",
                adapter=None,
                dtype=torch.float32,
            )
            folder = Path(tmp) / "q"
            save_quantized(model, tokenizer, folder, manifest)
            del model
            gc.collect()
            model = load_quantized(folder, device=args.device)
            disk = (folder / WEIGHTS_FILE).stat().st_size
        else:
            disk = _file_bytes(model)
        prompts = SPEED_PROMPTS[:2] if args.quick else SPEED_PROMPTS
        speed = measure_speed(model, tokenizer, prompts=prompts, new_tokens=args.new_tokens)
        text = general_sample()
        if args.quick:
            text = " ".join(text.split()[:600])
        ppl = perplexity(model, tokenizer, text, seq_len=args.seq_len)
    return {
        "disk_bytes": disk,
        "memory_bytes": memory_bytes(model),
        "tokens_per_s": speed.tokens_per_s,
        "latency_ms_per_token": speed.latency_ms_per_token,
        "perplexity": ppl,
    }


def _run_row(name: str, level: str) -> dict[str, Any]:
    """One row in a fresh process (clean memory, no warm caches from the previous row)."""
    command = [sys.executable, __file__, "--row", f"{name}:{level}", *sys.argv[1:]]
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        console.print(f"[red]{name} {level} failed[/red]\n{done.stderr[-2000:]}")
        return {}
    return json.loads(done.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


def _target(level: str, row: dict[str, Any], ref: dict[str, Any]) -> str:
    if level != "int8" or not row or not ref:
        return ""
    smaller = ref["disk_bytes"] / row["disk_bytes"]
    loss = row["perplexity"] / ref["perplexity"] - 1
    ok = smaller >= 2.0 and loss <= 0.01
    return f"{'yes' if ok else 'NO'} ({smaller:.2f}x, {loss:+.2%})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=MODELS, help="registry names")
    parser.add_argument("--levels", nargs="+", default=LEVELS, choices=LEVELS)
    parser.add_argument("--quick", action="store_true", help="2 prompts, 600-word perplexity text")
    parser.add_argument("--new-tokens", type=int, default=None, help="[32; 8 with --quick]")
    parser.add_argument("--seq-len", type=int, default=512, help="perplexity window")
    parser.add_argument("--group-size", type=int, default=128, help="int4 group size")
    parser.add_argument("--device", default="cpu")
    parser.add_argument(
        "--threads",
        type=int,
        default=None,
        help="torch threads per row [torch's default]; 1 keeps timings sane on a shared CPU, "
        "where idle OpenMP threads spin waiting for a descheduled sibling",
    )
    parser.add_argument("--row", help=argparse.SUPPRESS)
    args = parser.parse_args()
    args.new_tokens = args.new_tokens or (8 if args.quick else 32)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from mentor.utils.fs import atomic_write_text, human_bytes, mentor_home
    from mentor.utils.logs import quiet_libraries

    quiet_libraries()
    if args.row:
        name, level = args.row.split(":")
        print(json.dumps(run_row(name, level, args)))
        return
    results = {m: {lv: _run_row(m, lv) for lv in args.levels} for m in args.models}
    table = Table(
        title=f"quantization, {args.device}"
        + (f" ({args.threads} thread{'s' * (args.threads > 1)})" if args.threads else "")
        + f", greedy {args.new_tokens} tokens/prompt"
        + (" (quick)" if args.quick else "")
        + f", int4 group size {args.group_size}"
    )
    for column in ("model", "level", "disk", "÷ fp32", "memory", "tok/s", "ms/tok", "ppl", "Δ ppl"):
        table.add_column(column, no_wrap=True)
    table.add_column("int8 target¹")
    for name, rows in results.items():
        ref = rows.get("fp32", {})
        for level, r in rows.items():
            if not r:
                continue
            ratio = ref["disk_bytes"] / r["disk_bytes"] if ref else math.nan
            change = r["perplexity"] / ref["perplexity"] - 1 if ref else math.nan
            table.add_row(
                name.split("-instruct")[0],
                level,
                human_bytes(r["disk_bytes"]),
                f"{ratio:.2f}x",
                human_bytes(r["memory_bytes"]),
                f"{r['tokens_per_s']:.1f}",
                f"{r['latency_ms_per_token']:.1f}",
                f"{r['perplexity']:.3f}",
                f"{change:+.2%}",
                _target(level, r, ref),
            )
    console.print(table)
    console.print(
        "¹ int8 >= 2x smaller than fp32 on disk with <= 1% relative perplexity loss. Both cached "
        "models were dequantized from 4-bit GGUF files (see the module docstring for what that "
        "does to the int4 rows)."
    )
    out = mentor_home() / "bench" / "quantize_bench.json"
    atomic_write_text(
        out, json.dumps({"settings": vars(args), "results": results}, indent=2) + "\n"
    )
    console.print(f"results: {out}")


if __name__ == "__main__":
    main()
