"""Distillation losses: pure functions over the logits of the supervised positions.

Shapes: ``N`` supervised positions (padding and prompt tokens already dropped, see
:func:`supervised`), vocabulary ``V``, hidden size ``H``. A teacher comes as dense logits
``(N, V)`` or, stored offline, as its top-``k`` log-probabilities and token ids ``(N, k)``.
Per-position divergences return ``(N,)``; :func:`kd_loss` returns the *sum* over positions, the
trainer's convention (it divides by the number of targets of the whole step).

- forward KL, ``KL(p_T || p_S)`` at temperature tau, times tau^2 so that the gradients keep their
  size as tau changes (Hinton et al., 2015). It makes the student cover every mode of the
  teacher.
- reverse KL, ``KL(p_S || p_T)``: mode-seeking, preferred for generative students (MiniLLM, Gu et
  al., 2024).
- generalized JSD with weight beta, ``beta KL(p_T || M) + (1 - beta) KL(p_S || M)``,
  ``M = beta p_T + (1 - beta) p_S`` (GKD, Agarwal et al., 2024); bounded by ln 2 at beta = 1/2.
- the combined loss ``alpha CE(student, labels) + (1 - alpha) tau^2 D(teacher, student)``.

A 150k-token vocabulary makes the ``(N, V)`` logits the largest tensors of a step (4 x 1024
positions of Qwen2.5's 151,936 are 2.5 GB in fp32, per copy). :func:`chunked_kd_loss` starts
from hidden states instead and computes logits, log-softmaxes and the loss one chunk of positions
at a time under activation checkpointing, so only a chunk's logits are ever alive.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F  # noqa: N812
from torch.utils.checkpoint import checkpoint

IGNORE = -100
Divergence = Literal["forward_kl", "reverse_kl", "jsd"]
DIVERGENCES: tuple[Divergence, ...] = ("forward_kl", "reverse_kl", "jsd")


@dataclass(frozen=True)
class TopK:
    """A teacher's ``k`` most likely tokens per position, as stored offline."""

    logprobs: torch.Tensor  # (N, k) log-probabilities at temperature 1, over the full vocabulary
    ids: torch.Tensor  # (N, k) token ids, int64

    def __getitem__(self, rows: slice | torch.Tensor) -> TopK:
        return TopK(self.logprobs[rows], self.ids[rows])


TeacherLogits = torch.Tensor | TopK  # dense logits (N, V) or top-k


def supervised(labels: torch.Tensor) -> torch.Tensor:
    """Mask of the positions that predict a target: ``(B, T)`` labels -> ``(B, T-1)`` bool.

    Position t predicts token t+1, and padding and prompt tokens carry ``-100``."""
    return labels[:, 1:] != IGNORE


def _upcast(x: torch.Tensor) -> torch.Tensor:
    """bf16/fp16 to fp32 for the softmax; fp32 and fp64 stay as they are."""
    return x.float() if x.dtype in (torch.float16, torch.bfloat16) else x


def _log_softmax(logits: torch.Tensor, temperature: float) -> torch.Tensor:
    return F.log_softmax(_upcast(logits) / temperature, dim=-1)


def _kl(log_p: torch.Tensor, log_q: torch.Tensor) -> torch.Tensor:
    """``KL(p || q)`` per row from log-probabilities; 0 * log 0 counts as 0."""
    p = log_p.exp()
    return torch.where(p > 0, p * (log_p - log_q), torch.zeros_like(p)).sum(-1)


def _pair(
    student_logits: torch.Tensor, teacher: TeacherLogits, temperature: float, sparse_support: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    """Student and teacher log-probabilities at ``temperature`` on one support.

    Dense: the whole vocabulary. Top-k: the teacher is renormalised over its k tokens (its tail
    is unknown); the student keeps its full-vocabulary log-probabilities gathered at those ids
    (so forward KL still pulls mass off every other token), or, with ``sparse_support``, is
    renormalised over the same k tokens too, which reverse KL and JSD need to be divergences.
    """
    log_s = _log_softmax(student_logits, temperature)  # (N, V)
    if isinstance(teacher, torch.Tensor):
        return log_s, _log_softmax(teacher, temperature)
    log_t = F.log_softmax(_upcast(teacher.logprobs) / temperature, dim=-1)  # (N, k)
    gathered = log_s.gather(-1, teacher.ids)  # (N, k)
    if sparse_support:
        gathered = gathered - torch.logsumexp(gathered, dim=-1, keepdim=True)
    return gathered, log_t


def forward_kl(
    student_logits: torch.Tensor, teacher: TeacherLogits, temperature: float = 1.0
) -> torch.Tensor:
    """``tau^2 KL(p_T || p_S)`` per position, (N,)."""
    log_s, log_t = _pair(student_logits, teacher, temperature, sparse_support=False)
    return _kl(log_t, log_s) * temperature**2


def reverse_kl(
    student_logits: torch.Tensor, teacher: TeacherLogits, temperature: float = 1.0
) -> torch.Tensor:
    """``tau^2 KL(p_S || p_T)`` per position, (N,)."""
    log_s, log_t = _pair(student_logits, teacher, temperature, sparse_support=True)
    return _kl(log_s, log_t) * temperature**2


def generalized_jsd(
    student_logits: torch.Tensor,
    teacher: TeacherLogits,
    beta: float = 0.5,
    temperature: float = 1.0,
) -> torch.Tensor:
    """``tau^2 [beta KL(p_T || M) + (1 - beta) KL(p_S || M)]`` per position, (N,).

    ``M = beta p_T + (1 - beta) p_S``. beta must lie strictly between 0 and 1: at either end the
    mixture equals one side and the divergence is identically zero (use forward or reverse KL)."""
    if not 0.0 < beta < 1.0:
        raise ValueError(f"JSD beta must be in (0, 1), got {beta}; use forward_kl or reverse_kl")
    log_s, log_t = _pair(student_logits, teacher, temperature, sparse_support=True)
    # log M = logsumexp(log beta + log p_T, log(1 - beta) + log p_S), stable in log space
    log_m = torch.logsumexp(
        torch.stack([log_t + math.log(beta), log_s + math.log(1.0 - beta)]), dim=0
    )
    jsd = beta * _kl(log_t, log_m) + (1.0 - beta) * _kl(log_s, log_m)
    return jsd * temperature**2


def divergence(
    student_logits: torch.Tensor,
    teacher: TeacherLogits,
    kind: Divergence = "forward_kl",
    temperature: float = 1.0,
    beta: float = 0.5,
) -> torch.Tensor:
    """One of the divergences above by name, per position (N,)."""
    if kind == "forward_kl":
        return forward_kl(student_logits, teacher, temperature)
    if kind == "reverse_kl":
        return reverse_kl(student_logits, teacher, temperature)
    if kind == "jsd":
        return generalized_jsd(student_logits, teacher, beta, temperature)
    raise ValueError(f"unknown divergence {kind!r}; choose from {', '.join(DIVERGENCES)}")


def kd_loss(
    student_logits: torch.Tensor,
    teacher: TeacherLogits,
    labels: torch.Tensor | None = None,
    *,
    alpha: float = 0.5,
    temperature: float = 2.0,
    kind: Divergence = "forward_kl",
    beta: float = 0.5,
) -> torch.Tensor:
    """``sum_n [alpha CE_n + (1 - alpha) tau^2 D_n]`` over the N positions (a scalar).

    ``labels`` (N,) are the gold next tokens; ``-100`` drops a position from both terms. With
    ``labels=None`` (soft targets only, e.g. unlabelled text) alpha must be 0."""
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    keep = None if labels is None else labels != IGNORE
    if keep is not None and not bool(keep.all()):
        student_logits = student_logits[keep]
        teacher = teacher[keep]
        labels = labels[keep] if labels is not None else None
    total = _upcast(student_logits).new_zeros(())
    if alpha > 0:
        if labels is None:
            raise ValueError("alpha > 0 needs labels for the cross-entropy term")
        ce = F.cross_entropy(_upcast(student_logits), labels, reduction="sum")
        total = total + alpha * ce
    if alpha < 1:
        d = divergence(student_logits, teacher, kind, temperature, beta)
        total = total + (1.0 - alpha) * d.sum()
    return total


def chunked_kd_loss(
    student_hidden: torch.Tensor,
    student_head: Callable[[torch.Tensor], torch.Tensor],
    teacher: TeacherLogits | Callable[[int, int], TeacherLogits],
    labels: torch.Tensor | None = None,
    *,
    chunk_size: int = 1024,
    alpha: float = 0.5,
    temperature: float = 2.0,
    kind: Divergence = "forward_kl",
    beta: float = 0.5,
) -> torch.Tensor:
    """:func:`kd_loss` from student hidden states (N, H), ``chunk_size`` positions at a time.

    ``student_head`` maps (n, H) hidden states to (n, V) logits. ``teacher`` is dense logits,
    top-k, or a function ``(start, end) -> TeacherLogits`` that computes a chunk's teacher logits on
    demand (an online teacher's head applied to its hidden states). Each chunk runs under
    activation checkpointing: backward recomputes its logits instead of keeping them, so peak
    memory holds one chunk's (chunk, V) logits, not all N. Equal to :func:`kd_loss` on the full
    logits up to float summation order.
    """
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")

    def chunk_loss(hidden: torch.Tensor, start: int, end: int) -> torch.Tensor:
        part = teacher(start, end) if callable(teacher) else teacher[start:end]
        return kd_loss(
            student_head(hidden),
            part,
            None if labels is None else labels[start:end],
            alpha=alpha,
            temperature=temperature,
            kind=kind,
            beta=beta,
        )

    total = _upcast(student_hidden).new_zeros(())
    for start in range(0, student_hidden.shape[0], chunk_size):
        end = min(start + chunk_size, student_hidden.shape[0])
        hidden = student_hidden[start:end]
        if torch.is_grad_enabled() and hidden.requires_grad:
            part = checkpoint(chunk_loss, hidden, start, end, use_reentrant=False)
        else:
            part = chunk_loss(hidden, start, end)
        total = total + part
    return total
