"""Distillation benchmark: how much of the teacher a student keeps, and how much faster it is.

Part ``banking`` (BANKING77, all-mpnet-base-v2 -> all-MiniLM-L6-v2): the mpnet classifier is
fine-tuned on labels (the teacher), then MiniLM learns from its soft labels; beside them, the same
MiniLM fine-tuned on labels alone. Every figure is on a stratified tenth of train.csv (seed 0)
that nothing trains or selects on (the official test split stays held out). Targets: the
distilled student keeps >= 97% of the teacher's accuracy and runs >= 3x faster.

Part ``generative`` (Tidepool support chats, examples/finetune): Qwen2.5-Coder-1.5B-Instruct ->
0.5B by logit KD (LoRA student, cached top-32 teacher) and -> SmolLM2-135M by sequence KD, with
the teacher-student report of each run. Target: the student keeps >= 90% of the teacher's token
F1 on the held-out questions; the table says what it actually keeps. ``--quick`` trims epochs
and the test set to fit a 2-core CPU in well under an hour; the full profile is the default.

Run: ``python bench/distill_bench.py [--part banking|generative|all] [--quick]``; runs are kept
under ``$MENTOR_HOME/bench`` and a finished run is reused (delete its folder to measure again).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from mentor.utils.fs import mentor_home
from mentor.utils.logs import quiet_libraries

console = Console()
ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data" / "banking77"
SUPPORT = ROOT / "examples" / "finetune"
TARGET_RETENTION, TARGET_SPEEDUP, TARGET_GENERATIVE = 0.97, 3.0, 0.90


def _settings(epochs: float, lr: float, rows: int, batch: int = 32) -> Any:
    from mentor.train.trainer import TrainSettings

    steps = max(1, rows // batch)
    return TrainSettings(
        epochs=epochs, batch_size=batch, lr=lr, weight_decay=0.01, warmup=0.06,
        eval_every=max(1, steps // 2), patience=None, save_every=10**9, keep=1, seed=0,
    )  # fmt: skip


def banking(args: argparse.Namespace) -> None:
    from mentor.distill.classify import distill_classifier
    from mentor.finetune.classify import train_and_evaluate
    from mentor.train.classifier import load_classification, split_validation

    if not (DATA / "train.csv").exists():
        console.print(f"BANKING77 not found at {DATA}; skipping")
        return
    work = mentor_home() / "bench"
    texts, labels = load_classification(DATA / "train.csv")
    if args.limit:
        (texts, labels), _ = split_validation(texts, labels, 1 - args.limit / len(texts), 0)
    train, held_out = split_validation(texts, labels, share=0.1, seed=0)
    rows = int(len(train[0]) * 0.9)
    console.print(f"BANKING77: {len(train[0])} training texts, {len(held_out[0])} held out")

    teacher_dir = work / f"banking77-mpnet-teacher{'-quick' if args.quick else ''}"
    if (teacher_dir / "report.json").exists():
        teacher = json.loads((teacher_dir / "report.json").read_text())
        console.print(f"teacher reused: {teacher_dir}")
    else:
        console.print("[bold]teacher: mpnet fine-tuned on labels[/bold]")
        settings = _settings(args.teacher_epochs, args.teacher_lr, rows)
        result = train_and_evaluate(
            train, held_out, out=teacher_dir, settings=settings, base_model="mpnet-base",
            method="full", base_predicted=[held_out[1][0]] * len(held_out[1]),
        )  # fmt: skip
        teacher = result.to_dict()

    runs: dict[str, dict[str, Any]] = {}
    kd_dir = work / f"banking77-minilm-kd{'-quick' if args.quick else ''}"
    if (kd_dir / "report.json").exists():
        runs["kd"] = json.loads((kd_dir / "report.json").read_text())
    else:
        console.print("[bold]student: MiniLM distilled from the teacher's soft labels[/bold]")
        runs["kd"] = distill_classifier(
            teacher_dir / "model", train, held_out, out=kd_dir,
            settings=_settings(args.epochs, 1e-4, rows), student="minilm-l6", method="full",
            alpha=0.5, temperature=2.0,
        ).to_dict()  # fmt: skip
    labels_dir = work / f"banking77-minilm-labels{'-quick' if args.quick else ''}"
    same_run = work / "banking77-full"  # bench/finetune_banking.py's full run: same split, settings
    if not args.quick and not args.limit and (same_run / "report.json").exists():
        labels_dir = same_run
    if (labels_dir / "report.json").exists():
        runs["labels"] = json.loads((labels_dir / "report.json").read_text())
    else:
        console.print("[bold]baseline: the same MiniLM fine-tuned on labels alone[/bold]")
        runs["labels"] = train_and_evaluate(
            train, held_out, out=labels_dir, settings=_settings(args.epochs, 1e-4, rows),
            base_model="minilm-l6", method="full",
            base_predicted=[held_out[1][0]] * len(held_out[1]),
        ).to_dict()  # fmt: skip

    kd = runs["kd"]
    table = Table(title=f"BANKING77, held-out tenth of train.csv ({len(held_out[0])} texts)")
    for column in ("model", "accuracy", "of teacher", "params", "texts/s", "train time"):
        table.add_column(column)
    teacher_acc = kd["teacher_accuracy"]
    table.add_row(
        "teacher: mpnet-base fine-tuned", f"{teacher_acc:.1%}", "100%",
        f"{kd['teacher_params'] / 1e6:.0f}M", f"{kd['teacher_texts_per_s']:,.0f}",
        f"{teacher['training']['seconds'] / 60:.0f} min",
    )  # fmt: skip
    table.add_row(
        "student: MiniLM distilled (soft labels)", f"{kd['student_accuracy']:.1%}",
        f"{kd['retention']:.1%}", f"{kd['student_params'] / 1e6:.0f}M",
        f"{kd['student_texts_per_s']:,.0f} ({kd['speedup']:.1f}x)",
        f"{kd['training']['seconds'] / 60:.0f} min",
    )  # fmt: skip
    base = runs["labels"]
    table.add_row(
        "MiniLM fine-tuned on labels alone", f"{base['tuned_accuracy']:.1%}",
        f"{base['tuned_accuracy'] / teacher_acc:.1%}", f"{base['base_params'] / 1e6:.0f}M", "-",
        f"{base['training']['seconds'] / 60:.0f} min",
    )  # fmt: skip
    console.print(table)
    verdict = kd["retention"] >= TARGET_RETENTION and kd["speedup"] >= TARGET_SPEEDUP
    console.print(
        f"targets: retention >= {TARGET_RETENTION:.0%} and speedup >= {TARGET_SPEEDUP:.0f}x: "
        f"{'met' if verdict else 'NOT met'} ({kd['retention']:.1%}, {kd['speedup']:.1f}x)"
    )


def _distil(out: Path, **settings: Any) -> dict[str, Any]:
    from mentor.distill.config import DistillConfig
    from mentor.distill.recipe import run_distill

    if (out / "report.json").exists():
        return json.loads((out / "report.json").read_text())  # type: ignore[no-any-return]
    from mentor.train.checkpoint import latest

    config = DistillConfig.model_validate({"out": str(out), **settings})
    resume = latest(out / "checkpoints") is not None  # an interrupted run continues
    run_distill(config, resume=resume, console=Console(stderr=True))
    return json.loads((out / "report.json").read_text())  # type: ignore[no-any-return]


def generative(args: argparse.Namespace) -> None:
    work = mentor_home() / "bench"
    tag = "-quick" if args.quick else ""
    common = {
        "data": str(SUPPORT / "support_train.jsonl"),
        "eval": str(SUPPORT / "support_test.jsonl"),
        "eval_limit": 12 if args.quick else None,
        "eval_max_new_tokens": 96,
        "max_length": 256,
        "student_method": "lora",
        "lora": {"r": 16, "alpha": 32},
        "train": {"epochs": 1 if args.quick else 3, "batch_size": 4, "lr": 5e-4,
                  "eval_every": 20, "save_every": 20},
    }  # fmt: skip
    runs = {
        "logits": _distil(
            work / f"support-qwen-logits{tag}",
            teacher="qwen2.5-coder-1.5b-instruct",
            student="qwen2.5-coder-0.5b-instruct",
            method="logits",
            kd={"alpha": 0.5, "temperature": 2.0, "top_k": 32},
            **common,
        ),
        "sequence": _distil(
            work / f"support-qwen-smollm2-sequence{tag}",
            teacher="qwen2.5-coder-1.5b-instruct",
            student="smollm2-135m-instruct",
            method="sequence",
            generation={"max_new_tokens": 128, "batch_size": 8},
            **common,
        ),
    }
    table = Table(title="Tidepool support questions, teacher Qwen2.5-Coder-1.5B-Instruct")
    for column in ("student", "teacher F1", "student F1", "kept", "agreement", "speedup"):
        table.add_column(column)
    for name, run in runs.items():
        pair = run["teacher_student"]
        agreement = pair["agreement"]
        table.add_row(
            f"{pair['student']['name']} ({name} KD)",
            f"{pair['teacher']['scores']['token_f1']:.3f}",
            f"{pair['student']['scores']['token_f1']:.3f}",
            f"{pair['retention']:.1%}" if pair["retention"] is not None else "-",
            f"{agreement['top1']:.1%}" if agreement else "n/a",
            f"{pair['speedup']:.1f}x" if pair["speedup"] else "-",
        )
    console.print(table)
    console.print(f"target: the student keeps >= {TARGET_GENERATIVE:.0%} of the teacher's F1")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--part", choices=["banking", "generative", "all"], default="all")
    parser.add_argument("--quick", action="store_true", help="fewer epochs and test questions")
    parser.add_argument("--epochs", type=float, default=None, help="students [4; 1 --quick]")
    parser.add_argument("--teacher-epochs", type=float, default=None, help="[as --epochs]")
    parser.add_argument(
        "--teacher-lr", type=float, default=1e-4, help="[1e-4: a fresh 77-way head needs it]"
    )
    parser.add_argument("--limit", type=int, default=None, help="use about N rows of train.csv")
    args = parser.parse_args()
    args.epochs = args.epochs or (1.0 if args.quick else 4.0)
    args.teacher_epochs = args.teacher_epochs or args.epochs
    quiet_libraries()
    if args.part in ("banking", "all"):
        banking(args)
    if args.part in ("generative", "all"):
        generative(args)


if __name__ == "__main__":
    main()
