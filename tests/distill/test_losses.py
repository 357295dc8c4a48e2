"""Distillation losses against independent numpy references, edge cases, masking, the tau^2
scaling, top-k teachers and the chunked version against the plain one."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from mentor.distill.losses import (
    IGNORE,
    TopK,
    chunked_kd_loss,
    divergence,
    forward_kl,
    generalized_jsd,
    kd_loss,
    reverse_kl,
    supervised,
)


def _softmax(z: np.ndarray, tau: float = 1.0) -> np.ndarray:
    e = np.exp((z - z.max(-1, keepdims=True)) / tau)
    return e / e.sum(-1, keepdims=True)  # type: ignore[no-any-return]


def _np_kl(p: np.ndarray, q: np.ndarray) -> np.ndarray:
    rows = zip(p, q, strict=True)
    return np.array(
        [sum(a * math.log(a / b) for a, b in zip(pr, qr, strict=True) if a > 0) for pr, qr in rows]
    )


@pytest.fixture
def logits() -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    return torch.randn(6, 11, generator=gen, dtype=torch.float64) * 2, torch.randn(
        6, 11, generator=gen, dtype=torch.float64
    ) * 3


@pytest.mark.parametrize("tau", [1.0, 2.0, 0.5])
def test_forward_and_reverse_kl_match_numpy(logits, tau) -> None:  # type: ignore[no-untyped-def]
    s, t = logits
    p_s, p_t = _softmax(s.numpy(), tau), _softmax(t.numpy(), tau)
    np.testing.assert_allclose(forward_kl(s, t, tau).numpy(), tau**2 * _np_kl(p_t, p_s), rtol=1e-5)
    np.testing.assert_allclose(reverse_kl(s, t, tau).numpy(), tau**2 * _np_kl(p_s, p_t), rtol=1e-5)


@pytest.mark.parametrize("beta", [0.1, 0.5, 0.9])
def test_jsd_matches_numpy_and_is_bounded(logits, beta) -> None:  # type: ignore[no-untyped-def]
    s, t = logits
    p_s, p_t = _softmax(s.numpy()), _softmax(t.numpy())
    m = beta * p_t + (1 - beta) * p_s
    expected = beta * _np_kl(p_t, m) + (1 - beta) * _np_kl(p_s, m)
    got = generalized_jsd(s, t, beta=beta)
    np.testing.assert_allclose(got.numpy(), expected, rtol=1e-5)
    assert bool((got >= 0).all()) and bool((got <= math.log(2) + 1e-9).all())
    if beta == 0.5:  # symmetric in the middle
        torch.testing.assert_close(got, generalized_jsd(t, s, beta=0.5))


def test_equal_distributions_give_zero_and_shifted_logits_do_not_matter(logits) -> None:  # type: ignore[no-untyped-def]
    s, _ = logits
    for kind in ("forward_kl", "reverse_kl", "jsd"):
        zero = divergence(s, s + 5.0, kind)  # type: ignore[arg-type]
        torch.testing.assert_close(zero, torch.zeros(6, dtype=torch.float64), atol=1e-12, rtol=0)


def test_one_hot_teacher_makes_forward_kl_cross_entropy() -> None:
    """A teacher with all its mass on one token: KL(p_T || p_S) = -log p_S(token)."""
    student = torch.randn(4, 7, dtype=torch.float64)
    target = torch.tensor([1, 3, 0, 6])
    teacher = torch.full((4, 7), -1e4, dtype=torch.float64).scatter(1, target[:, None], 0.0)
    ce = torch.nn.functional.cross_entropy(student, target, reduction="none")
    torch.testing.assert_close(forward_kl(student, teacher), ce)


def test_tau_squared_keeps_the_gradient_size() -> None:
    """At a high temperature the gradient of KL at tau is about (z_s - z_t) / (V tau^2): the
    tau^2 factor makes it independent of tau (Hinton et al., 2015)."""
    gen = torch.Generator().manual_seed(1)
    student = torch.randn(3, 50, generator=gen, dtype=torch.float64) * 0.5
    teacher = torch.randn(3, 50, generator=gen, dtype=torch.float64) * 0.5
    norms = []
    for tau in (4.0, 8.0):
        z = student.clone().requires_grad_(True)
        forward_kl(z, teacher, tau).sum().backward()
        assert z.grad is not None
        norms.append(float(z.grad.norm()))
    assert norms[0] == pytest.approx(norms[1], rel=0.05)


def test_kd_loss_combines_ce_and_kl_and_drops_ignored_positions(logits) -> None:  # type: ignore[no-untyped-def]
    s, t = logits
    labels = torch.tensor([2, IGNORE, 5, 0, IGNORE, 10])
    keep = labels != IGNORE
    ce = torch.nn.functional.cross_entropy(s[keep].float(), labels[keep], reduction="sum")
    kl = forward_kl(s[keep], t[keep], 2.0).sum()
    got = kd_loss(s, t, labels, alpha=0.3, temperature=2.0)
    torch.testing.assert_close(got.double(), (0.3 * ce + 0.7 * kl).double(), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(kd_loss(s, t, labels, alpha=1.0).double(), ce.double())
    with pytest.raises(ValueError, match="needs labels"):
        kd_loss(s, t, None, alpha=0.5)
    with pytest.raises(ValueError, match="alpha"):
        kd_loss(s, t, labels, alpha=1.5)
    with pytest.raises(ValueError, match="beta"):
        generalized_jsd(s, t, beta=0.0)


def test_supervised_shifts_labels() -> None:
    labels = torch.tensor([[IGNORE, IGNORE, 4, 5, IGNORE]])
    assert supervised(labels).tolist() == [[False, True, True, False]]


def _topk(t: torch.Tensor, k: int) -> TopK:
    logprobs = torch.log_softmax(t, -1)
    values, ids = logprobs.topk(k, dim=-1)
    return TopK(values, ids)


def test_top_k_with_every_token_equals_the_dense_teacher(logits) -> None:  # type: ignore[no-untyped-def]
    s, t = logits
    full = _topk(t, t.shape[-1])
    for kind in ("forward_kl", "reverse_kl", "jsd"):
        torch.testing.assert_close(
            divergence(s, full, kind, temperature=2.0),  # type: ignore[arg-type]
            divergence(s, t, kind, temperature=2.0),  # type: ignore[arg-type]
        )


def test_top_k_forward_kl_renormalises_the_teacher_over_its_k_tokens(logits) -> None:  # type: ignore[no-untyped-def]
    s, t = logits
    top = _topk(t, 3)
    p_t = torch.softmax(top.logprobs / 2.0, -1)  # temperature applied to the stored log-probs
    log_s = torch.log_softmax(s / 2.0, -1).gather(-1, top.ids)
    expected = 4.0 * (p_t * (p_t.log() - log_s)).sum(-1)
    torch.testing.assert_close(forward_kl(s, top, 2.0), expected)


@pytest.mark.parametrize("kind", ["forward_kl", "reverse_kl", "jsd"])
@pytest.mark.parametrize("sparse", [False, True])
def test_chunked_equals_plain_in_value_and_gradient(kind, sparse) -> None:  # type: ignore[no-untyped-def]
    gen = torch.Generator().manual_seed(3)
    hidden = torch.randn(37, 8, generator=gen, dtype=torch.float64, requires_grad=True)
    head = torch.nn.Linear(8, 29, bias=False).double()
    teacher_logits = torch.randn(37, 29, generator=gen, dtype=torch.float64)
    teacher = _topk(teacher_logits, 5) if sparse else teacher_logits
    labels = torch.randint(0, 29, (37,), generator=gen)
    labels[::4] = IGNORE
    options = {"alpha": 0.4, "temperature": 1.5, "kind": kind}
    plain = kd_loss(head(hidden), teacher, labels, **options)  # type: ignore[arg-type]
    plain_grads = torch.autograd.grad(plain, [hidden, head.weight])
    chunked = chunked_kd_loss(hidden, head, teacher, labels, chunk_size=8, **options)  # type: ignore[arg-type]
    chunked_grads = torch.autograd.grad(chunked, [hidden, head.weight])
    torch.testing.assert_close(chunked.double(), plain.double())
    for a, b in zip(chunked_grads, plain_grads, strict=True):
        torch.testing.assert_close(a, b)


def test_chunked_accepts_a_teacher_computed_per_chunk() -> None:
    gen = torch.Generator().manual_seed(4)
    hidden = torch.randn(20, 8, generator=gen)
    teacher_hidden = torch.randn(20, 8, generator=gen)
    head, teacher_head = torch.nn.Linear(8, 13), torch.nn.Linear(8, 13)
    asked: list[tuple[int, int]] = []

    def on_demand(start: int, end: int) -> torch.Tensor:
        asked.append((start, end))
        with torch.no_grad():
            return teacher_head(teacher_hidden[start:end])

    with torch.no_grad():
        got = chunked_kd_loss(hidden, head, on_demand, None, chunk_size=6, alpha=0.0)
        want = kd_loss(head(hidden), teacher_head(teacher_hidden), None, alpha=0.0)
    assert asked == [(0, 6), (6, 12), (12, 18), (18, 20)]
    torch.testing.assert_close(got, want)


def test_chunked_keeps_one_chunk_of_logits_alive() -> None:
    """Saved activations hold hidden chunks, never the (N, V) logits."""
    hidden = torch.randn(64, 4, requires_grad=True)
    head = torch.nn.Linear(4, 5000, bias=False)
    teacher = torch.randn(64, 5000)
    saved: list[int] = []

    def pack(t: torch.Tensor) -> torch.Tensor:
        saved.append(t.numel())
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        chunked_kd_loss(hidden, head, teacher, None, chunk_size=16, alpha=0.0)
    assert max(saved) < 64 * 5000  # the full logits are never kept for backward
