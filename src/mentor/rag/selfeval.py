"""Self-evaluation without labels: every index gets a judged question set of its own.

The local generator writes one question for each of a sample of chunks (through
:func:`mentor.rag.synthetic.synthetic_questions`, so replies are cached and a stopped run
resumes); the chunk's document is the question's one relevant document. The sample is
stratified by document (one chunk per document, in a seeded order, before any document gets a
second), so a long manual does not crowd out the short pages.

The questions are split by document, seeded, into a tuning part and a held-out part: no
document is in both, so a setting chosen on one part is measured on documents it never saw.
``mentor rag tune`` chooses on the tuning part; ``mentor rag eval`` with no ``--queries``
reports the held-out part.

Files beside the index: ``synthetic-replies.jsonl`` (the raw generator replies, the resumable
cache) and ``selfeval.json`` (the kept questions and their split).

Run: ``mentor rag tune --index idx`` (writes both), then ``mentor rag eval --index idx``.
"""

from __future__ import annotations

import json
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

from mentor.models.protocols import Generator
from mentor.rag.evaluation import EvalSet
from mentor.rag.index import embed_input
from mentor.rag.records import Chunk
from mentor.rag.retrieve import Retriever, SearchConfig
from mentor.rag.synthetic import (
    GROUP,
    MIN_CHUNK_WORDS,
    QueryStyle,
    SyntheticQuestion,
    query_style,
    synthetic_questions,
)
from mentor.utils.fs import atomic_write_text

SELFEVAL = "selfeval.json"
REPLIES = "synthetic-replies.jsonl"
EXAMPLES = "example-queries.json"
"""The users' own queries the questions are written in the style of (``--example-queries``),
kept so later tuning runs write in the same style; delete it to go back to plain questions."""
BATCH = GROUP
"""Chunks asked about between two checks of the time budget (one batch of the generator)."""


@dataclass
class SelfEvalSet:
    """Synthetic questions of one index, split by document."""

    tuning: list[SyntheticQuestion]
    held_out: list[SyntheticQuestion]
    generator: str
    seed: int
    dropped: dict[str, int] = field(default_factory=dict)
    """Replies rejected by :func:`mentor.rag.synthetic.clean_question`, by reason."""
    seconds: float = 0.0
    """Time spent writing questions in the run that made this set (0 when all were cached)."""
    created: str = ""
    style: str = ""
    """The :class:`~mentor.rag.synthetic.QueryStyle` key the questions were written in ("" for
    the built-in question style): a set written in another style is written again."""

    def save(self, index: Path) -> Path:
        path = index / SELFEVAL
        atomic_write_text(path, json.dumps(asdict(self), indent=2))
        return path

    @classmethod
    def load(cls, index: Path) -> SelfEvalSet | None:
        path = index / SELFEVAL
        if not path.exists():
            return None
        raw = json.loads(path.read_text())
        return cls(
            tuning=[SyntheticQuestion(**q) for q in raw["tuning"]],
            held_out=[SyntheticQuestion(**q) for q in raw["held_out"]],
            generator=raw["generator"],
            seed=raw["seed"],
            dropped=raw.get("dropped", {}),
            seconds=raw.get("seconds", 0.0),
            created=raw.get("created", ""),
            style=raw.get("style", ""),
        )


def save_examples(index: Path, queries: Sequence[str]) -> None:
    """Keep the example queries beside the index (text only)."""
    atomic_write_text(index / EXAMPLES, json.dumps(list(queries), indent=1, ensure_ascii=False))


def load_examples(index: Path) -> list[str]:
    """The example queries kept beside the index ([] when there are none)."""
    path = index / EXAMPLES
    if not path.exists():
        return []
    raw = json.loads(path.read_text(encoding="utf-8"))
    if not isinstance(raw, list) or not all(isinstance(q, str) for q in raw):
        raise ValueError(f"{path}: expected a JSON list of query strings")
    return raw


def index_style(
    retriever: Retriever, seed: int = 0, *, questions_too: bool = False
) -> QueryStyle | None:
    """The style of the example queries kept beside the index, each shown with the chunk BM25
    ranks first for it; None without any, and (unless ``questions_too``) when the examples are
    questions: the built-in prompt already writes questions, and on the Tidepool handbook the
    users' terse questions as worked examples made the writer copy them (34 of 123 replies)
    and turned the synthetic set's agreement with judged scores negative (bench/rag_style.py)."""
    examples = load_examples(retriever.folder)
    if not examples:
        return None

    def top_passage(query: str) -> str | None:
        hits = retriever.search(query, SearchConfig(mode="bm25", k=1)).hits
        return embed_input(hits[0].chunk) if hits else None

    style = query_style(examples, top_passage, seed=seed)
    return None if style.questions and not questions_too else style


def stratified_sample(chunks: Sequence[Chunk], n: int, seed: int) -> list[Chunk]:
    """``n`` chunks long enough to ask about, spread over documents: documents in a seeded
    order, each giving one (seeded) chunk per round until ``n`` are drawn."""
    rng = random.Random(seed)
    by_doc: dict[str, list[Chunk]] = {}
    for chunk in chunks:
        if len(chunk.text.split()) >= MIN_CHUNK_WORDS:
            by_doc.setdefault(chunk.doc_id, []).append(chunk)
    docs = sorted(by_doc)
    rng.shuffle(docs)
    for doc in docs:
        rng.shuffle(by_doc[doc])
    picked: list[Chunk] = []
    depth = 0
    while len(picked) < n and any(len(by_doc[d]) > depth for d in docs):
        picked.extend(by_doc[d][depth] for d in docs if len(by_doc[d]) > depth)
        depth += 1
    return picked[:n]


def split_by_document(
    questions: Sequence[SyntheticQuestion], held_out_share: float, seed: int
) -> tuple[list[SyntheticQuestion], list[SyntheticQuestion]]:
    """(tuning, held out): whole documents, in a seeded order, go to the held-out part until it
    has at least ``held_out_share`` of the questions (and the tuning part keeps at least one
    document)."""
    if not 0.0 < held_out_share < 1.0:
        raise ValueError(f"held_out_share must be in (0, 1), got {held_out_share}")
    docs = sorted({q.doc_id for q in questions})
    random.Random(seed).shuffle(docs)
    count = {d: sum(q.doc_id == d for q in questions) for d in docs}
    held: set[str] = set()
    for doc in docs[:-1]:
        if sum(count[d] for d in held) >= held_out_share * len(questions):
            break
        held.add(doc)
    return (
        [q for q in questions if q.doc_id not in held],
        [q for q in questions if q.doc_id in held],
    )


def as_eval_set(questions: Sequence[SyntheticQuestion]) -> EvalSet:
    """Query id -> question, judged relevant: the document of the chunk it was written for."""
    return EvalSet(
        {f"synthetic-{i}": q.question for i, q in enumerate(questions)},
        {f"synthetic-{i}": {q.doc_id: 1} for i, q in enumerate(questions)},
    )


def build_selfeval(
    index: Path,
    chunks: Sequence[Chunk],
    generator: Generator,
    *,
    questions: int = 320,
    held_out_share: float = 0.4,
    seed: int = 0,
    budget_s: float | None = None,
    progress: Callable[[int, int], None] | None = None,
    style: QueryStyle | None = None,
) -> SelfEvalSet:
    """Write (or read back from the cache) questions for a stratified sample of ``questions``
    chunks, split them, and save the set in the index folder.

    With ``budget_s``, writing stops before a batch that would end past the budget (judged by
    the slowest batch so far; one batch at least is written) and the set is made of the chunks
    done so far (run again to continue: the replies are cached). ``style``: write in the style
    of the users' own queries (:func:`mentor.rag.synthetic.query_style`)."""
    picked = stratified_sample(chunks, questions, seed)
    cache = index / REPLIES
    started = time.perf_counter()
    done = 0
    slowest = 0.0
    for start in range(0, len(picked), BATCH):
        batch = picked[start : start + BATCH]
        t0 = time.perf_counter()
        synthetic_questions(batch, generator, cache=cache, style=style)
        slowest = max(slowest, time.perf_counter() - t0)
        done = start + len(batch)
        if progress is not None:
            progress(done, len(picked))
        if budget_s is not None and time.perf_counter() - started + slowest > budget_s:
            break  # the next batch would end past the budget; at least one batch was written
    seconds = time.perf_counter() - started
    # Once more over everything done, all from the cache: one pass keeps duplicates out.
    written = synthetic_questions(picked[:done], generator, cache=cache, style=style)
    tuning, held = split_by_document(written.questions, held_out_share, seed)
    result = SelfEvalSet(
        tuning,
        held,
        getattr(generator, "name", type(generator).__name__),
        seed,
        written.dropped,
        seconds,
        time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "" if style is None else style.key,
    )
    result.save(index)
    return result
