"""The teacher-student report: how much of the teacher the student kept, and at what cost.

Every distillation run writes it (``report.json`` and ``report.md``):

- the task metric of both on the held-out set and the retention, student / teacher, with
  percentile bootstrap intervals on the retention, on student - teacher and on what distillation
  changed (paired over the same examples; :mod:`mentor.evaluate.stats`);
- top-1 agreement and KL(teacher || student) per token on held-out text (models that share a
  tokenizer; teacher-forced on the reference answers);
- how close the student's answers are to the teacher's: ROUGE-L, corpus BLEU (sacrebleu) and
  the mean cosine similarity of their sentence embeddings, with the share above 0.85 (the usual
  bar for "says the same thing");
- parameter and weight-file size ratios, and measured per-answer latency and generation
  throughput ratios on the same prompts.

A hosted teacher (an OpenAI-compatible endpoint) has no logits and no known size here: agreement,
KL, parameter and size ratios are reported as not available, and its latency is the endpoint's
per request.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import torch
from torch import nn

from mentor.distill.losses import supervised
from mentor.distill.teacher_cache import TeacherCache
from mentor.evaluate.answers import generate_answers
from mentor.evaluate.stats import CONFIDENCE, Estimate, bootstrap, mean_of, paired_bootstrap
from mentor.evaluate.text import rouge_l
from mentor.models.engine import HFEngine
from mentor.models.protocols import ChatMessage, Embedder, SamplingConfig
from mentor.train.data import Example, collate, unpacked
from mentor.train.objectives import backbone_and_head

SIMILAR = 0.85  # embedding cosine above which two answers are taken to say the same thing


@dataclass(frozen=True)
class TimedAnswers:
    answers: list[str]
    seconds: float
    tokens: int  # generated tokens, counted with the model's own tokenizer

    @property
    def seconds_per_answer(self) -> float:
        return self.seconds / max(1, len(self.answers))

    @property
    def tokens_per_s(self) -> float:
        return self.tokens / self.seconds if self.seconds else 0.0


def timed_answers(
    model: Any,
    tokenizer: Any,
    prompts: Sequence[Sequence[ChatMessage]],
    *,
    max_new_tokens: int,
    batch_size: int = 8,
) -> TimedAnswers:
    """Greedy answers to ``prompts`` with the wall time and the number of tokens generated.

    Always on the builtin engine: the report compares teacher and student speed, and both must
    run on the same loop for the ratio to be about the models (the student may also be pruned in
    memory, which vLLM cannot load)."""
    started = time.perf_counter()
    answers = generate_answers(
        HFEngine(model, tokenizer),
        prompts,
        SamplingConfig(max_new_tokens=max_new_tokens),
        batch_size=batch_size,
    )
    seconds = time.perf_counter() - started
    tokens = sum(len(tokenizer(a, add_special_tokens=False)["input_ids"]) for a in answers)
    return TimedAnswers(answers, seconds, tokens)


def _device(model: nn.Module) -> torch.device:
    parameter = next(model.parameters(), None)
    return parameter.device if parameter is not None else torch.device("cpu")


def _on(inputs: dict[str, Any], device: torch.device) -> dict[str, Any]:
    """A collated batch (built on the CPU) moved to the model's device."""
    return {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in inputs.items()}


@dataclass(frozen=True)
class TokenAgreement:
    top1: float  # share of positions where both put the same token first
    kl: float  # mean KL(teacher || student) in nats per token, temperature 1
    tokens: int


@torch.no_grad()
def token_agreement(
    teacher: nn.Module,
    student: nn.Module,
    examples: Sequence[Example],
    *,
    batch_size: int = 4,
    chunk: int = 512,
) -> TokenAgreement:
    """Teacher-forced comparison on the examples' target tokens (same tokenizer required)."""
    agree = 0
    kl_sum = 0.0
    count = 0
    rows = unpacked(examples)
    models = (teacher, student)
    parts = [backbone_and_head(m) for m in models]
    devices = [_device(m) for m in models]  # the teacher may sit on another GPU
    vocab = min(h.out_features for _, h in parts)
    for start in range(0, len(rows), batch_size):
        batch = collate(rows[start : start + batch_size], pad_id=0)  # on the CPU
        keep = supervised(batch.labels)  # (B, T-1)
        hidden = [  # each (N, H) on its model's device
            b(**_on(batch.model_inputs(), d)).last_hidden_state[:, :-1][keep.to(d)]
            for (b, _), d in zip(parts, devices, strict=True)
        ]
        for lo in range(0, hidden[0].shape[0], chunk):
            t_logits, s_logits = (  # (n, V) fp32, both on the student's device
                parts[i][1](hidden[i][lo : lo + chunk])[:, :vocab].float().to(devices[1])
                for i in (0, 1)
            )
            agree += int((t_logits.argmax(-1) == s_logits.argmax(-1)).sum())
            log_t, log_s = t_logits.log_softmax(-1), s_logits.log_softmax(-1)
            kl_sum += float((log_t.exp() * (log_t - log_s)).sum())
            count += t_logits.shape[0]
    if count == 0:
        raise ValueError("no target tokens to compare the teacher and the student on")
    return TokenAgreement(agree / count, kl_sum / count, count)


@torch.no_grad()
def token_agreement_cached(
    cache: TeacherCache, student: nn.Module, examples: Sequence[Example], *, batch_size: int = 4
) -> TokenAgreement:
    """:func:`token_agreement` against a teacher's top-k cache of ``examples`` (no teacher pass).

    Top-1 agreement is exact (the cache's first id is the teacher's argmax). The KL is taken
    between the two distributions coarsened to the teacher's k tokens plus one bucket for the
    rest: a lower bound of the full KL that is tight when the teacher's tail mass is small."""
    agree = 0
    kl_sum = 0.0
    count = 0
    rows = unpacked(examples)
    backbone, head = backbone_and_head(student)
    device = _device(student)
    for start in range(0, len(rows), batch_size):
        part = rows[start : start + batch_size]
        batch = collate(part, pad_id=0)
        keep = supervised(batch.labels).to(device)
        hidden = backbone(**_on(batch.model_inputs(), device)).last_hidden_state[:, :-1][keep]
        log_s = head(hidden).float().log_softmax(-1)  # (N, V)
        top = [cache.rows(i) for row in part for i in row.sources]
        # (N, k) full-vocabulary log-probs and their ids, read from disk onto the CPU
        t_lp = torch.cat([t.logprobs for t in top]).to(device)
        t_ids = torch.cat([t.ids for t in top]).to(device)
        agree += int((log_s.argmax(-1) == t_ids[:, 0]).sum())
        s_lp = log_s.gather(-1, t_ids)
        p_t = t_lp.exp()
        rest_t = (1 - p_t.sum(-1)).clamp_min(1e-12)
        rest_s = (1 - s_lp.exp().sum(-1)).clamp_min(1e-12)
        kl = (p_t * (t_lp - s_lp)).sum(-1) + rest_t * (rest_t.log() - rest_s.log())
        kl_sum += float(kl.sum())
        count += t_lp.shape[0]
    if count == 0:
        raise ValueError("no target tokens to compare the teacher and the student on")
    return TokenAgreement(agree / count, kl_sum / count, count)


@dataclass(frozen=True)
class AnswerSimilarity:
    rouge_l: float
    bleu: float  # corpus BLEU, 0-100
    cosine: float | None  # mean cosine of the two answers' sentence embeddings
    share_similar: float | None  # share of answers with cosine >= SIMILAR


def answer_similarity(
    student: Sequence[str], teacher: Sequence[str], embedder: Embedder | None
) -> AnswerSimilarity:
    """Student answers against the teacher's (the teacher's are the references)."""
    import sacrebleu

    if len(student) != len(teacher) or not student:
        raise ValueError(f"{len(student)} student answers for {len(teacher)} teacher answers")
    rouge = float(np.mean([rouge_l(s, t) for s, t in zip(student, teacher, strict=True)]))
    bleu = float(sacrebleu.corpus_bleu(list(student), [list(teacher)]).score)
    cosine: float | None = None
    similar: float | None = None
    if embedder is not None:
        a = np.asarray(embedder.embed(list(student)), dtype=np.float64)
        b = np.asarray(embedder.embed(list(teacher)), dtype=np.float64)
        norms = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
        cos = (a * b).sum(1) / np.where(norms > 0, norms, 1.0)
        cosine, similar = float(cos.mean()), float((cos >= SIMILAR).mean())
    return AnswerSimilarity(rouge, bleu, cosine, similar)


@dataclass(frozen=True)
class TaskIntervals:
    """How sure the task metric's comparisons are over the held-out examples: percentile
    bootstrap intervals (:mod:`mentor.evaluate.stats`, the one bootstrap every report uses)."""

    gap: Estimate
    """student - teacher, paired: both resampled on the same examples."""
    retention: Estimate | None
    """mean(student) / mean(teacher) on the same resampled examples; None if the teacher has 0."""
    change: Estimate | None
    """student after - before distillation, paired; None without a score before."""


def task_intervals(
    teacher: Sequence[float],
    student: Sequence[float],
    before: Sequence[float] | None = None,
    *,
    seed: int = 0,
) -> TaskIntervals:
    """Intervals of the task metric from per-example scores of each model on the same examples."""
    n = len(teacher)
    if len(student) != n or (before is not None and len(before) != n):
        raise ValueError("the models were scored on different numbers of examples")
    t, s = np.asarray(teacher, dtype=np.float64), np.asarray(student, dtype=np.float64)
    gap = paired_bootstrap(mean_of(student), mean_of(teacher), n, seed=seed)
    retention = None
    if t.sum() > 0:

        def ratio(rows: npt.NDArray[np.intp]) -> float:
            drawn = t[rows].sum()  # a resample of only zeros has no ratio: count it as no loss
            return float(s[rows].sum() / drawn) if drawn > 0 else 1.0

        retention = bootstrap(ratio, n, seed=seed)
    change = None
    if before is not None:
        change = paired_bootstrap(mean_of(student), mean_of(before), n, seed=seed)
    return TaskIntervals(gap, retention, change)


@dataclass(frozen=True)
class Side:
    """One model's numbers."""

    name: str
    params: int | None  # None: unknown (a hosted model)
    size_bytes: int
    scores: dict[str, float] | None  # held-out metric means
    seconds_per_answer: float | None
    tokens_per_s: float | None
    stored_dtype: str = (
        ""  # the dtype of the weights on disk ("" unknown): sizes compare only alike
    )


@dataclass(frozen=True)
class TeacherStudentReport:
    method: str
    metric: str  # the task metric retention is computed on
    teacher: Side
    student: Side
    agreement: TokenAgreement | None
    similarity: AnswerSimilarity | None
    examples: int  # held-out examples scored
    student_before: dict[str, float] | None = None  # the student's scores before distillation
    teacher_hosted: bool = False  # answered by an endpoint: no logits, no known size
    intervals: TaskIntervals | None = None  # the task metric's bootstrap intervals

    @property
    def retention(self) -> float | None:
        t, s = self.teacher.scores, self.student.scores
        if not t or not s or not t.get(self.metric):
            return None
        return s[self.metric] / t[self.metric]

    @property
    def speedup(self) -> float | None:
        t, s = self.teacher.seconds_per_answer, self.student.seconds_per_answer
        return t / s if t and s else None

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["retention"] = self.retention
        data["speedup"] = self.speedup
        t_params, s_params = self.teacher.params, self.student.params
        data["param_ratio"] = s_params / t_params if t_params and s_params is not None else None
        alike = self.teacher.stored_dtype == self.student.stored_dtype
        data["size_ratio"] = (
            self.student.size_bytes / self.teacher.size_bytes
            if self.teacher.size_bytes and alike
            else None  # at other precisions the bytes compare the dtypes, not the models
        )
        return data

    def to_markdown(self) -> str:
        t, s = self.teacher, self.student
        lines = [
            "| | teacher | student | student / teacher |",
            "|---|---|---|---|",
            f"| model | {t.name} | {s.name} | |",
        ]
        if t.params and s.params is not None:
            lines.append(
                f"| parameters | {t.params / 1e6:,.1f}M | {s.params / 1e6:,.1f}M | "
                f"{s.params / t.params:.1%} |"
            )
        else:
            student_params = f"{s.params / 1e6:,.1f}M" if s.params is not None else "unknown"
            lines.append(f"| parameters | not available | {student_params} | not available |")
        if t.size_bytes and s.size_bytes:
            t_type, s_type = (f" ({x.stored_dtype})" if x.stored_dtype else "" for x in (t, s))
            alike = t.stored_dtype == s.stored_dtype or not (t.stored_dtype and s.stored_dtype)
            ratio = f"{s.size_bytes / t.size_bytes:.1%}" if alike else "stored at other precisions"
            lines.append(
                f"| weights on disk | {t.size_bytes / 2**20:,.0f} MB{t_type} | "
                f"{s.size_bytes / 2**20:,.0f} MB{s_type} | {ratio} |"
            )
        if t.scores and s.scores:
            for name in t.scores:
                ratio = f"{s.scores[name] / t.scores[name]:.1%}" if t.scores[name] else "-"
                mark = " (task metric)" if name == self.metric else ""
                lines.append(
                    f"| {name}{mark} | {t.scores[name]:.3f} | {s.scores[name]:.3f} | {ratio} |"
                )
        if t.seconds_per_answer and s.seconds_per_answer:
            lines.append(
                f"| seconds per answer | {t.seconds_per_answer:.2f} | "
                f"{s.seconds_per_answer:.2f} | {s.seconds_per_answer / t.seconds_per_answer:.2f}x "
                f"(speedup {self.speedup:.1f}x) |"
            )
        if t.tokens_per_s and s.tokens_per_s:
            lines.append(
                f"| generated tokens/s | {t.tokens_per_s:,.1f} | {s.tokens_per_s:,.1f} | "
                f"{s.tokens_per_s / t.tokens_per_s:.2f}x |"
            )
        lines.append("")
        retention = self.retention
        ci = self.intervals
        if retention is not None:
            spread = ""
            if ci is not None and ci.retention is not None:
                spread = f" ({CONFIDENCE:.0%} CI {ci.retention.low:.1%} to {ci.retention.high:.1%})"
            lines.append(
                f"**Retention** on {self.examples} held-out examples: the student keeps "
                f"{retention:.1%} of the teacher's {self.metric}{spread}."
            )
        if ci is not None:
            g = ci.gap
            lines.append(
                f"Student - teacher {self.metric}: {g.value:+.3f} ({CONFIDENCE:.0%} CI "
                f"{g.low:+.3f} to {g.high:+.3f}, paired bootstrap over the examples"
                + ("; beyond resampling noise)." if g.excludes_zero() else "; within noise).")
            )
        before = (self.student_before or {}).get(self.metric)
        if before is not None and t.scores and s.scores:
            share = (
                f" ({before / t.scores[self.metric]:.1%} of the teacher)"
                if t.scores[self.metric]
                else ""
            )
            change = ""
            if ci is not None and ci.change is not None:
                change = f" ({CONFIDENCE:.0%} CI {ci.change.low:+.3f} to {ci.change.high:+.3f})"
            lines.append(
                f"Before distillation the student scored {before:.3f} {self.metric}{share}; "
                f"distillation changed it by {s.scores[self.metric] - before:+.3f}{change}."
            )
        if self.agreement is not None:
            a = self.agreement
            lines.append(
                f"- teacher-forced on {a.tokens:,} held-out tokens: top-1 agreement "
                f"{a.top1:.1%}, KL(teacher || student) {a.kl:.3f} nats/token"
            )
        elif self.teacher_hosted:
            lines.append(
                "- token agreement and KL: not available (a hosted teacher gives no logits)"
            )
        else:
            lines.append("- token agreement and KL: not comparable (different tokenizers)")
        if self.similarity is not None:
            m = self.similarity
            close = (
                f"- student answers against the teacher's: ROUGE-L {m.rouge_l:.3f}, "
                f"BLEU {m.bleu:.1f}"
            )
            if m.cosine is not None and m.share_similar is not None:
                close += (
                    f", embedding cosine {m.cosine:.3f} ({m.share_similar:.0%} of answers >= "
                    f"{SIMILAR})"
                )
            lines.append(close)
        return "\n".join(lines) + "\n"
