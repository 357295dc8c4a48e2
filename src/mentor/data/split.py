"""Deterministic train/validation/test splits that can stratify by label and never create leakage.

:func:`split_records` shuffles with :class:`random.Random` seeded from ``seed`` (string seeds are
hashed with SHA-512 by Python, so no ``PYTHONHASHSEED`` can change a split). Part sizes come from
largest-remainder allocation, per label when stratifying, so each part holds each label's share to
within one item. With ``group_duplicates`` the records sharing a normalised key text move together,
so a duplicate can never end up on both sides of a split.
"""

from __future__ import annotations

import math
import random
from collections import defaultdict
from collections.abc import Sequence
from typing import Any

from pydantic import BaseModel

from mentor.data.dedup import key_text, normalize_text
from mentor.data.io import Record

PART_NAMES: dict[int, tuple[str, ...]] = {2: ("train", "test"), 3: ("train", "validation", "test")}


def validate_ratios(ratios: Sequence[float]) -> tuple[float, ...]:
    """Check that there are 2 or 3 positive ratios summing to 1; return them as a tuple."""
    if len(ratios) not in PART_NAMES:
        raise ValueError(f"give 2 or 3 ratios, got {len(ratios)}")
    if any(r <= 0 for r in ratios):
        raise ValueError(f"ratios must be positive, got {', '.join(map(str, ratios))}")
    if not math.isclose(sum(ratios), 1.0, abs_tol=1e-6):
        raise ValueError(
            f"ratios must sum to 1, got {', '.join(map(str, ratios))} = {sum(ratios):g}"
        )
    return tuple(float(r) for r in ratios)


def allocate(n: int, ratios: Sequence[float]) -> list[int]:
    """Split ``n`` items by ``ratios`` with largest remainders; every part gets one if n allows."""
    exact = [round(n * r, 9) for r in ratios]
    counts = [math.floor(x) for x in exact]
    by_remainder = sorted(range(len(ratios)), key=lambda i: (counts[i] - exact[i], i))
    for i in by_remainder[: n - sum(counts)]:
        counts[i] += 1
    if n >= len(ratios):
        for i, count in enumerate(counts):
            if count == 0:
                donor = max(range(len(counts)), key=lambda j: (counts[j], -j))
                counts[donor] -= 1
                counts[i] = 1
    return counts


def field_value(data: BaseModel, name: str) -> str:
    """The value of a field (or kept extra field, or ``_id`` alias) as a string, to stratify by."""
    value: Any = getattr(data, name, None)
    if value is None:
        value = data.model_dump(by_alias=True).get(name)
    if value is None:
        raise KeyError(name)
    return str(value)


def _units(
    records: Sequence[Record], group_duplicates: bool, schema: str | None
) -> list[list[Record]]:
    if not group_duplicates:
        return [[r] for r in records]
    groups: dict[str, list[Record]] = {}
    for r in records:
        norm = normalize_text(key_text(r.data, schema))
        groups.setdefault(norm or f"\0line{r.line}", []).append(r)
    return list(groups.values())


def split_records(
    records: Sequence[Record],
    ratios: Sequence[float] = (0.8, 0.1, 0.1),
    seed: int = 0,
    stratify_by: str | None = None,
    group_duplicates: bool = True,
    names: Sequence[str] | None = None,
    schema: str | None = None,
) -> dict[str, list[Record]]:
    """Split records into named parts (default train/validation/test, or train/test for 2 ratios).

    The same records, ratios and seed always give the same parts. ``stratify_by`` names a field
    (e.g. ``label``) whose every value is shared out by ``ratios``; ``group_duplicates`` keeps
    records with the same normalised key text (see :func:`mentor.data.dedup.key_text`) in one part
    (a group is stratified by its first record's value). Each part keeps the input's line order.
    """
    ratios = validate_ratios(ratios)
    part_names = tuple(names) if names is not None else PART_NAMES[len(ratios)]
    if len(part_names) != len(ratios) or len(set(part_names)) != len(part_names):
        raise ValueError(f"need {len(ratios)} distinct part names, got {', '.join(part_names)}")
    strata: dict[str, list[list[Record]]] = defaultdict(list)
    for unit in _units(records, group_duplicates, schema):
        label = ""
        if stratify_by is not None:
            try:
                label = field_value(unit[0].data, stratify_by)
            except KeyError:
                raise ValueError(
                    f"line {unit[0].line}: no field '{stratify_by}' to stratify by"
                ) from None
        strata[label].append(unit)
    parts: list[list[Record]] = [[] for _ in ratios]
    for label in sorted(strata):
        units = strata[label]
        random.Random(f"{seed}/{label}").shuffle(units)
        targets = allocate(sum(len(u) for u in units), ratios)
        filled = [0] * len(ratios)
        for unit in units:
            part = max(range(len(ratios)), key=lambda i: (targets[i] - filled[i], -i))
            parts[part].extend(unit)
            filled[part] += len(unit)
    return {
        name: sorted(part, key=lambda r: r.line)
        for name, part in zip(part_names, parts, strict=True)
    }
