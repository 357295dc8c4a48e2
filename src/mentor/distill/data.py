"""Batches for logit distillation: the fine-tuning batch plus, with an offline teacher, the
teacher's cached top-k for exactly the batch's target positions.

A packed row lays examples end to end; its target positions, read row by row, are each
example's target positions in the order the examples were laid (``PackedRow.sources``). So a
batch's teacher rows are the cached rows of its examples concatenated in that order, which is
the order in which the objective picks student positions (``hidden[:, :-1][labels != -100]``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from mentor.distill.teacher_cache import TeacherCache
from mentor.train.data import Batch, PackedRow, collate


@dataclass
class KDBatch(Batch):
    """A :class:`~mentor.train.data.Batch` with the teacher's top-k at its N targets."""

    teacher_logprobs: torch.Tensor  # (N, k) fp32
    teacher_ids: torch.Tensor  # (N, k) int64


def collate_with_teacher(rows: Sequence[PackedRow], pad_id: int, cache: TeacherCache) -> KDBatch:
    batch = collate(rows, pad_id)
    parts = [cache.rows(i) for row in rows for i in row.sources]
    logprobs = torch.cat([p.logprobs for p in parts])
    if logprobs.shape[0] != batch.n_targets:
        raise ValueError(
            f"the teacher cache has {logprobs.shape[0]} positions for this batch of examples "
            f"{[row.sources for row in rows]} but the batch has {batch.n_targets} targets: "
            "examples were cut after the cache was built (keep --max-length within the rows)"
        )
    fields = {name: getattr(batch, name) for name in batch.__dataclass_fields__}
    return KDBatch(
        **fields, teacher_logprobs=logprobs, teacher_ids=torch.cat([p.ids for p in parts])
    )
