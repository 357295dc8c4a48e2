"""The logit-distillation objective: equal to the loss on the models' full logits, the same with
an online teacher and with a cache holding every token, aligned across packed rows, and able to
pull a student towards its teacher."""

from __future__ import annotations

from pathlib import Path

import torch
from rich.console import Console

from mentor.distill.data import collate_with_teacher
from mentor.distill.losses import kd_loss, supervised
from mentor.distill.objectives import LogitKDLoss
from mentor.distill.teacher_cache import build_cache
from mentor.testing import tiny_qwen2
from mentor.train.data import IGNORE, Example, collate, pack
from mentor.train.trainer import TrainSettings, train

QUIET = Console(quiet=True)


def _examples(n: int, seed: int = 0) -> list[Example]:
    gen = torch.Generator().manual_seed(seed)
    out = []
    for i in range(n):
        ids = torch.randint(5, 200, (5 + i % 5,), generator=gen).tolist()
        out.append(Example(ids, [IGNORE, IGNORE, *ids[2:]]))
    return out


def _tensors(batch: object) -> dict[str, torch.Tensor]:
    """The batch's tensor fields, as the trainer passes them to the objective."""
    return {k: v for k, v in vars(batch).items() if isinstance(v, torch.Tensor)}


def _pair():  # type: ignore[no-untyped-def]
    teacher, tok = tiny_qwen2(seed=1, num_layers=3)
    student, _ = tiny_qwen2(seed=2, num_layers=1, hidden_size=32, intermediate_size=64)
    return teacher.eval(), student, tok


def test_online_loss_equals_kd_loss_on_full_logits() -> None:
    teacher, student, _ = _pair()
    batch = collate(pack(_examples(6), 32), pad_id=0)
    objective = LogitKDLoss(student, teacher, alpha=0.3, temperature=2.0, chunk_size=7)
    got = objective(**_tensors(batch))
    keep = supervised(batch.labels)
    inputs = batch.model_inputs()
    s_logits = student(**inputs).logits[:, :-1][keep]
    with torch.no_grad():
        t_logits = teacher(**inputs).logits[:, :-1][keep]
    want = kd_loss(s_logits, t_logits, batch.labels[:, 1:][keep], alpha=0.3, temperature=2.0)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


def test_cached_top_k_of_every_token_matches_the_online_teacher(tmp_path: Path) -> None:
    teacher, student, _ = _pair()
    examples = _examples(9)
    cache, _ = build_cache(
        tmp_path,
        teacher,
        examples,
        k=teacher.config.vocab_size,
        teacher_fingerprint="t",
        tokenizer_hash="v",
        batch_size=4,
        shard_size=4,
        console=QUIET,
    )
    rows = pack(examples, 24)  # several examples per row, laid in best-fit order
    assert any(len(r.sources) > 1 for r in rows)
    offline = LogitKDLoss(student, None, alpha=0.0, kind="reverse_kl")
    online = LogitKDLoss(student, teacher, alpha=0.0, kind="reverse_kl")
    for start in range(0, len(rows), 2):
        part = rows[start : start + 2]
        cached = collate_with_teacher(part, 0, cache)
        plain = collate(part, 0)
        got = offline(**_tensors(cached))
        want = online(**_tensors(plain))
        torch.testing.assert_close(got, want, rtol=2e-3, atol=2e-3)  # fp16 log-probs


def test_training_on_the_cache_brings_the_student_to_its_teacher(tmp_path: Path) -> None:
    teacher, student, _ = _pair()
    with torch.no_grad():  # a confident teacher, so that its top 16 of 512 hold most of its mass
        teacher.lm_head.weight.mul_(8.0)
    examples = _examples(24)
    cache, _ = build_cache(
        tmp_path / "cache",
        teacher,
        examples,
        k=16,
        teacher_fingerprint="t",
        tokenizer_hash="v",
        console=QUIET,
    )
    seen = collate(pack(examples, 64), 0)

    def kl_to_teacher() -> float:
        with torch.no_grad():
            measure = LogitKDLoss(student, teacher, alpha=0.0, temperature=1.0)
            return float(measure(**_tensors(seen)))

    before = kl_to_teacher()
    settings = TrainSettings(epochs=30, batch_size=4, lr=1e-2, warmup=0.0, save_every=1000)
    train(
        LogitKDLoss(student, None, alpha=0.0, temperature=1.0),
        pack(examples, 32),
        lambda rows: collate_with_teacher(rows, 0, cache),
        settings,
        tmp_path / "run",
        console=QUIET,
    )
    assert kl_to_teacher() < 0.8 * before  # measured: 96 -> 67
