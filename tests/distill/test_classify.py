"""Classifier distillation: the soft-label loss (CE on labelled texts only), and a student that
learns a trained teacher's labels, including from unlabelled text, with the report written."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
import torch

from mentor.distill.classify import ClassifierKDLoss, SoftRow, collate, distill_classifier
from mentor.distill.losses import IGNORE, forward_kl
from mentor.finetune.classify import train_and_evaluate
from mentor.testing import tiny_sentence_transformer_folder
from mentor.train.classifier import LabelSet, build_classifier
from mentor.train.trainer import TrainSettings

CALM = ["coffee", "kettle", "water", "grinder", "filter", "chair"]
LOUD = ["router", "wireless", "devices", "headphones", "electric", "support"]


def _texts(n: int, seed: int) -> tuple[list[str], list[str]]:
    rng = random.Random(seed)
    texts, labels = [], []
    for i in range(n):
        label, pool = ("calm", CALM) if i % 2 == 0 else ("loud", LOUD)
        texts.append(" ".join(rng.choice(pool) for _ in range(rng.randint(2, 4))))
        labels.append(label)
    return texts, labels


@pytest.fixture(scope="module")
def encoders(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("encoders")
    return (
        tiny_sentence_transformer_folder(root / "teacher", seed=0),
        tiny_sentence_transformer_folder(root / "student", seed=1),
    )


def test_loss_takes_ce_on_labelled_texts_only(encoders: tuple[Path, Path]) -> None:
    model, tok = build_classifier(encoders[1], LabelSet(("calm", "loud")), method="full")
    model.eval()
    rows = [
        SoftRow(tok("coffee water")["input_ids"], 0, torch.tensor([2.0, -1.0])),
        SoftRow(tok("router")["input_ids"], IGNORE, torch.tensor([-1.0, 1.0])),
    ]
    batch = collate(rows, pad_id=int(tok.pad_token_id))
    loss = ClassifierKDLoss(model, alpha=0.3, temperature=2.0)(
        batch.input_ids, batch.attention_mask, batch.labels, batch.teacher_logits
    )
    logits = model.logits(batch.input_ids, batch.attention_mask)
    ce = torch.nn.functional.cross_entropy(logits[:1], torch.tensor([0]), reduction="sum")
    kd = forward_kl(logits, batch.teacher_logits, 2.0).sum()
    torch.testing.assert_close(loss, 0.3 * ce + 0.7 * kd)


def test_student_learns_the_teachers_labels(encoders: tuple[Path, Path], tmp_path: Path) -> None:
    train, test = _texts(40, seed=0), _texts(16, seed=1)
    fast = TrainSettings(epochs=6, batch_size=8, lr=3e-3, warmup=0.0, save_every=1000)
    teacher = train_and_evaluate(
        train, test, out=tmp_path / "teacher", settings=fast, base_model=encoders[0],
        method="full", val_share=0, base_predicted=["calm"] * 16, device="cpu",
    )  # fmt: skip
    assert teacher.tuned_accuracy >= 0.9
    unlabelled = _texts(20, seed=2)[0]
    result = distill_classifier(
        teacher.model_dir, (train[0][:10], train[1][:10]), test, out=tmp_path / "student",
        settings=fast, student=encoders[1], unlabelled=unlabelled + train[0][10:],
        alpha=0.2, val_share=0, device="cpu",
    )  # fmt: skip
    assert result.student_accuracy >= 0.9 and result.agreement >= 0.9
    assert result.unlabelled_rows == 50 and result.train_rows == 10
    assert result.retention == pytest.approx(result.student_accuracy / result.teacher_accuracy)
    report = json.loads((tmp_path / "student" / "report.json").read_text())
    assert report["speedup"] > 0 and (tmp_path / "student" / "model").is_dir()
    assert "| accuracy |" in (tmp_path / "student" / "report.md").read_text()
