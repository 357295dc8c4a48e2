"""Fine-tuning throughput and memory: our LoRA against PEFT's, our pipeline against PEFT + Trainer.

Part ``loop`` trains SmolLM2-135M in one plain loop (same data, sequence length, batch, fp32 on
CPU / bf16 on CUDA, AdamW) four ways: full fine-tuning, PEFT's LoRA and ours (r=16 on all seven
linear layers of each block). Part ``pipeline`` trains LoRA on PubMedQA answers for one epoch with
our defaults (packing, bf16 autocast, loss on assistant tokens, logits only at targets) and with
PEFT + ``transformers.Trainer`` at its defaults (fp32, padding per batch). Tokens/s counts real
tokens only. Each row runs in its own process, so peak memory is that row's alone.

Targets: our LoRA >= PEFT's tokens/s at equal settings; our pipeline >= 2x PEFT + Trainer; LoRA
peak memory well under full fine-tuning. On a GPU (``--device cuda --random-init``: SmolLM2-135M's
shape, bf16, batch 16 x 1024) our LoRA >= 0.9x full fine-tuning's tokens/s with less memory (the
reference: PEFT's LoRA ran at 67K tokens/s against 139K for full fine-tuning on an H100).

Part ``checkpointing`` runs one LoRA step (r=16, dropout 0.05, mentor's loss, 1,024 tokens a row)
with and without gradient checkpointing: peak memory and tokens/s side by side, beside the
estimate of :mod:`mentor.train.memory`. Target (CPU): peak memory of the step <= 0.6x. The GPU
check calls :func:`checkpointing_rows`.

Part ``fsdp`` runs the trainer itself (``mentor.train.trainer.train``) under ``torchrun``, LoRA
and full fine-tuning, with ``--strategy ddp`` and ``fsdp`` side by side: 2 processes of a tiny
model on a CPU (gloo), one process per GPU (at most 2) of SmolLM2-135M's shape on CUDA. A single
GPU still runs the whole FSDP path (sharding, bf16 gathers, DCP checkpoint, unshard), sharded
over one. :func:`fsdp_rows` returns the rows for ``bench/gpu_check.py``.

Run: ``python bench/finetune_bench.py [--part loop|pipeline|checkpointing|fsdp|banking|all]
[--device cuda]``
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from rich.console import Console
from rich.table import Table

console = Console()
DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
MODEL = "smollm2-135m-instruct"
TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def _peak_mb(device: str) -> float:
    if device.startswith("cuda"):
        return torch.cuda.max_memory_allocated() / 2**20
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _model(device: str, random_init: bool, dtype: torch.dtype) -> Any:
    from transformers import AutoModelForCausalLM, LlamaConfig

    if random_init:  # SmolLM2-135M's shape, for machines without the packaged weights
        config = LlamaConfig(
            vocab_size=49152,
            hidden_size=576,
            intermediate_size=1536,
            num_hidden_layers=30,
            num_attention_heads=9,
            num_key_value_heads=3,
            max_position_embeddings=8192,
            rope_theta=100000.0,
            tie_word_embeddings=True,
        )
        torch.manual_seed(0)
        model = AutoModelForCausalLM.from_config(config, dtype=dtype)
    else:
        from mentor.models.loading import load_causal_lm

        model = load_causal_lm(MODEL, dtype=dtype, device="cpu")
    return model.to(device).train()


def loop_row(row: str, args: argparse.Namespace) -> dict[str, Any]:
    """One plain training loop: random token batches, HF loss, AdamW; tokens/s after warmup."""
    cuda = args.device.startswith("cuda")
    dtype = torch.bfloat16 if cuda else torch.float32
    model = _model(args.device, args.random_init, dtype)
    if row == "full":
        model.requires_grad_(True)
    elif row == "peft":
        from peft import LoraConfig, get_peft_model

        model = get_peft_model(
            model, LoraConfig(r=16, lora_alpha=32, lora_dropout=0.05, target_modules=TARGETS)
        )
    else:
        from mentor.train.lora import LoRAConfig, add_lora, mark_trainable

        torch.manual_seed(0)
        dropout = 0.0 if row == "ours-nodrop" else 0.05
        add_lora(model, LoRAConfig(r=16, alpha=32, dropout=dropout, targets=tuple(TARGETS)))
        mark_trainable(model, "default")
        if cuda:  # adapters in the model's dtype, as PEFT's autocast_adapter_dtype=False would be
            model.to(dtype)
    if row == "peft" and cuda:
        model.to(dtype)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=1e-4)
    gen = torch.Generator().manual_seed(0)
    batch = torch.randint(0, 49152, (args.batch, args.seq_len), generator=gen).to(args.device)
    times = []
    for step in range(args.steps + 2):
        if cuda:
            torch.cuda.synchronize()
        started = time.perf_counter()
        loss = model(input_ids=batch, labels=batch).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if cuda:
            torch.cuda.synchronize()
        if step >= 2:
            times.append(time.perf_counter() - started)
    tokens = args.batch * args.seq_len
    return {
        "tokens_per_s": tokens * len(times) / sum(times),
        "peak_mb": _peak_mb(args.device),
        "trainable": sum(p.numel() for p in params),
    }


def _pubmedqa_examples(tokenizer: Any, limit: int, max_length: int) -> list[Any]:
    from mentor.train.data import chat_example, qa_messages

    raw = json.loads((DATA / "pubmedqa" / "pqal_train.json").read_text())
    examples = []
    for item in list(raw.values())[:limit]:
        messages = qa_messages(item["QUESTION"], item["LONG_ANSWER"], " ".join(item["CONTEXTS"]))
        examples.append(chat_example(messages, tokenizer, max_length))
    return examples


def pipeline_row(row: str, args: argparse.Namespace) -> dict[str, Any]:
    """One epoch of LoRA on PubMedQA answers: our defaults, or PEFT + Trainer defaults."""
    from mentor.models.loading import load_tokenizer

    tokenizer = load_tokenizer(MODEL)
    examples = _pubmedqa_examples(tokenizer, args.examples, args.max_length)
    real_tokens = sum(len(e.input_ids) for e in examples)
    with tempfile.TemporaryDirectory() as tmp:
        if row == "ours":
            from mentor.train.data import collate, pack
            from mentor.train.lora import LoRAConfig, add_lora, mark_trainable
            from mentor.train.objectives import CausalLMLoss
            from mentor.train.trainer import TrainSettings, train

            model = _model(args.device, False, torch.float32)
            torch.manual_seed(0)
            add_lora(model, LoRAConfig(r=16, alpha=32, dropout=0.05, targets=tuple(TARGETS)))
            mark_trainable(model, "default")
            rows = pack(examples, args.max_length)
            pad = tokenizer.pad_token_id or 0
            settings = TrainSettings(epochs=1, batch_size=8, save_every=10_000, patience=None)
            started = time.perf_counter()
            train(
                CausalLMLoss(model),
                rows,
                lambda r: collate(r, pad),
                settings,
                Path(tmp),
                device=torch.device(args.device),
                console=Console(stderr=True, quiet=True),
            )
            seconds = time.perf_counter() - started
        else:
            from peft import LoraConfig, get_peft_model
            from transformers import DataCollatorForSeq2Seq, Trainer, TrainingArguments

            model = get_peft_model(
                _model(args.device, False, torch.float32),
                LoraConfig(r=16, lora_alpha=32, lora_dropout=0.05, target_modules=TARGETS),
            )
            dataset = [{"input_ids": e.input_ids, "labels": e.labels} for e in examples]
            trainer = Trainer(
                model=model,
                args=TrainingArguments(
                    output_dir=tmp,
                    per_device_train_batch_size=8,
                    num_train_epochs=1,
                    report_to=[],
                    save_strategy="no",
                    disable_tqdm=True,
                ),
                train_dataset=dataset,  # type: ignore[arg-type]
                data_collator=DataCollatorForSeq2Seq(tokenizer, padding=True),
            )
            started = time.perf_counter()
            trainer.train()
            seconds = time.perf_counter() - started
    return {
        "tokens_per_s": real_tokens / seconds,
        "peak_mb": _peak_mb(args.device),
        "seconds": seconds,
        "examples": len(examples),
        "tokens": real_tokens,
    }


def fsdp_row(method: str, strategy: str, args: argparse.Namespace) -> dict[str, Any]:
    """One process of a torchrun launch: ``train()`` on random tokens with ``strategy``."""
    from mentor.testing import tiny_llama
    from mentor.train.data import PackedRow, collate
    from mentor.train.distributed import setup, teardown
    from mentor.train.lora import LoRAConfig, add_lora, mark_trainable
    from mentor.train.objectives import CausalLMLoss
    from mentor.train.trainer import TrainSettings, train

    world, device = setup(args.device, strategy)
    cuda = device.type == "cuda"
    if args.tiny:
        model, _ = tiny_llama(seed=0)
        model.to(device)
    else:  # a LoRA base sits in bf16 on CUDA, as ``mentor finetune`` loads it
        dtype = torch.bfloat16 if cuda and method == "lora" else torch.float32
        model = _model(str(device), random_init=True, dtype=dtype)
    torch.manual_seed(0)
    if method == "lora":
        add_lora(model, LoRAConfig(r=16, alpha=32, dropout=0.05, targets=tuple(TARGETS)))
        mark_trainable(model, "default")
    else:
        model.requires_grad_(True)
    vocab = model.config.vocab_size
    gen = torch.Generator().manual_seed(0)
    rows = []
    for _ in range(args.batch * world.size * args.steps):
        ids = torch.randint(0, vocab, (args.seq_len,), generator=gen).tolist()
        rows.append(PackedRow(ids, ids, list(range(args.seq_len))))
    settings = TrainSettings(
        max_steps=args.steps,
        batch_size=args.batch,
        lr=1e-4,
        warmup=0.0,
        save_every=args.steps,
        precision="bf16" if cuda else "fp32",
        strategy=strategy,  # type: ignore[arg-type]
    )
    out = Path(args.out) / f"{method}-{strategy}"  # one folder for every process of the launch
    result = train(
        CausalLMLoss(model),
        rows,
        lambda r: collate(r, 0),
        settings,
        out,
        world=world,
        device=device,
    )
    teardown()
    return {
        "method": method,
        "strategy": strategy,
        "processes": world.size,
        "tokens_per_s": result.tokens_per_s,
        "peak_mb": result.peak_memory_mb,
        "loss": result.train_loss,
        "rank": world.rank,
    }


def fsdp_rows(device: str, tiny: bool) -> list[dict[str, Any]]:
    """DDP against FSDP in ``train()``, LoRA and full, each launch by torchrun in fresh processes.

    Rows: method, strategy, processes, tokens_per_s (whole launch, training steps only),
    peak_mb (process 0: CUDA max allocated, or CPU resident peak), loss (last step), and
    speed/memory as a ratio of the DDP row of the same method. On CUDA: SmolLM2-135M shape, bf16,
    8 x 1024 tokens per process, 8 steps; tiny: a 64-wide Llama, 2 x 64, 4 steps."""
    cuda = device.startswith("cuda")
    processes = min(torch.cuda.device_count(), 2) if cuda else 2
    if cuda and processes == 0:
        raise ValueError("no CUDA device")
    batch, seq_len, steps = (2, 64, 4) if tiny else (8, 1024, 8)
    rows = []
    folder = tempfile.TemporaryDirectory()
    for method in ("lora", "full"):
        pair = {}
        for strategy in ("ddp", "fsdp"):
            command = [
                sys.executable, "-m", "torch.distributed.run", "--nproc_per_node",
                str(processes), "--master_port", str(_free_port()), __file__,
                "--row", f"fsdp:{method}:{strategy}", "--device", device, "--batch", str(batch),
                "--seq-len", str(seq_len), "--steps", str(steps), *(["--tiny"] if tiny else []),
                "--out", folder.name,
            ]  # fmt: skip
            env = {**os.environ, "OMP_NUM_THREADS": "1" if not cuda else "4"}
            done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=600)
            if done.returncode != 0:
                raise RuntimeError(f"fsdp:{method}:{strategy} failed\n{done.stderr[-3000:]}")
            found = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
            pair[strategy] = next(r for r in found if r["rank"] == 0)
        for strategy in ("ddp", "fsdp"):
            row = pair[strategy]
            row["speed_vs_ddp"] = row["tokens_per_s"] / pair["ddp"]["tokens_per_s"]
            row["memory_vs_ddp"] = row["peak_mb"] / pair["ddp"]["peak_mb"]
            row["loss_gap"] = abs(row["loss"] - pair["ddp"]["loss"])
            rows.append(row)
    folder.cleanup()
    return rows


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def fsdp_part(args: argparse.Namespace) -> None:
    rows = fsdp_rows(args.device, args.tiny or not args.device.startswith("cuda"))
    table = Table(
        title=f"trainer under torchrun, {rows[0]['processes']} processes, {args.device}: "
        "DDP against FSDP2"
    )
    for column in ("training", "strategy", "tokens/s", "vs DDP", "peak MB", "vs DDP", "loss gap"):
        table.add_column(column)
    for r in rows:
        table.add_row(
            r["method"],
            r["strategy"],
            f"{r['tokens_per_s']:,.0f}",
            f"{r['speed_vs_ddp']:.2f}x",
            f"{r['peak_mb']:,.0f}",
            f"{r['memory_vs_ddp']:.2f}x",
            f"{r['loss_gap']:.2e}",
        )
    console.print(table)
    console.print(
        "expected: equal losses (gap ~1e-6 in fp32; bf16 on CUDA differs by rounding only); "
        "FSDP's memory falls with the number of processes (1 process: about DDP's)"
    )


def checkpointing_step(
    device: str, tiny: bool, checkpointing: bool, batch: int, seq_len: int, steps: int
) -> dict[str, Any]:
    """LoRA steps with or without checkpointing, in this process: tokens/s after one warmup step,
    the peak (CUDA: allocated; CPU: resident, and its rise over the loaded model) and the
    estimate. ``tiny``: a 4-layer, 128-wide model of the same family, for a CPU smoke run."""
    from transformers import LlamaConfig, LlamaForCausalLM

    from mentor.train.checkpointing import enable_checkpointing
    from mentor.train.lora import LoRAConfig, add_lora, mark_trainable
    from mentor.train.memory import estimate_for_model
    from mentor.train.objectives import CausalLMLoss

    cuda = device.startswith("cuda")
    dtype = torch.bfloat16 if cuda else torch.float32
    torch.manual_seed(0)
    if tiny:
        config = LlamaConfig(
            vocab_size=512,
            hidden_size=128,
            intermediate_size=256,
            num_hidden_layers=4,
            num_attention_heads=4,
            num_key_value_heads=2,
            max_position_embeddings=max(seq_len, 128),
        )
        model: Any = LlamaForCausalLM(config).to(dtype).to(device).train()
    else:
        model = _model(device, not _packaged(), dtype)
    add_lora(model, LoRAConfig(r=16, alpha=32, dropout=0.05, targets=tuple(TARGETS)))
    mark_trainable(model, "default")
    model.to(dtype)  # adapters in the model's dtype, as in the loop part
    if checkpointing:
        enable_checkpointing(model)
    objective = CausalLMLoss(model)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=1e-4)
    vocab = model.config.vocab_size
    gen = torch.Generator().manual_seed(0)
    ids = torch.randint(0, vocab, (batch, seq_len), generator=gen).to(device)
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
    else:
        import psutil

        before = psutil.Process().memory_info().rss
    times = []
    for step in range(steps + 1):
        if cuda:
            torch.cuda.synchronize()
        started = time.perf_counter()
        objective(input_ids=ids, labels=ids).backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if cuda:
            torch.cuda.synchronize()
        if step >= 1:
            times.append(time.perf_counter() - started)
    peak = _peak_mb(device)
    estimate = estimate_for_model(
        model,
        model.config,
        tokens=batch * seq_len,
        logit_positions=batch * seq_len,
        bf16=cuda,
        checkpointing=checkpointing,
    )
    return {
        "checkpointing": checkpointing,
        "tokens_per_s": batch * seq_len * len(times) / sum(times),
        "peak_mb": peak,
        "step_mb": peak - before / 2**20,
        "estimate_mb": estimate.total / 2**20,
        "estimate_step_mb": (estimate.total - estimate.weights) / 2**20,
    }


def _packaged() -> bool:
    from mentor.models.hub import model_dir

    found = model_dir(MODEL)  # not pulled: the random-init shape stands in
    return found is not None and found.is_dir()


def checkpointing_rows(device: str, tiny: bool) -> list[dict[str, Any]]:
    """Both rows (without, with checkpointing) for the GPU check, ``tiny`` shapes on a CPU.

    On CUDA both run here (peak allocated memory is reset between them); on a CPU each runs in
    a fresh process, since the resident peak only grows."""
    cuda = device.startswith("cuda")
    batch, seq_len, steps = (2, 128, 2) if tiny else ((16, 1024, 5) if cuda else (2, 1024, 2))
    if cuda:
        rows = []
        for on in (False, True):
            rows.append(checkpointing_step(device, tiny, on, batch, seq_len, steps))
            torch.cuda.empty_cache()
        return rows
    args = argparse.Namespace(device=device, tiny=tiny, batch=batch, seq_len=seq_len, steps=steps)
    return [_run_row("checkpointing", name, args, for_memory=True) for name in ("off", "on")]


def _run_row(
    part: str, row: str, args: argparse.Namespace, for_memory: bool = False
) -> dict[str, Any]:
    """Run one row in a fresh process (clean peak memory) and read its JSON line.

    ``for_memory`` serves large blocks straight from mmap, so the resident peak follows live
    tensors rather than what glibc's heap keeps after a free; that slows allocation, so speed
    is measured in a separate run without it.
    """
    command = [sys.executable, __file__, "--row", f"{part}:{row}", *_cli_args(args)]
    env = {**os.environ, **({"MALLOC_MMAP_THRESHOLD_": "65536"} if for_memory else {})}
    if for_memory and part != "checkpointing":
        command += ["--steps", "2"]
    done = subprocess.run(command, capture_output=True, text=True, env=env)
    if done.returncode != 0:
        console.print(f"[red]{part}:{row} failed[/red]\n{done.stderr[-2000:]}")
        return {}
    return json.loads(done.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


def _cli_args(args: argparse.Namespace) -> list[str]:
    """``args`` back as flags, for a row's own process."""
    flags = ["--device", args.device, "--batch", str(args.batch), "--seq-len", str(args.seq_len)]
    flags += ["--steps", str(args.steps)]
    for name in ("examples", "max_length"):
        if hasattr(args, name):
            flags += [f"--{name.replace('_', '-')}", str(getattr(args, name))]
    return flags + [
        f for f in ("--random-init", "--tiny") if getattr(args, f[2:].replace("-", "_"), False)
    ]


def checkpointing_part(args: argparse.Namespace) -> None:
    rows = [_run_row("checkpointing", name, args) for name in ("off", "on")]
    if not args.device.startswith("cuda"):  # the resident peak from separate mmap-served runs
        for r, name in zip(rows, ("off", "on"), strict=True):
            memory = _run_row("checkpointing", name, args, for_memory=True)
            r.update({k: memory.get(k, math.nan) for k in ("peak_mb", "step_mb")})
    if not all(rows):
        return
    shape = (
        "tiny Llama"
        if args.tiny
        else "SmolLM2-135M" + (" random-init" if args.random_init or not _packaged() else "")
    )
    table = Table(
        title=f"one LoRA step (r=16, dropout 0.05), {shape}, {args.batch} x {args.seq_len} tokens, "
        f"{'bf16' if args.device.startswith('cuda') else 'fp32'}, {args.device}"
    )
    for column in (
        "checkpointing",
        "tokens/s",
        "peak MB",
        "step MB¹",
        "estimate MB²",
        "est. step MB",
    ):
        table.add_column(column)
    for r in rows:
        table.add_row(
            "on" if r["checkpointing"] else "off",
            f"{r['tokens_per_s']:,.0f}",
            f"{r['peak_mb']:,.0f}",
            f"{r['step_mb']:,.0f}",
            f"{r['estimate_mb']:,.0f}",
            f"{r['estimate_step_mb']:,.0f}",
        )
    off, on = rows
    table.add_row(
        "on / off",
        f"{on['tokens_per_s'] / off['tokens_per_s']:.2f}x",
        f"{on['peak_mb'] / off['peak_mb']:.2f}x",
        f"{on['step_mb'] / off['step_mb']:.2f}x",
        f"{on['estimate_mb'] / off['estimate_mb']:.2f}x",
        f"{on['estimate_step_mb'] / off['estimate_step_mb']:.2f}x",
    )
    console.print(table)
    console.print(
        "¹ the peak's rise over the process with the model loaded (weights are there either way); "
        "² mentor.train.memory's estimate of the whole step, and of what it adds to the weights"
    )
    console.print("target: checkpointing cuts the peak memory of the LoRA step to <= 0.6x")


def loop_part(args: argparse.Namespace) -> None:
    rows = {name: _run_row("loop", name, args) for name in ("full", "peft", "ours", "ours-nodrop")}
    if not args.device.startswith("cuda"):
        for name, r in rows.items():
            r["peak_mb"] = _run_row("loop", name, args, for_memory=True).get("peak_mb", math.nan)
    precision = "bf16" if args.device.startswith("cuda") else "fp32"
    table = Table(
        title=f"plain training loop, {'random-init ' if args.random_init else ''}SmolLM2-135M, "
        f"{args.batch} x {args.seq_len} tokens, {precision}, {args.device}, {args.steps} steps"
    )
    for column in ("training", "trainable", "tokens/s", "vs PEFT LoRA", "vs full", "peak MB¹"):
        table.add_column(column)
    peft_speed = rows["peft"].get("tokens_per_s", math.nan)
    full_speed = rows["full"].get("tokens_per_s", math.nan)
    names = {
        "full": "full fine-tuning",
        "peft": "PEFT LoRA r=16, dropout 0.05",
        "ours": "mentor LoRA r=16, dropout 0.05",
        "ours-nodrop": "mentor LoRA r=16, dropout 0",
    }
    for key, r in rows.items():
        if not r:
            continue
        table.add_row(
            names[key],
            f"{r['trainable'] / 1e6:.2f}M",
            f"{r['tokens_per_s']:,.0f}",
            f"{r['tokens_per_s'] / peft_speed:.2f}x",
            f"{r['tokens_per_s'] / full_speed:.2f}x",
            f"{r['peak_mb']:,.0f}",
        )
    console.print(table)
    if not args.device.startswith("cuda"):
        console.print(
            "¹ resident peak of a separate 2-step run with large blocks served by mmap, so it "
            "follows live tensors (glibc's heap would keep freed blocks and blur the rows)"
        )
    console.print(
        "targets: mentor LoRA >= 1.00x PEFT LoRA; peak memory of LoRA well under full; on an "
        "H100 (batch 16 x 1024, bf16) mentor LoRA >= 0.90x full (PEFT: 67K vs 139K tokens/s)"
    )


def pipeline_part(args: argparse.Namespace) -> None:
    rows = {name: _run_row("pipeline", name, args) for name in ("trainer", "ours")}
    table = Table(
        title=f"LoRA r=16, one epoch over {args.examples} PubMedQA answers "
        f"(up to {args.max_length} tokens), batch 8, {args.device}"
    )
    for column in ("pipeline", "real tokens/s", "vs PEFT + Trainer", "seconds", "peak MB"):
        table.add_column(column)
    base = rows["trainer"].get("tokens_per_s", float("nan"))
    names = {
        "trainer": "PEFT + transformers Trainer defaults (fp32, pad per batch)",
        "ours": "mentor defaults (packing, bf16 autocast, logits at targets)",
    }
    for key, r in rows.items():
        if r:
            table.add_row(
                names[key],
                f"{r['tokens_per_s']:,.0f}",
                f"{r['tokens_per_s'] / base:.2f}x",
                f"{r['seconds']:.0f}",
                f"{r['peak_mb']:,.0f}",
            )
    console.print(table)
    console.print("target: mentor defaults >= 2x the real tokens/s of PEFT + Trainer defaults")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--part",
        choices=["loop", "pipeline", "checkpointing", "fsdp", "banking", "all"],
        default="all",
    )
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--random-init", action="store_true", help="SmolLM2 shape, random")
    parser.add_argument("--batch", type=int, default=None, help="[4 on CPU, 16 on CUDA]")
    parser.add_argument("--seq-len", type=int, default=None, help="[256 on CPU, 1024 on CUDA]")
    parser.add_argument("--steps", type=int, default=None, help="[5 on CPU, 20 on CUDA]")
    parser.add_argument("--examples", type=int, default=96, help="PubMedQA answers")
    parser.add_argument("--max-length", type=int, default=1024)
    parser.add_argument("--tiny", action="store_true", help="checkpointing, fsdp: a tiny model")
    parser.add_argument("--row", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args()
    cuda = args.device.startswith("cuda")
    part_cpu = (
        (2, 1024) if args.part == "checkpointing" or (args.row or "").startswith("c") else (4, 256)
    )
    args.batch = args.batch or (16 if cuda else part_cpu[0])
    args.seq_len = args.seq_len or (1024 if cuda else part_cpu[1])
    args.steps = args.steps or (20 if cuda else (2 if args.part == "checkpointing" else 5))
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from mentor.utils.logs import quiet_libraries

    quiet_libraries()
    if args.row:
        part, name, *rest = args.row.split(":")
        if part == "fsdp":
            result = fsdp_row(name, rest[0], args)
        elif part == "checkpointing":
            on = name == "on"
            result = checkpointing_step(
                args.device, args.tiny, on, args.batch, args.seq_len, args.steps
            )
        else:
            result = loop_row(name, args) if part == "loop" else pipeline_row(name, args)
        print(json.dumps(result))
        return
    if args.part == "fsdp":
        fsdp_part(args)
        return
    if args.part in ("loop", "all"):
        loop_part(args)
    if args.part in ("pipeline", "all") and not cuda:
        pipeline_part(args)
    if args.part in ("checkpointing", "all"):
        checkpointing_part(args)
    if args.part == "banking":  # `make bench` runs finetune_banking.py on its own
        banking = Path(__file__).with_name("finetune_banking.py")
        if banking.exists():
            subprocess.run([sys.executable, str(banking)], check=False)


if __name__ == "__main__":
    main()
