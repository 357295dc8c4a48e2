"""The offline teacher cache: rows equal the teacher's own top-k, a second build does no forward
pass, an interrupted build resumes at the missing shard, and a cache for other inputs is refused."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from rich.console import Console

from mentor.distill.teacher_cache import (
    CacheMismatchError,
    TeacherCache,
    build_cache,
    target_positions,
    tokenizer_fingerprint,
)
from mentor.testing import tiny_llama, tiny_qwen2
from mentor.train.data import IGNORE, Example
from mentor.train.lora import base_fingerprint

QUIET = Console(quiet=True)


def _examples(n: int = 7) -> list[Example]:
    gen = torch.Generator().manual_seed(0)
    out = []
    for i in range(n):
        length = 6 + i % 4
        ids = torch.randint(5, 200, (length,), generator=gen).tolist()
        labels = [IGNORE] * 3 + ids[3:]  # a 3-token "prompt", then trained tokens
        out.append(Example(ids, labels))
    return out


class Counting:
    """Counts the teacher backbone's forward passes and fails on demand (a kill mid-build)."""

    def __init__(self, teacher: torch.nn.Module, fail_at: int | None) -> None:
        self.calls, self.fail_at = 0, fail_at
        self.handle = teacher.base_model.register_forward_pre_hook(self._hook)

    def _hook(self, *_: object) -> None:
        self.calls += 1
        if self.fail_at is not None and self.calls == self.fail_at:
            raise KeyboardInterrupt("killed")


def _build(folder: Path, teacher: torch.nn.Module, examples: list[Example], k: int = 4):  # type: ignore[no-untyped-def]
    _, tok = tiny_qwen2()
    return build_cache(
        folder,
        teacher,
        examples,
        k=k,
        teacher_fingerprint=base_fingerprint(teacher),
        tokenizer_hash=tokenizer_fingerprint(tok),
        batch_size=2,
        shard_size=3,
        console=QUIET,
    )


def test_rows_are_the_teachers_top_k_at_target_positions(tmp_path: Path) -> None:
    teacher, _ = tiny_qwen2(seed=1)
    examples = _examples()
    cache, stats = _build(tmp_path, teacher, examples)
    assert stats.shards_computed == 3 and stats.shards_reused == 0 and stats.forward_passes == 5
    assert len(cache) == 7 and cache.k == 4
    for i, e in enumerate(examples):
        with torch.no_grad():
            logits = teacher(input_ids=torch.tensor([e.input_ids])).logits[0]
        positions = target_positions(e)
        top = torch.log_softmax(logits[positions], -1).topk(4, dim=-1)
        rows = cache.rows(i)
        assert torch.equal(rows.ids, top.indices)
        torch.testing.assert_close(rows.logprobs, top.values, atol=2e-3, rtol=2e-3)  # fp16
    assert stats.positions == sum(len(target_positions(e)) for e in examples)
    with pytest.raises(IndexError):
        cache.rows(7)


def test_a_second_build_reuses_everything(tmp_path: Path) -> None:
    teacher, _ = tiny_qwen2(seed=1)
    examples = _examples()
    _build(tmp_path, teacher, examples)
    _, stats = _build(tmp_path, teacher, examples)
    assert stats.forward_passes == 0 and stats.shards_reused == 3 and stats.shards_computed == 0


def test_an_interrupted_build_resumes_at_the_missing_shard(tmp_path: Path) -> None:
    teacher, _ = tiny_qwen2(seed=1)
    examples = _examples()
    fingerprint = base_fingerprint(teacher)
    with pytest.raises(KeyboardInterrupt):  # dies in the 2nd shard's second batch
        _build_counting(tmp_path, teacher, examples, fingerprint, fail_at=4)
    with pytest.raises(ValueError, match="incomplete"):
        TeacherCache(tmp_path)
    counting, stats = _build_counting(tmp_path, teacher, examples, fingerprint, fail_at=None)
    assert stats.shards_reused == 1 and stats.shards_computed == 2
    assert counting.calls == 3  # shards 2 and 3: two batches and one
    reference, _ = _build(tmp_path / "fresh", teacher, examples)
    for i in range(len(examples)):
        assert torch.equal(TeacherCache(tmp_path).rows(i).ids, reference.rows(i).ids)


def _build_counting(folder, teacher, examples, fingerprint, fail_at):  # type: ignore[no-untyped-def]
    counting = Counting(teacher, fail_at)
    _, tok = tiny_qwen2()
    try:
        _, stats = build_cache(
            folder,
            teacher,
            examples,
            k=4,
            teacher_fingerprint=fingerprint,
            tokenizer_hash=tokenizer_fingerprint(tok),
            batch_size=2,
            shard_size=3,
            console=QUIET,
        )
    finally:
        counting.handle.remove()
    return counting, stats


def test_a_cache_for_other_inputs_is_refused(tmp_path: Path) -> None:
    teacher, _ = tiny_qwen2(seed=1)
    examples = _examples()
    _build(tmp_path, teacher, examples)
    with pytest.raises(CacheMismatchError, match="another k"):
        _build(tmp_path, teacher, examples, k=5)
    with pytest.raises(CacheMismatchError, match="another data"):
        _build(tmp_path, teacher, [*examples[:6], Example([9, 9, 9, 9], [IGNORE, 9, 9, 9])])
    other, _ = tiny_qwen2(seed=2)
    with pytest.raises(CacheMismatchError, match="another teacher"):
        _build(tmp_path, other, examples)


def test_tokenizer_fingerprint_tells_vocabularies_apart() -> None:
    _, qwen_tok = tiny_qwen2()
    _, llama_tok = tiny_llama()
    assert tokenizer_fingerprint(qwen_tok) == tokenizer_fingerprint(llama_tok)  # same tiny vocab
    _, small = tiny_llama(vocab_size=300)
    assert tokenizer_fingerprint(small) != tokenizer_fingerprint(qwen_tok)
