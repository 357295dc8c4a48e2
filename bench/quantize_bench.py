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

On a GPU, :func:`gpu_rows` (called by ``bench/gpu_check.py``, or ``--gpu`` here) times batch-1
decoding of random-init SmolLM2-135M- and 1.7B-shaped Llamas, bf16 against int8 and int4 with
every candidate CUDA kernel (``mentor.quantize.kernels``), and checks that a folder quantized
and saved on the CPU loads on the GPU with the same logits.
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

try:
    import mentor  # noqa: F401
except ImportError:  # a checkout run by a python3 without mentor installed (a GPU machine)
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

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
        from rich.console import Console

        Console().print(f"[red]{name} {level} failed[/red]\n{done.stderr[-2000:]}")
        return {}
    return json.loads(done.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


def _target(level: str, row: dict[str, Any], ref: dict[str, Any]) -> str:
    if level != "int8" or not row or not ref:
        return ""
    smaller = ref["disk_bytes"] / row["disk_bytes"]
    loss = row["perplexity"] / ref["perplexity"] - 1
    ok = smaller >= 2.0 and loss <= 0.01
    return f"{'yes' if ok else 'NO'} ({smaller:.2f}x, {loss:+.2%})"


_SMOLLM2: dict[str, Any] = {"vocab_size": 49152, "tie_word_embeddings": True,
                            "rms_norm_eps": 1e-5, "max_position_embeddings": 8192}  # fmt: skip
GPU_SHAPES: dict[str, dict[str, Any]] = {
    "135m": {**_SMOLLM2, "hidden_size": 576, "num_hidden_layers": 30, "num_attention_heads": 9,
             "num_key_value_heads": 3, "intermediate_size": 1536},
    "1.7b": {**_SMOLLM2, "hidden_size": 2048, "num_hidden_layers": 24, "num_attention_heads": 32,
             "num_key_value_heads": 32, "intermediate_size": 8192},
    "tiny": {**_SMOLLM2, "vocab_size": 512, "hidden_size": 64, "num_hidden_layers": 2,
             "num_attention_heads": 4, "num_key_value_heads": 2, "intermediate_size": 128},
}  # fmt: skip
"""SmolLM2's shapes (the issue's), and a tiny one for the CPU test of :func:`gpu_rows`."""

GPU_ARMS: list[tuple[str | None, str | None]] = [
    (None, None),  # the bf16 reference
    ("int8", "triton"),
    ("int8", "aten"),
    ("int8", "dequant"),
    ("int4", "tinygemm"),
    ("int4", "triton"),
]
"""(method, kernel) rows on CUDA; the first kernel of each method is the default there."""
CPU_ARMS: list[tuple[str | None, str | None]] = [(None, None), ("int8", None), ("int4", None)]
METHODS = ("int8", "int4")


def _gpu_model(shape: str, device: str, dtype: Any) -> Any:
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    with torch.device(device):
        model = LlamaForCausalLM(LlamaConfig(**GPU_SHAPES[shape]))
    return model.to(dtype).eval()


def _decode_logits(model: Any, prompt: list[int], text: list[int], compile_: bool) -> Any:
    """Teacher-forced batch-1 decoding of ``text`` after ``prompt`` through the engine's
    :class:`StaticDecoder` (static cache and CUDA graphs on CUDA): (len(text), V) logits, each
    predicting the next token, and the seconds per step of a timed second pass (the first one
    compiles and captures)."""
    import time

    import torch

    from mentor.models.static_decode import StaticDecoder

    decoder = StaticDecoder(model, max_len=len(prompt) + len(text) + 1, compile=compile_)
    sync = torch.cuda.synchronize if model.device.type == "cuda" else (lambda: None)
    timings = []
    for _ in range(2):
        decoder.reset()
        rows = [decoder.prefill(prompt)]
        sync()
        started = time.perf_counter()
        rows += [decoder.step(token) for token in text[:-1]]
        sync()
        timings.append(time.perf_counter() - started)
    return torch.stack(rows), timings[1] / (len(text) - 1), timings[0]


def _memory_bytes(model: Any) -> int:
    """Parameters and buffers, each storage once (mentor.quantize.report's count, which would
    import pydantic through mentor.evaluate)."""
    seen: dict[int, int] = {}
    for t in [*model.parameters(), *model.buffers()]:
        seen[t.untyped_storage().data_ptr()] = t.numel() * t.element_size()
    return sum(seen.values())


def _nll(logits: Any, targets: Any) -> float:
    import torch

    return float(torch.nn.functional.cross_entropy(logits.float(), targets))


def _rel(a: Any, b: Any) -> float:
    return float((a.float() - b.float()).norm() / b.float().norm())


def gpu_rows(
    device: str = "cuda",
    tiny: bool = False,
    *,
    shapes: tuple[str, ...] | None = None,
    arms: list[tuple[str | None, str | None]] | None = None,
    steps: int | None = None,
    group_size: int = 128,
) -> list[dict[str, Any]]:
    """Batch-1 decode ms/token of bf16 and each quantized (method, kernel) arm, per shape.

    Each row: ``shape``, ``method`` (``bf16``, ``int8``, ``int4``), ``kernel`` (what its layers
    ran, by count), ``ms_per_token``, ``ratio`` (to bf16 of the same shape), ``compile_s`` (the
    first, compiling pass), ``d_nll`` (mean next-token NLL on a fixed random token sequence,
    decoded teacher-forced, minus bf16's: random weights make absolute perplexity meaningless,
    the change still shows what quantizing did), ``decode_err`` and ``prefill_err`` (relative
    logits error against bf16 on the decode path and on one full forward over the sequence, the
    prompt path), ``weights_mb``, ``error`` (a candidate that failed). Plus one ``load`` row per
    method: a folder quantized and saved on the CPU, loaded on ``device`` by ``load_quantized``,
    and ``load_err``, its logits against the in-memory model's. ``tiny=True`` runs tiny shapes,
    CPU arms and few steps: the CPU test of this function."""
    import copy
    import gc

    import torch

    from mentor.quantize.convert import pack_for_device, quantize_model

    shapes = shapes or (("tiny",) if tiny else ("135m", "1.7b"))
    on_cuda = torch.device(device).type == "cuda"
    arms = arms or (GPU_ARMS if on_cuda else CPU_ARMS)
    steps = steps or (8 if tiny else 128)
    rows: list[dict[str, Any]] = []
    for shape in shapes:
        base = _gpu_model(shape, device, torch.bfloat16)
        vocab = base.config.vocab_size
        gen = torch.Generator().manual_seed(1)
        prompt = torch.randint(0, vocab, (16,), generator=gen).tolist()
        text = torch.randint(0, vocab, (steps + 1,), generator=gen).tolist()
        targets = torch.tensor(text[1:], device=device)
        full = torch.tensor([prompt + text], device=device)
        ref: dict[str, Any] = {}
        for method, kernel in arms:
            row: dict[str, Any] = {"shape": shape, "method": method or "bf16", "kernel": kernel}
            model = base if method is None else copy.deepcopy(base)
            try:
                if method is not None:
                    quantize_model(model, method, group_size)
                    row["kernel"] = pack_for_device(model, {method: kernel} if kernel else None)
                torch._dynamo.reset()  # each arm compiles its own graphs
                logits, per_token, first = _decode_logits(model, prompt, text, on_cuda)
                with torch.no_grad():
                    prefill = model(full).logits[0, -len(text) : -1]
                nll = _nll(logits[1:], targets)
                if method is None:
                    ref = {"ms": per_token, "nll": nll, "logits": logits, "prefill": prefill}
                row |= {
                    "ms_per_token": 1000 * per_token,
                    "ratio": per_token / ref["ms"] if ref else None,
                    "compile_s": first,
                    "d_nll": nll - ref["nll"] if ref else None,
                    "decode_err": _rel(logits, ref["logits"]) if ref else None,
                    "prefill_err": _rel(prefill, ref["prefill"]) if ref else None,
                    "weights_mb": _memory_bytes(model) / 2**20,
                }
            except Exception as exc:  # one failing candidate must not hide the others
                row["error"] = f"{type(exc).__name__}: {str(exc)[:300]}"
            rows.append(row)
            if model is not base:
                del model
            gc.collect()
        del base, ref
        gc.collect()
    rows += _load_rows(device, shapes[0], group_size)
    return rows


def _load_rows(device: str, shape: str, group_size: int) -> list[dict[str, Any]]:
    """A folder quantized and saved on the CPU, loaded on ``device``: same logits as the model
    quantized in memory on ``device`` (up to each kernel's bf16 rounding)."""
    import torch

    from mentor.quantize.convert import pack_for_device, quantize_model

    try:
        from mentor.quantize.io import load_quantized, new_manifest, save_quantized
        from mentor.testing.tokenizers import tiny_chat_tokenizer
    except ImportError as exc:  # pydantic, through mentor.models.backends
        note = f"load check not run: {type(exc).__name__}: {exc}"
        return [{"shape": shape, "method": m, "kernel": "load", "error": note} for m in METHODS]
    rows: list[dict[str, Any]] = []
    ids = torch.randint(0, 500, (1, 24), generator=torch.Generator().manual_seed(2))
    for method in METHODS:
        row: dict[str, Any] = {"shape": shape, "method": method, "kernel": "load"}
        try:
            cpu_model = _gpu_model(shape, "cpu", torch.float32)
            plans = quantize_model(cpu_model, method, group_size)
            manifest = new_manifest(
                method=method,
                group_size=group_size,
                layers=plans,
                base_model=f"random-{shape}",
                base_fingerprint="",
                adapter=None,
                dtype=torch.float32,
            )
            with tempfile.TemporaryDirectory(prefix="mentor-qload-") as tmp:
                save_quantized(cpu_model, tiny_chat_tokenizer(), Path(tmp), manifest)
                loaded = load_quantized(Path(tmp), device=device)
            memory = _gpu_model(shape, device, loaded.dtype)
            quantize_model(memory, method, group_size)
            row["kernel"] = f"load: {pack_for_device(memory)}"
            with torch.no_grad():
                got = loaded(ids.to(device)).logits
                want = memory(ids.to(device)).logits
            row["load_err"] = _rel(got, want)
            row["dtype"] = str(loaded.dtype).removeprefix("torch.")
        except Exception as exc:
            row["error"] = f"{type(exc).__name__}: {str(exc)[:300]}"
        rows.append(row)
    return rows


def print_gpu_rows(rows: list[dict[str, Any]]) -> None:
    """The rows as a plain-text table (no rich: a bare GPU machine's python3 prints it)."""
    head = ("shape", "method", "kernel", "ms/tok", "x bf16", "compile s", "dNLL", "dec err",
            "pre err", "MB", "note")  # fmt: skip
    print(" | ".join(head))
    for r in rows:

        def num(key: str, fmt: str, r: dict[str, Any] = r) -> str:
            return format(r[key], fmt) if r.get(key) is not None else ""

        kernel = r.get("kernel")
        kernel_text = (
            ", ".join(f"{k} {n}" for k, n in kernel.items())
            if isinstance(kernel, dict)
            else str(kernel or "")
        )
        print(" | ".join((
            r["shape"], r["method"], kernel_text, num("ms_per_token", ".2f"), num("ratio", ".2f"),
            num("compile_s", ".1f"), num("d_nll", "+.4f"), num("decode_err", ".2e"),
            num("prefill_err", ".2e"), num("weights_mb", ".1f"),
            r.get("error") or (f"load err {r['load_err']:.2e}" if "load_err" in r else ""),
        )))  # fmt: skip


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
    parser.add_argument("--gpu", action="store_true", help="run gpu_rows on --device instead")
    parser.add_argument("--tiny", action="store_true", help="with --gpu: tiny shapes (a test)")
    args = parser.parse_args()
    if args.gpu:
        print_gpu_rows(gpu_rows(args.device, args.tiny))
        return
    from rich.console import Console
    from rich.table import Table

    console = Console(width=max(120, Console().width))
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
