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

Part ``fsdp`` runs the trainer itself (``mentor.train.trainer.train``) under ``torchrun``, LoRA
and full fine-tuning, with ``--strategy ddp`` and ``fsdp`` side by side: 2 processes of a tiny
model on a CPU (gloo), one process per GPU (at most 2) of SmolLM2-135M's shape on CUDA. A single
GPU still runs the whole FSDP path (sharding, bf16 gathers, DCP checkpoint, unshard), sharded
over one. :func:`fsdp_rows` returns the rows for ``bench/gpu_check.py``.

Run: ``python bench/finetune_bench.py [--part loop|pipeline|banking|fsdp|all] [--device cuda]``
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


def _run_row(
    part: str, row: str, args: argparse.Namespace, for_memory: bool = False
) -> dict[str, Any]:
    """Run one row in a fresh process (clean peak memory) and read its JSON line.

    ``for_memory`` serves large blocks straight from mmap, so the resident peak follows live
    tensors rather than what glibc's heap keeps after a free; that slows allocation, so speed
    is measured in a separate run without it.
    """
    command = [sys.executable, __file__, "--row", f"{part}:{row}", *sys.argv[1:]]
    env = {**os.environ, **({"MALLOC_MMAP_THRESHOLD_": "65536"} if for_memory else {})}
    if for_memory:
        command += ["--steps", "2"]
    done = subprocess.run(command, capture_output=True, text=True, env=env)
    if done.returncode != 0:
        console.print(f"[red]{part}:{row} failed[/red]\n{done.stderr[-2000:]}")
        return {}
    return json.loads(done.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


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
        "--part", choices=["loop", "pipeline", "banking", "fsdp", "all"], default="all"
    )
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--random-init", action="store_true", help="SmolLM2 shape, random")
    parser.add_argument("--batch", type=int, default=None, help="[4 on CPU, 16 on CUDA]")
    parser.add_argument("--seq-len", type=int, default=None, help="[256 on CPU, 1024 on CUDA]")
    parser.add_argument("--steps", type=int, default=None, help="[5 on CPU, 20 on CUDA]")
    parser.add_argument("--examples", type=int, default=96, help="PubMedQA answers")
    parser.add_argument("--max-length", type=int, default=1024)
    parser.add_argument("--tiny", action="store_true", help="fsdp part: a 64-wide Llama")
    parser.add_argument("--row", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args()
    cuda = args.device.startswith("cuda")
    args.batch = args.batch or (16 if cuda else 4)
    args.seq_len = args.seq_len or (1024 if cuda else 256)
    args.steps = args.steps or (20 if cuda else 5)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from mentor.utils.logs import quiet_libraries

    quiet_libraries()
    if args.row:
        part, name, *rest = args.row.split(":")
        if part == "fsdp":
            result = fsdp_row(name, rest[0], args)
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
    if args.part == "banking":  # `make bench` runs finetune_banking.py on its own
        banking = Path(__file__).with_name("finetune_banking.py")
        if banking.exists():
            subprocess.run([sys.executable, str(banking)], check=False)


if __name__ == "__main__":
    main()
