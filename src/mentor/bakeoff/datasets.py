"""Public datasets a bakeoff can prepare from their raw release (``data.prepare`` in the config).

``prepare("pubmedqa", source, out, seed)`` reads PubMedQA's expert-labelled PQA-L file
(``pqal_train.json``: 500 items keyed by PubMed id) and writes, under ``out``::

    docs/<pmid>.md        one document per abstract: its paragraphs, each led by its section label
    train.jsonl           qa records {"id", "question", "answer": yes|no|maybe, "doc_ids": [pmid]}
    validation.jsonl
    test.jsonl
    prepared.json         manifest: source sha256, seed, shares, counts, file hashes

The documents hold the abstract without its conclusion (``LONG_ANSWER``), as in the paper's
reasoning-required setting: the conclusion states the answer. The split is stratified by answer
and seeded: the same file and seed give byte-identical files, and a folder that already holds that
preparation is returned as it is. One malformed item is logged, listed in
:attr:`PreparedData.skipped` and left out; a file with nothing usable is an error.

:data:`PUBMEDQA_REFERENCES` are the paper's published accuracies to read the arms against. They
were measured on PQA-L's separate 500-item test set, while the bakeoff scores a held-out share of
the released 500, so they are context rather than a like-for-like comparison.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mentor.bakeoff.results import Reference
from mentor.utils.fs import atomic_dir, atomic_write_text, sha256_file

log = logging.getLogger(__name__)

PUBMEDQA_LABELS: tuple[str, ...] = ("yes", "no", "maybe")
SPLITS: tuple[str, ...] = ("train", "validation", "test")
MANIFEST = "prepared.json"
_FORMAT = 1  # bump when the written files change, so that old preparations are rebuilt

_PAPER = (
    "Jin et al., 2019, PubMedQA: A Dataset for Biomedical Research Question Answering "
    "(EMNLP-IJCNLP), PQA-L test set, reasoning-required setting"
)
PUBMEDQA_REFERENCES: list[Reference] = [
    Reference(name="majority class (always yes)", metric="accuracy", value=0.552, source=_PAPER),
    Reference(
        name="BioBERT, best model in the paper", metric="accuracy", value=0.681, source=_PAPER
    ),
    Reference(name="single human annotator", metric="accuracy", value=0.780, source=_PAPER),
]


@dataclass(frozen=True)
class PreparedData:
    """The files a preparation wrote: what ``data.docs/train/validation/test`` then point to."""

    docs: Path
    train: Path
    validation: Path
    test: Path
    counts: dict[str, int]  # docs, train, validation, test, skipped
    skipped: tuple[str, ...] = ()  # one line per item left out: file: PubMed id: field: why


@dataclass(frozen=True)
class PubMedQAItem:
    """One usable PQA-L item."""

    pmid: str
    question: str
    contexts: tuple[str, ...]
    sections: tuple[str, ...]  # the section label of each context paragraph (BACKGROUND, ...)
    answer: str  # yes, no or maybe


# ---------------------------------------------------------------------------------------------
# Reading


def _read_json(source: Path) -> dict[str, Any]:
    try:
        raw = json.loads(source.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ValueError(f"{source}: no such file") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"{source}: not valid JSON ({exc})") from None
    if not isinstance(raw, dict):
        raise ValueError(f"{source}: expected an object of items keyed by PubMed id")
    return raw


def _text_list(value: object, field: str) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ValueError(f"{field}: expected a list of strings")
    return tuple(v.strip() for v in value)


def parse_pubmedqa_item(pmid: str, value: object) -> PubMedQAItem:
    """One raw item as a :class:`PubMedQAItem`; a ValueError names the field at fault."""
    if not (pmid.isascii() and pmid.isdigit()):
        raise ValueError("id: a PubMed id is digits only")
    if not isinstance(value, dict):
        raise ValueError("expected an object with QUESTION, CONTEXTS, LABELS, final_decision")
    question = value.get("QUESTION")
    if not isinstance(question, str) or not question.strip():
        raise ValueError("QUESTION: missing or empty")
    contexts = _text_list(value.get("CONTEXTS"), "CONTEXTS")
    if not contexts or not all(contexts):
        raise ValueError("CONTEXTS: needs at least one paragraph, none empty")
    sections = _text_list(value.get("LABELS"), "LABELS")
    if len(sections) != len(contexts):
        raise ValueError(f"LABELS: {len(sections)} labels for {len(contexts)} CONTEXTS paragraphs")
    answer = value.get("final_decision")
    if not isinstance(answer, str) or answer.strip().lower() not in PUBMEDQA_LABELS:
        raise ValueError(f"final_decision: {answer!r} is not one of {', '.join(PUBMEDQA_LABELS)}")
    return PubMedQAItem(pmid, question.strip(), contexts, sections, answer.strip().lower())


def read_pubmedqa(source: Path) -> tuple[list[PubMedQAItem], list[str]]:
    """The usable items of a PQA-L file, by PubMed id, and one problem line per item left out."""
    items: list[PubMedQAItem] = []
    problems: list[str] = []
    for pmid, value in _read_json(source).items():
        try:
            items.append(parse_pubmedqa_item(pmid, value))
        except ValueError as exc:
            problems.append(f"{source}: PubMed {pmid}: {exc}")
    if not items:
        shown = "; ".join(problems[:3]) or "it holds no items"
        raise ValueError(f"{source}: no usable PubMedQA item ({shown})")
    items.sort(key=lambda item: (len(item.pmid), item.pmid))  # numeric order of digit strings
    return items, problems


# ---------------------------------------------------------------------------------------------
# Splitting


def _check_shares(shares: Sequence[float]) -> None:
    if len(shares) != len(SPLITS) or any(s < 0 for s in shares) or abs(sum(shares) - 1) > 1e-9:
        raise ValueError(f"shares: three non-negative shares that sum to 1, got {tuple(shares)}")
    if shares[0] == 0 or shares[2] == 0:
        raise ValueError(f"shares: train and test need a share above 0, got {tuple(shares)}")


def _seeded_key(seed: int, item_id: str) -> str:
    """A seeded, platform-independent shuffle key (stable across Python versions)."""
    return hashlib.sha256(f"{seed}:{item_id}".encode()).hexdigest()


def stratified_split(
    ids_by_label: dict[str, list[str]], shares: Sequence[float], seed: int
) -> dict[str, list[str]]:
    """Ids dealt into train/validation/test, each label spread over the splits by ``shares``.

    Ids are shuffled within each label by a seeded hash, labels laid end to end, and each id in
    turn goes to the split furthest below its share so far. Every split then stays within one id
    of its share of every prefix, so each label's split counts are within two of its shares and
    the totals within one (exact when ``n * share`` is whole: 500 -> 300/50/150)."""
    _check_shares(shares)
    order = [
        item_id
        for label in ids_by_label
        for item_id in sorted(ids_by_label[label], key=lambda i: _seeded_key(seed, i))
    ]
    taken = [0] * len(SPLITS)
    out: dict[str, list[str]] = {split: [] for split in SPLITS}
    for n, item_id in enumerate(order, start=1):
        # Ties go to the earlier split (train before validation before test).
        pick = max(range(len(SPLITS)), key=lambda s: (shares[s] * n - taken[s], -s))
        taken[pick] += 1
        out[SPLITS[pick]].append(item_id)
    return out


# ---------------------------------------------------------------------------------------------
# Writing


def pubmedqa_doc(item: PubMedQAItem) -> str:
    """The markdown document of one abstract, without its conclusion (that states the answer)."""
    paragraphs = [
        f"**{section}** {text}" if section else text
        for section, text in zip(item.sections, item.contexts, strict=True)
    ]
    return "\n\n".join([f"# PubMed {item.pmid}", *paragraphs]) + "\n"


def _qa_line(item: PubMedQAItem) -> str:
    record = {"id": item.pmid, "question": item.question, "answer": item.answer}
    return json.dumps({**record, "doc_ids": [item.pmid]}, ensure_ascii=False)


def _paths(out: Path) -> dict[str, Path]:
    return {"docs": out / "docs", **{split: out / f"{split}.jsonl" for split in SPLITS}}


def _result(out: Path, counts: dict[str, int], skipped: Sequence[str]) -> PreparedData:
    paths = _paths(out)
    return PreparedData(
        docs=paths["docs"],
        train=paths["train"],
        validation=paths["validation"],
        test=paths["test"],
        counts=dict(counts),
        skipped=tuple(skipped),
    )


def _existing(out: Path, wanted: dict[str, Any]) -> PreparedData | None:
    """The preparation already in ``out`` if its manifest matches ``wanted`` and its files are
    intact; None otherwise (then the caller writes it afresh)."""
    try:
        manifest = json.loads((out / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(manifest, dict) or any(manifest.get(k) != v for k, v in wanted.items()):
        return None
    paths = _paths(out)
    files = manifest.get("files")
    counts = manifest.get("counts")
    if not isinstance(files, dict) or not isinstance(counts, dict):
        return None
    for split in SPLITS:
        path = paths[split]
        if not path.is_file() or files.get(path.name) != sha256_file(path):
            return None
    if len(list(paths["docs"].glob("*.md"))) != counts.get("docs"):
        return None
    return _result(out, counts, manifest.get("skipped") or [])


def prepare_pubmedqa(
    source: Path,
    out: Path,
    *,
    seed: int = 0,
    shares: tuple[float, float, float] = (0.6, 0.1, 0.3),
) -> PreparedData:
    """Write PubMedQA PQA-L's abstracts and a seeded, stratified split of its questions to ``out``.

    Returns at once, writing nothing, when ``out`` already holds this preparation (same source
    bytes, seed and shares). Every file is written atomically and the manifest last, so a run
    killed part way is simply redone."""
    _check_shares(shares)
    if not source.is_file():
        raise ValueError(f"{source}: no such file")
    wanted: dict[str, Any] = {
        "format": _FORMAT,
        "kind": "pubmedqa",
        "source_sha256": sha256_file(source),
        "seed": seed,
        "shares": list(shares),
    }
    if (found := _existing(out, wanted)) is not None:
        return found

    items, skipped = read_pubmedqa(source)
    for problem in skipped:
        log.warning("skipped %s", problem)
    by_label: dict[str, list[str]] = {label: [] for label in PUBMEDQA_LABELS}
    for item in items:
        by_label[item.answer].append(item.pmid)
    split = stratified_split(by_label, shares, seed)
    for name in ("train", "test"):
        if not split[name]:
            raise ValueError(f"{source}: {len(items)} usable items leave no {name} questions")

    paths = _paths(out)
    (out / MANIFEST).unlink(missing_ok=True)  # the folder is incomplete until it is rewritten
    with atomic_dir(paths["docs"]) as docs:
        for item in items:
            (docs / f"{item.pmid}.md").write_text(pubmedqa_doc(item), encoding="utf-8")
    by_id = {item.pmid: item for item in items}
    files: dict[str, str] = {}
    for name in SPLITS:
        chosen = sorted(split[name], key=lambda pmid: (len(pmid), pmid))
        text = "".join(_qa_line(by_id[pmid]) + "\n" for pmid in chosen)
        atomic_write_text(paths[name], text)
        files[paths[name].name] = hashlib.sha256(text.encode("utf-8")).hexdigest()
    counts = {"docs": len(items), **{name: len(split[name]) for name in SPLITS}}
    counts["skipped"] = len(skipped)
    manifest = {**wanted, "counts": counts, "files": files, "skipped": skipped}
    atomic_write_text(out / MANIFEST, json.dumps(manifest, indent=2) + "\n")
    return _result(out, counts, skipped)


# ---------------------------------------------------------------------------------------------
# Registry: the kinds ``data.prepare`` accepts


PREPARERS: dict[str, Callable[[Path, Path, int], PreparedData]] = {
    "pubmedqa": lambda source, out, seed: prepare_pubmedqa(source, out, seed=seed),
}
REFERENCES: dict[str, list[Reference]] = {"pubmedqa": PUBMEDQA_REFERENCES}


def _known(kind: str) -> None:
    if kind not in PREPARERS:
        raise ValueError(f"unknown dataset {kind!r} (known: {', '.join(PREPARERS)})")


def prepare(kind: str, source: Path, out: Path, seed: int) -> PreparedData:
    """Prepare the raw dataset ``kind`` from ``source`` under ``out`` (see the module docs)."""
    _known(kind)
    return PREPARERS[kind](source, out, seed)


def references(kind: str | None) -> list[Reference]:
    """The published figures for a prepared dataset; none when the data is the user's own."""
    if kind is None:
        return []
    _known(kind)
    return list(REFERENCES[kind])
