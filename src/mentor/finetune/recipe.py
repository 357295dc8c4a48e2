"""``mentor finetune``: supervised fine-tuning of a causal LM, LoRA, QLoRA or full, start to
finish (QLoRA's own steps: :mod:`mentor.finetune.qlora`).

    load data (fails before training on any bad line) -> load the model -> score the base on the
    held-out set and on general text -> add LoRA (or unfreeze all) -> train -> save the adapter
    (PEFT format) or the whole model -> score the tuned model -> report.md / report.json

Run ``mentor finetune --model smollm2-135m-instruct --data train.jsonl --eval test.jsonl``; under
``torchrun --nproc_per_node N`` the same command trains with DDP (process 0 evaluates and saves).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from rich.console import Console

from mentor.evaluate.answers import (
    EvalItem,
    GenerationScores,
    generate_answers,
    load_eval_items,
    score_generations,
)
from mentor.evaluate.compare import BeforeAfter, compare_generation
from mentor.evaluate.perplexity import general_sample, perplexity
from mentor.finetune import qlora
from mentor.finetune.config import FinetuneConfig
from mentor.models.backends import open_engine, resolve_engine
from mentor.models.protocols import SamplingConfig
from mentor.train.adapters import save_adapter
from mentor.train.checkpointing import setup_checkpointing
from mentor.train.data import collate, load_sft_data, pack, split_validation, unpacked
from mentor.train.distributed import World, setup
from mentor.train.lora import add_lora, mark_trainable, parameter_report
from mentor.train.objectives import CausalLMLoss
from mentor.train.trainer import TrainResult, train, use_bf16
from mentor.utils.fs import atomic_dir, atomic_write_text
from mentor.utils.tracking import Tracker


@dataclass
class Scores:
    """One model's numbers on the held-out set and on general text."""

    answers: GenerationScores | None
    general_perplexity: float


@dataclass
class FinetuneReport:
    out: Path
    saved: Path
    parameters: str
    train: TrainResult
    train_examples: int
    val_examples: int
    rows: int
    before_after: BeforeAfter | None
    general_perplexity: tuple[float, float]
    overlong: tuple[str, ...] = ()
    """What was done with examples longer than max_length (truncate or drop), one line a file."""
    logit_gap: qlora.LogitGap | None = None
    """qlora: the 4-bit-trained model against the adapter on the unquantized base."""


def score(
    model: Any,
    tokenizer: Any,
    items: list[EvalItem] | None,
    config: FinetuneConfig,
    console: Console,
    label: str,
    *,
    source: str | Path,
    adapter: Path | None = None,
) -> Scores:
    """``model`` (``source`` on disk, with ``adapter`` applied) on the held-out set, answered by
    the engine ``config.engine`` picks, and on general text."""
    answers = None
    if items is not None:
        what = f"answering {len(items)} held-out questions with the {label} model"
        with (
            console.status(f"{what} ({config.engine.kind} engine)"),
            open_engine(
                source,
                settings=config.engine,
                loaded=(model, tokenizer),
                adapter=adapter,
                device=config.device,
            ) as engine,
        ):
            predictions = generate_answers(
                engine,
                [i.prompt for i in items],
                SamplingConfig(max_new_tokens=config.eval_max_new_tokens),
            )
        answers = score_generations(predictions, [i.reference for i in items])
    with console.status(f"perplexity of the {label} model on general text"):
        general = perplexity(model, tokenizer, general_sample(), seq_len=512)
    return Scores(answers, general)


def run_sft(
    config: FinetuneConfig,
    *,
    resume: bool = False,
    console: Console,
    tracker: Tracker | None = None,
) -> FinetuneReport:
    """The run ``config`` describes; ``tracker`` gets every training step's metrics."""
    from mentor.models.loading import load_causal_lm, load_tokenizer

    if config.eval is not None:  # vLLM refuses a model it cannot run now, not after training
        resolve_engine(config.engine, config.model, fallback=False)
    world, device = setup(config.device, config.train.strategy)
    tokenizer = load_tokenizer(config.model)
    data = load_sft_data(config.data, tokenizer, config.max_length, config.overlong)
    examples = data.examples
    overlong = [r for r in (data.overlong,) if r is not None]
    if config.val is not None:
        val_data = load_sft_data(config.val, tokenizer, config.max_length, config.overlong)
        train_examples, val_examples = examples, val_data.examples
        overlong += [r for r in (val_data.overlong,) if r is not None]
    else:
        train_examples, val_examples = split_validation(
            examples, config.val_share, config.train.seed
        )
    for cut in overlong:  # truncate or drop: said loudly, before anything else happens
        console.print(f"[yellow]warning:[/yellow] {cut}", highlight=False, soft_wrap=True)
    bf16 = use_bf16(config.train.precision, device)
    # A LoRA base is frozen, so it can sit in bf16; full fine-tuning keeps fp32 master weights.
    adapter = config.method in ("lora", "qlora")
    dtype = torch.bfloat16 if (adapter and bf16) else torch.float32
    fingerprint = None  # qlora: of the unquantized base, which the adapter is saved for
    if config.method == "qlora":
        if world.distributed:
            raise ValueError("method qlora trains in one process; run it without torchrun")
        model, fingerprint = qlora.load_quantized_base(config, dtype, device, console)
    else:
        with console.status(f"loading {config.model}"):
            model = load_causal_lm(config.model, dtype=dtype, device=str(device))
    # read once, before training: a broken test file fails now, not after an hour
    items = load_eval_items(config.eval)[: config.eval_limit] if config.eval else None
    before = None
    if world.is_main:
        before = score(model, tokenizer, items, config, console, "base", source=config.model)

    torch.manual_seed(config.train.seed)  # the adapter's init is the same in every process
    if adapter:
        add_lora(model, config.lora.to_config())
        mark_trainable(model, "default")
    else:
        model.requires_grad_(True)
    params = parameter_report(model)
    console.print(f"{config.method}: {params}")
    tokens = config.train.batch_size * config.max_length  # a full row: packed, or the longest
    setup_checkpointing(
        model,
        config.train.gradient_checkpointing,
        tokens=tokens,
        logit_positions=tokens,
        bf16=bf16,
        device=device,
        world=world,
        console=console,
    )
    rows = pack(train_examples, config.max_length) if config.packing else unpacked(train_examples)
    val_rows = unpacked(val_examples) if val_examples else None
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    result = train(
        CausalLMLoss(model),
        rows,
        lambda r: collate(r, pad_id),
        qlora.train_settings(config, device, console) if config.method == "qlora" else config.train,
        config.out,
        val_rows=val_rows,
        resume=resume,
        world=world,
        device=device,
        console=console,
        tracker=tracker,
    )
    model.eval()
    saved = save_model(model, tokenizer, config, result, world, fingerprint)
    gap = None
    if config.method == "qlora" and config.qlora.gap_tokens:
        held_out = [e.input_ids for e in val_examples] or [r.input_ids for r in rows]
        gap_rows = qlora.held_out_rows(held_out, config.qlora.gap_tokens, config.max_length)
        with console.status("comparing the 4-bit-trained model with the unquantized base"):
            gap = qlora.logit_gap(model, config, saved, gap_rows, dtype, device)
        console.print(gap.to_markdown().removeprefix("- "))
    before_after, general = None, (float("nan"), float("nan"))
    if world.is_main and before is not None:
        lora = adapter  # vLLM serves the adapter beside the base weights
        after = score(
            model,
            tokenizer,
            items,
            config,
            console,
            "tuned",
            source=config.model if lora else saved,
            adapter=saved if lora else None,
        )
        general = (before.general_perplexity, after.general_perplexity)
        if before.answers is not None and after.answers is not None:
            before_after = compare_generation(before.answers, after.answers, *general)
    report = FinetuneReport(
        out=config.out,
        saved=saved,
        parameters=str(params),
        train=result,
        train_examples=len(train_examples),
        val_examples=len(val_examples),
        rows=len(rows),
        before_after=before_after,
        general_perplexity=general,
        overlong=tuple(str(r) for r in overlong),
        logit_gap=gap,
    )
    if world.is_main:
        write_report(report, config)
    world.barrier()
    return report


def save_model(
    model: Any,
    tokenizer: Any,
    config: FinetuneConfig,
    result: TrainResult,
    world: World,
    fingerprint: str | None = None,
) -> Path:
    """The adapter (PEFT format) or the whole model, under the run folder. ``fingerprint``: the
    base's, when the model in memory is not that base as loaded (qlora's 4-bit copy of it)."""
    if config.method in ("lora", "qlora"):
        target = config.out / "adapter"
        if world.is_main:
            save_adapter(
                model,
                target,
                config=config.lora.to_config(),
                base_model=config.model,
                extra={"steps": result.steps, "best_val_loss": result.best_val_loss},
                fingerprint=fingerprint,
            )
        return target
    target = config.out / "model"
    if world.is_main:
        with atomic_dir(target) as tmp:
            model.save_pretrained(str(tmp), safe_serialization=True)
            tokenizer.save_pretrained(str(tmp))
    return target


def write_report(report: FinetuneReport, config: FinetuneConfig) -> None:
    data = {
        "config": json.loads(config.model_dump_json()),
        "saved": str(report.saved),
        "parameters": report.parameters,
        "train": asdict(report.train),
        "examples": {
            "train": report.train_examples,
            "validation": report.val_examples,
            "rows": report.rows,
        },
        "overlong": list(report.overlong),
        "general_perplexity": {
            "base": report.general_perplexity[0],
            "tuned": report.general_perplexity[1],
        },
        "before_after": report.before_after.to_dict() if report.before_after else None,
        "logit_gap": asdict(report.logit_gap) if report.logit_gap else None,
    }
    atomic_write_text(config.out / "report.json", json.dumps(data, indent=2, default=str) + "\n")
    atomic_write_text(config.out / "report.md", report_markdown(report, config))


def report_markdown(report: FinetuneReport, config: FinetuneConfig) -> str:
    t = report.train
    lines = [
        f"# Fine-tuning report: {config.model}, {config.method}",
        "",
        f"- data: `{config.data}` ({report.train_examples} training examples in {report.rows} "
        f"rows of at most {config.max_length} tokens, {report.val_examples} for validation)",
        *(f"- over-long examples: {line}" for line in report.overlong),
        f"- trainable parameters: {report.parameters}",
        f"- steps: {t.steps}" + (f" (resumed at {t.resumed_from})" if t.resumed_from else ""),
        f"- final training loss: {t.train_loss:.4f}"
        + (
            f"; best validation loss {t.best_val_loss:.4f} at step {t.best_step}"
            if t.best_val_loss is not None
            else ""
        ),
        f"- {t.tokens:,} tokens in {t.seconds:.0f} s ({t.tokens_per_s:,.0f} tokens/s in "
        f"training steps), peak memory {t.peak_memory_mb:,.0f} MB",
        f"- saved: `{report.saved}`",
        *([report.logit_gap.to_markdown()] if report.logit_gap else []),
        "",
        "![loss curve](loss_curve.png)",
        "",
        "## Base against tuned",
        "",
    ]
    if report.before_after is not None:
        lines.append(report.before_after.to_markdown())
    else:
        base, tuned = report.general_perplexity
        lines += [
            f"General-text perplexity: base {base:.2f}, tuned {tuned:.2f}.",
            "",
            "No held-out set was given (`--eval test.jsonl`), so answers were not scored.",
        ]
    return "\n".join(lines) + "\n"
