"""The teacher-student report: agreement and KL (exact against a model, bounded against a
top-k cache), answer similarity, ratios and the markdown."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from rich.console import Console

from mentor.distill.report import (
    AnswerSimilarity,
    Side,
    TeacherStudentReport,
    TokenAgreement,
    answer_similarity,
    token_agreement,
    token_agreement_cached,
)
from mentor.distill.teacher_cache import build_cache
from mentor.testing import HashEmbedder, tiny_qwen2
from mentor.train.data import IGNORE, Example


def _examples() -> list[Example]:
    gen = torch.Generator().manual_seed(0)
    out = []
    for n in (6, 9, 7):
        ids = torch.randint(5, 200, (n,), generator=gen).tolist()
        out.append(Example(ids, [IGNORE, IGNORE, *ids[2:]]))
    return out


def test_a_model_agrees_with_itself() -> None:
    model, _ = tiny_qwen2(seed=1)
    same = token_agreement(model, model, _examples())
    assert same.top1 == 1.0 and same.kl == pytest.approx(0.0, abs=1e-5)
    assert same.tokens == sum(len(e.input_ids) - 2 for e in _examples())


def test_cached_agreement_is_exact_with_every_token_and_a_lower_bound_with_fewer(
    tmp_path: Path,
) -> None:
    teacher, _ = tiny_qwen2(seed=1)
    student, _ = tiny_qwen2(seed=2, num_layers=1)
    examples = _examples()
    exact = token_agreement(teacher, student, examples)

    def cached(k: int) -> TokenAgreement:
        cache, _ = build_cache(
            tmp_path / f"k{k}", teacher, examples, k=k, teacher_fingerprint="t",
            tokenizer_hash="v", console=Console(quiet=True),
        )  # fmt: skip
        return token_agreement_cached(cache, student, examples)

    full = cached(teacher.config.vocab_size)
    assert full.top1 == exact.top1
    assert full.kl == pytest.approx(exact.kl, rel=1e-2)  # fp16 log-probs in the cache
    few = cached(8)
    assert few.top1 == exact.top1  # the first cached id is the teacher's argmax
    assert few.kl <= exact.kl + 1e-4  # coarsening can only lose divergence


def test_answer_similarity() -> None:
    same = answer_similarity(["the box is red"], ["the box is red"], HashEmbedder())
    assert same.rouge_l == 1.0 and same.bleu == pytest.approx(100.0)
    assert same.cosine == pytest.approx(1.0) and same.share_similar == 1.0
    apart = answer_similarity(["green kettles sing"], ["the box is red"], None)
    assert apart.rouge_l == 0.0 and apart.bleu < 5 and apart.cosine is None
    with pytest.raises(ValueError, match="1 student answers for 2"):
        answer_similarity(["a"], ["a", "b"], None)


def test_report_ratios_and_markdown() -> None:
    report = TeacherStudentReport(
        method="logits",
        metric="token_f1",
        teacher=Side("big", 1000, 4000, {"token_f1": 0.5, "rouge_l": 0.4}, 2.0, 10.0),
        student=Side("small", 250, 1000, {"token_f1": 0.45, "rouge_l": 0.3}, 0.5, 40.0),
        agreement=TokenAgreement(0.8, 0.25, 100),
        similarity=AnswerSimilarity(0.6, 30.0, 0.9, 0.75),
        examples=12,
        student_before={"token_f1": 0.2, "rouge_l": 0.1},
    )
    assert report.retention == pytest.approx(0.9) and report.speedup == pytest.approx(4.0)
    data = report.to_dict()
    assert data["param_ratio"] == 0.25 and data["size_ratio"] == 0.25
    text = report.to_markdown()
    assert "keeps 90.0% of the teacher's token_f1" in text
    assert "| token_f1 (task metric) | 0.500 | 0.450 | 90.0% |" in text
    assert "speedup 4.0x" in text and "top-1 agreement 80.0%" in text
    assert "75% of answers >= 0.85" in text
    assert "Before distillation the student scored 0.200 token_f1 (40.0% of the teacher)" in text
    assert "changed it by +0.250" in text and data["student_before"]["token_f1"] == 0.2


def test_sizes_at_other_precisions_are_not_compared() -> None:
    def report(t_dtype: str, s_dtype: str) -> TeacherStudentReport:
        return TeacherStudentReport(
            method="logits",
            metric="token_f1",
            teacher=Side("big", 1000, 2000, {"token_f1": 0.5}, 2.0, 10.0, t_dtype),
            student=Side("small", 250, 1000, {"token_f1": 0.45}, 0.5, 40.0, s_dtype),
            agreement=None,
            similarity=None,
            examples=4,
        )

    mixed = report("BF16", "F32")
    assert mixed.to_dict()["size_ratio"] is None
    assert "| weights on disk | 2 KB" not in mixed.to_markdown()
    assert "(BF16) | 0 MB (F32) | stored at other precisions |" in mixed.to_markdown()
    assert report("BF16", "BF16").to_dict()["size_ratio"] == 0.5


def test_task_intervals_use_the_one_bootstrap() -> None:
    from mentor.distill.report import task_intervals
    from mentor.evaluate.stats import bootstrap, mean_of, paired_bootstrap

    teacher = [0.9, 0.8, 1.0, 0.7, 0.6, 0.9, 0.8, 1.0]
    student = [0.8, 0.8, 0.9, 0.5, 0.6, 0.7, 0.8, 0.9]
    before = [0.1, 0.2, 0.0, 0.1, 0.3, 0.0, 0.2, 0.1]
    ci = task_intervals(teacher, student, before)
    n = len(teacher)
    assert ci.gap == paired_bootstrap(mean_of(student), mean_of(teacher), n)
    assert ci.gap.value == pytest.approx(sum(student) / n - sum(teacher) / n)
    assert ci.change is not None and ci.change.excludes_zero() and ci.change.value > 0.5
    assert ci.retention is not None
    assert ci.retention.value == pytest.approx(sum(student) / sum(teacher))
    assert ci.retention.low <= ci.retention.value <= ci.retention.high < 1.0
    by_hand = bootstrap(
        lambda rows: sum(student[i] for i in rows) / sum(teacher[i] for i in rows), n
    )
    assert ci.retention == pytest.approx(by_hand)
    same = task_intervals(teacher, teacher)
    assert same.gap.value == same.gap.low == same.gap.high == 0.0 and same.change is None
    assert task_intervals([0.0, 0.0], [0.5, 0.0]).retention is None  # nothing to retain
    with pytest.raises(ValueError, match="different numbers"):
        task_intervals(teacher, student[:3])


def test_the_markdown_gives_the_intervals() -> None:
    from mentor.distill.report import task_intervals

    report = TeacherStudentReport(
        method="logits",
        metric="token_f1",
        teacher=Side("big", 1000, 4000, {"token_f1": 0.5}, 2.0, 10.0),
        student=Side("small", 250, 1000, {"token_f1": 0.45}, 0.5, 40.0),
        agreement=None,
        similarity=None,
        examples=4,
        student_before={"token_f1": 0.2},
        intervals=task_intervals([0.5, 0.6, 0.4, 0.5], [0.4, 0.5, 0.4, 0.5], [0.2] * 4),
    )
    text = report.to_markdown()
    assert "keeps 90.0% of the teacher's token_f1 (95% CI" in text
    assert "Student - teacher token_f1: -0.050 (95% CI" in text
    assert "distillation changed it by +0.250 (95% CI +0.200 to +0.300)" in text
    assert report.to_dict()["intervals"]["gap"]["value"] == pytest.approx(-0.05)
