"""``mentor export`` of SmolLM2: each GGUF in llama.cpp against mentor's own model, side by side.

For f16 (from the float base), q8_0 (from mentor's int8 folder, no SmoothQuant) and q4_1 (from
mentor's int4 folder, groups of 32): file size, perplexity on the packaged general-English
sample in llama.cpp and in mentor (same tokens, same 512-token windows), and llama.cpp's greedy
decoding speed. Needs the ``gguf-verify`` extra (llama-cpp-python) and the packaged SmolLM2.

    python bench/export_bench.py [--work DIR] [--tokens 64]
"""

from __future__ import annotations

import argparse
import math
import time
from pathlib import Path

import numpy as np
import torch

from mentor.evaluate.perplexity import general_sample, perplexity, token_windows
from mentor.models.loading import load_causal_lm, load_tokenizer, resolve_model_path
from mentor.quantize.export import export_model
from mentor.quantize.io import load_quantized
from mentor.quantize.recipe import QuantizeSettings, quantize_to_folder

MODEL = "smollm2-135m-instruct"
SEQ = 512


def llama_perplexity(llm: object, ids: list[int]) -> float:
    total, count = 0.0, 0
    for start, end in token_windows(len(ids), SEQ):
        window = ids[start:end]
        if len(window) < 2:
            continue
        llm.reset()  # type: ignore[attr-defined]
        llm.eval(window)  # type: ignore[attr-defined]
        logits = np.asarray(llm.scores[: len(window)], dtype=np.float64)  # type: ignore[attr-defined]
        logits -= logits.max(axis=-1, keepdims=True)
        logp = logits - np.log(np.exp(logits).sum(axis=-1, keepdims=True))
        total -= float(logp[np.arange(len(window) - 1), window[1:]].sum())
        count += len(window) - 1
    return math.exp(total / count)


def llama_speed(llm: object, prompt: list[int], n: int) -> float:
    llm.reset()  # type: ignore[attr-defined]
    start = time.perf_counter()
    for got, _ in enumerate(llm.generate(prompt, temp=0.0, top_k=1), 1):  # type: ignore[attr-defined]
        if got == n:
            break
    return n / (time.perf_counter() - start)


def main() -> None:
    from llama_cpp import Llama

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--work", type=Path, default=Path("runs/export-bench"))
    parser.add_argument("--tokens", type=int, default=64)
    args = parser.parse_args()
    tokenizer = load_tokenizer(MODEL)
    text = general_sample()
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    folders = {"f16": resolve_model_path(MODEL)}
    for method, size, kind in (("int8", 128, "q8_0"), ("int4", 32, "q4_1")):
        out = args.work / f"smol-{method}"
        if not (out / "mentor_quantized.json").exists():
            quantize_to_folder(
                QuantizeSettings(model=MODEL, method=method, group_size=size, out=out, smooth=False)
            )
        folders[kind] = out
    rows = []
    for kind, folder in folders.items():
        path = export_model(folder, args.work / f"smol.{kind}.gguf", kind).path
        if kind == "f16":
            model = load_causal_lm(MODEL, dtype="float32", device="cpu")
        else:
            model = load_quantized(folder)
        with torch.no_grad():
            ours = perplexity(model, tokenizer, text, seq_len=SEQ)
        del model
        llm = Llama(model_path=str(path), n_ctx=SEQ, logits_all=True, verbose=False, n_threads=2)
        theirs = llama_perplexity(llm, ids)
        speed = llama_speed(llm, ids[:16], args.tokens)
        rows.append((kind, path.stat().st_size / 1e6, ours, theirs, speed))
    print("| GGUF | source | MB | ppl mentor | ppl llama.cpp | ratio | llama.cpp tok/s |")
    print("|---|---|---|---|---|---|---|")
    sources = {"f16": "fp32 base", "q8_0": "mentor int8", "q4_1": "mentor int4 g32"}
    for kind, mb, ours, theirs, speed in rows:
        print(
            f"| {kind} | {sources[kind]} | {mb:.1f} | {ours:.3f} | {theirs:.3f} | "
            f"{theirs / ours:.4f} | {speed:.1f} |"
        )


if __name__ == "__main__":
    main()
