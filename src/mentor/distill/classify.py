"""Classifier distillation: a fine-tuned encoder classifier teaches a smaller one from its soft
labels (mpnet -> MiniLM on BANKING77, say), optionally on extra unlabelled text.

    teacher logits on every training (and unlabelled) text, once -> student classifier (full or
    LoRA, same label set) -> train on alpha CE(labels) + (1 - alpha) tau^2 KL(teacher || student)
    (unlabelled texts: the KL term only) -> score teacher and student on the test texts ->
    report: accuracy of both, retention, agreement, KL, size and measured inference speedup

The teacher is a folder written by ``mentor finetune --task classify`` (``save_classifier``).
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F  # noqa: N812
from rich.console import Console
from torch import nn

from mentor.distill.config import DistillConfig
from mentor.distill.losses import IGNORE, Divergence, divergence
from mentor.distill.students import count_params
from mentor.evaluate.labels import accuracy
from mentor.models.loading import resolve_device
from mentor.train.classifier import (
    ClassBatch,
    ClassRow,
    Labelled,
    Method,
    SequenceClassifier,
    build_classifier,
    encode,
    load_classifier,
    save_classifier,
    split_validation,
)
from mentor.train.classifier import collate as collate_rows
from mentor.train.lora import LoRAConfig, parameter_report
from mentor.train.trainer import TrainResult, TrainSettings, train
from mentor.utils.fs import atomic_write_text, dir_size
from mentor.utils.tracking import Tracker


@dataclass(frozen=True)
class SoftRow:
    input_ids: list[int]
    label: int  # -100 for unlabelled text
    teacher_logits: torch.Tensor  # (labels,)


@dataclass
class SoftBatch(ClassBatch):
    teacher_logits: torch.Tensor  # (B, labels)


def collate(rows: Sequence[SoftRow], pad_id: int) -> SoftBatch:
    plain = collate_rows([ClassRow(r.input_ids, max(r.label, 0)) for r in rows], pad_id)
    fields = {f.name: getattr(plain, f.name) for f in dataclasses.fields(plain)}
    fields["labels"] = torch.tensor([r.label for r in rows], dtype=torch.long)
    return SoftBatch(**fields, teacher_logits=torch.stack([r.teacher_logits for r in rows]))


class ClassifierKDLoss(nn.Module):
    """Summed ``alpha CE + (1 - alpha) tau^2 D`` over a batch of texts; CE on labelled ones."""

    def __init__(
        self,
        student: SequenceClassifier,
        *,
        alpha: float = 0.5,
        temperature: float = 2.0,
        kind: Divergence = "forward_kl",
    ) -> None:
        super().__init__()
        self.model = student
        self.alpha, self.temperature, self.kind = alpha, temperature, kind

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        labels: torch.Tensor,
        teacher_logits: torch.Tensor,
    ) -> torch.Tensor:
        logits = self.model.logits(input_ids, attention_mask).float()  # (B, labels)
        total = (1.0 - self.alpha) * divergence(
            logits, teacher_logits.float(), self.kind, self.temperature
        ).sum()
        labelled = labels != IGNORE
        if self.alpha > 0 and bool(labelled.any()):
            ce = F.cross_entropy(logits[labelled], labels[labelled], reduction="sum")
            total = total + self.alpha * ce
        return total


@dataclass
class ClassifierKDResult:
    teacher: str
    student: str
    method: str
    labels: int
    train_rows: int
    unlabelled_rows: int
    test_rows: int
    teacher_accuracy: float
    student_accuracy: float
    agreement: float  # share of test texts where both predict the same label
    kl: float  # mean KL(teacher || student) on the test texts, temperature 1
    teacher_params: int
    student_params: int
    teacher_texts_per_s: float
    student_texts_per_s: float
    training: TrainResult
    model_dir: Path

    @property
    def retention(self) -> float:
        return self.student_accuracy / self.teacher_accuracy if self.teacher_accuracy else 0.0

    @property
    def speedup(self) -> float:
        return self.student_texts_per_s / self.teacher_texts_per_s

    def to_dict(self) -> dict[str, Any]:
        data = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        data["training"] = dataclasses.asdict(self.training)
        data["model_dir"] = str(self.model_dir)
        return data | {"retention": self.retention, "speedup": self.speedup}

    def to_markdown(self) -> str:
        return "\n".join(
            [
                f"# Classifier distillation: {self.teacher} -> {self.student} ({self.method})",
                "",
                f"{self.labels} labels; {self.train_rows} labelled and {self.unlabelled_rows} "
                f"unlabelled training texts, {self.test_rows} test texts.",
                "",
                "| | teacher | student | student / teacher |",
                "|---|---|---|---|",
                f"| accuracy | {self.teacher_accuracy:.1%} | {self.student_accuracy:.1%} | "
                f"{self.retention:.1%} |",
                f"| parameters | {self.teacher_params / 1e6:,.1f}M | "
                f"{self.student_params / 1e6:,.1f}M | "
                f"{self.student_params / self.teacher_params:.1%} |",
                f"| texts/s (inference, batch 64) | {self.teacher_texts_per_s:,.0f} | "
                f"{self.student_texts_per_s:,.0f} | {self.speedup:.2f}x |",
                "",
                f"- the two agree on {self.agreement:.1%} of the test texts; "
                f"KL(teacher || student) {self.kl:.3f} nats per text",
                f"- training: {self.training.steps} steps in {self.training.seconds:.0f} s",
                f"- student: {self.model_dir}",
                "",
            ]
        )


def _throughput(model: SequenceClassifier, tokenizer: Any, texts: Sequence[str]) -> float:
    started = time.perf_counter()
    model.predict_logits(texts, tokenizer)
    return len(texts) / (time.perf_counter() - started)


def distill_classifier(
    teacher_dir: Path,
    train_data: Labelled,
    test_data: Labelled,
    *,
    out: Path,
    settings: TrainSettings,
    student: str | Path = "minilm-l6",
    method: Method = "full",
    lora: LoRAConfig | None = None,
    unlabelled: Sequence[str] = (),
    alpha: float = 0.5,
    temperature: float = 2.0,
    kind: Divergence = "forward_kl",
    val_share: float = 0.1,
    max_length: int = 128,
    resume: bool = False,
    device: str = "auto",
    console: Console | None = None,
    tracker: Tracker | None = None,
) -> ClassifierKDResult:
    """Train a ``student`` classifier on ``teacher_dir``'s soft labels; save it to
    ``out/model``; compare the two on ``test_data``; write ``out/report.md`` and ``.json``."""
    console = console or Console(stderr=True)
    target = resolve_device(device)
    teacher, teacher_tok = load_classifier(teacher_dir, device=str(target))
    labels = teacher.labels
    unknown = sorted(set(train_data[1]) - set(labels.names))
    if unknown:
        raise ValueError(f"labels the teacher does not know: {', '.join(unknown[:10])}")
    val_data = None
    if val_share > 0:
        train_data, val_data = split_validation(*train_data, val_share, settings.seed)
    texts = list(train_data[0]) + list(unlabelled)
    with console.status(f"teacher soft labels for {len(texts)} texts"):
        soft = teacher.predict_logits(texts, teacher_tok)  # (texts, labels), once
        val_soft = teacher.predict_logits(val_data[0], teacher_tok) if val_data else None

    model, tokenizer = build_classifier(
        student, labels, method=method, lora=lora, seed=settings.seed, max_length=max_length
    )
    model.to(target)
    ids = labels.ids(train_data[1]) + [IGNORE] * len(unlabelled)
    rows = [
        SoftRow(r.input_ids, label, soft[i])
        for i, (r, label) in enumerate(
            zip(encode(texts, [0] * len(texts), tokenizer, max_length), ids, strict=True)
        )
    ]
    val_rows = None
    if val_data is not None and val_soft is not None:
        encoded = encode(val_data[0], labels.ids(val_data[1]), tokenizer, max_length)
        val_rows = [SoftRow(r.input_ids, r.label, val_soft[i]) for i, r in enumerate(encoded)]
    console.print(f"student ({method}) {student}: {parameter_report(model)}")
    pad_id = int(tokenizer.pad_token_id or 0)
    training = train(
        ClassifierKDLoss(model, alpha=alpha, temperature=temperature, kind=kind),
        rows,
        partial(collate, pad_id=pad_id),
        settings,
        out,
        val_rows=val_rows,
        resume=resume,
        device=target,
        console=console,
        tracker=tracker,
    )
    model_dir = save_classifier(
        model,
        out / "model",
        tokenizer=tokenizer,
        base_model=str(student),
        lora=(lora or LoRAConfig()) if method == "lora" else None,
    )
    test_texts, gold = test_data
    t_logits = teacher.predict_logits(test_texts, teacher_tok)
    s_logits = model.predict_logits(test_texts, tokenizer)
    kl = float(divergence(s_logits, t_logits, "forward_kl", 1.0).mean())
    result = ClassifierKDResult(
        teacher=str(teacher_dir),
        student=str(student),
        method=method,
        labels=len(labels),
        train_rows=len(train_data[0]),
        unlabelled_rows=len(unlabelled),
        test_rows=len(gold),
        teacher_accuracy=accuracy(labels.decode(t_logits.argmax(-1).tolist()), gold),
        student_accuracy=accuracy(labels.decode(s_logits.argmax(-1).tolist()), gold),
        agreement=float((t_logits.argmax(-1) == s_logits.argmax(-1)).float().mean()),
        kl=kl,
        teacher_params=count_params(teacher),
        student_params=count_params(model),
        teacher_texts_per_s=_throughput(teacher, teacher_tok, test_texts),
        student_texts_per_s=_throughput(model, tokenizer, test_texts),
        training=training,
        model_dir=model_dir,
    )
    atomic_write_text(out / "report.md", result.to_markdown())
    atomic_write_text(out / "report.json", json.dumps(result.to_dict(), indent=2, default=str))
    console.print(f"student weights: {dir_size(model_dir) / 2**20:,.1f} MB at {model_dir}")
    return result


def run_classifier_distill(
    config: DistillConfig,
    *,
    resume: bool = False,
    console: Console,
    tracker: Tracker | None = None,
) -> ClassifierKDResult:
    """``mentor distill`` on classification data: the teacher is a classifier folder.

    Without ``eval``, a stratified ``val_share`` (seed + 1) is held out as the test set first."""
    from mentor.train.classifier import load_classification

    data = load_classification(config.data)
    if config.eval is not None:
        test = load_classification(config.eval)
    else:
        data, test = split_validation(*data, config.val_share or 0.1, config.train.seed + 1)
        console.print(f"no --eval file: {len(test[0])} training texts held out as the test set")
    kd = config.kd
    return distill_classifier(
        Path(config.teacher),
        data,
        test,
        out=config.out,
        settings=config.train,
        student=config.student,
        method=config.student_method,
        lora=config.lora.to_config(),
        alpha=kd.alpha,
        temperature=kd.temperature,
        kind=kd.divergence,
        unlabelled=load_texts(config.unlabelled) if config.unlabelled else (),
        val_share=config.val_share,
        max_length=min(config.max_length, 512),
        resume=resume,
        device=config.device,
        console=console,
        tracker=tracker,
    )


def load_texts(path: Path) -> list[str]:
    """Texts without labels: a .txt file (one per non-empty line), or CSV/JSONL with ``text``."""
    if path.suffix == ".txt":
        try:
            return [
                line.strip()
                for line in path.read_text(encoding="utf-8").splitlines()
                if line.strip()
            ]
        except (OSError, UnicodeDecodeError) as exc:
            raise ValueError(f"{path}: cannot read ({exc})") from exc
    if path.suffix == ".csv":
        import csv

        with path.open(newline="", encoding="utf-8") as fh:
            reader = csv.DictReader(fh)
            if "text" not in (reader.fieldnames or []):
                raise ValueError(f"{path}: no 'text' column (columns: {reader.fieldnames})")
            return [row["text"] for row in reader if row["text"].strip()]
    texts = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise ValueError(f"{path}:{number}: not JSON ({exc.msg})") from None
        if not isinstance(record, dict) or not isinstance(record.get("text"), str):
            raise ValueError(f"{path}:{number}: expected an object with a 'text' string")
        texts.append(record["text"])
    return texts
