"""Calibrate the confidence threshold below which ``mentor rag ask`` refuses to answer.

Positives are in-domain questions (the user's eval set, or ``questions_from_chunks``); negatives
are off-domain questions the documents cannot answer (``OFF_DOMAIN_QUESTIONS`` unless the user
gives some). Each is retrieved and scored with :func:`mentor.rag.answer.confidence`; the
threshold maximises balanced accuracy, the mean of the share of answerable questions answered
and the share of unanswerable ones refused, which weighs both kinds of error alike however
many questions each side has. Among equally good thresholds the lowest wins (answer more), and
the threshold sits midway between the two scores it separates, so a small drift in either
does not flip a decision.

The result is saved as ``calibration.json`` in the index folder, where ``ask`` finds it.
``mentor rag index`` and ``mentor rag tune`` calibrate every index they touch
(:func:`auto_calibrate`), so a fresh index refuses what it does not cover: in-domain questions
are the index's synthetic self-evaluation questions when they exist beside it
(``selfeval.json``), else keyword questions drawn from its chunks (no generator needed, a
second's work). A calibration the user made from their own questions is kept.

Run: ``mentor rag calibrate --index idx --queries qa.jsonl``.
"""

from __future__ import annotations

import itertools
import json
import random
import re
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from mentor.evaluate.grounding import STOP_WORDS
from mentor.evaluate.stats import percentile
from mentor.rag.answer import confidence
from mentor.rag.records import Chunk
from mentor.rag.retrieve import Reranker, Retriever, SearchConfig, Searcher
from mentor.utils.fs import atomic_write_text

CALIBRATION = "calibration.json"
SELFEVAL = "selfeval.json"
"""The index's synthetic self-evaluation set (written by the self-evaluation, when it ran)."""
SOURCE_USER, SOURCE_SYNTHETIC, SOURCE_CHUNKS = "user", "synthetic", "chunks"
MIN_SYNTHETIC = 20
"""Synthetic questions needed to prefer them over keyword questions from the chunks."""
KEYWORD_TRIM = 0.2
"""Share of the lowest-scoring keyword questions left out when choosing the threshold. A few
keywords drawn from a generic sentence ("Ask in finance-help") match nothing in particular and
score like off-domain questions, which drags the threshold down to where a near-domain question
gets answered. Measured on Tidepool (bench/rag_trust.py), the help centre alone: 0 kept the
travel-expenses question answered (threshold 0.267, its confidence 0.290), 0.2 refuses it (0.323)
with every in-domain question still answered; the whole handbook: in-domain answered 99% -> 93%
(test and validation; 95% of all 340), held-out off-domain refused 95% -> 100%."""

OFF_DOMAIN_QUESTIONS: tuple[str, ...] = (
    "How long should I boil an egg for a runny yolk?",
    "What temperature do you bake sourdough bread at?",
    "How do I make a classic French omelette?",
    "What can I use instead of buttermilk in pancakes?",
    "How many players are on a football team on the pitch?",
    "Who won the FIFA World Cup in 2014?",
    "What are the rules of the offside in soccer?",
    "How long is an Olympic marathon?",
    "Which country has won the most Tour de France titles?",
    "What is the capital of Australia?",
    "Which river flows through Budapest?",
    "How tall is Mount Kilimanjaro?",
    "What is the largest desert in the world?",
    "Which countries border Switzerland?",
    "How do you reverse a list in Python?",
    "What is the difference between a process and a thread?",
    "Who created the Linux kernel?",
    "What does the acronym HTTP stand for?",
    "How do I undo the last commit in git?",
    "Who played Jack in the movie Titanic?",
    "How old is Taylor Swift?",
    "Who painted the Mona Lisa?",
    "Which band released the album Abbey Road?",
    "What is the boiling point of water on Mount Everest?",
    "Why is the sky blue?",
    "How far is the Moon from the Earth?",
    "What causes the seasons on Earth?",
    "How many bones are in the adult human body?",
    "How often should I water a cactus?",
    "What is a good way to fall asleep faster?",
    "How do I get red wine out of a carpet?",
    "When should tomato seedlings be planted outside?",
    "What is the best way to learn to juggle?",
    "How do I change a flat tyre on a bicycle?",
    "When did the Roman Empire fall?",
    "Who was the first person to walk on the Moon?",
    "What year did the Berlin Wall come down?",
    "Which planet has the most moons?",
    "How do I say thank you in Japanese?",
    "What is the plural of cactus?",
    "How many calories are in a banana?",
    "What is the exchange rate between the euro and the yen?",
)
"""Everyday and general-knowledge questions no ordinary document collection answers."""


@dataclass(frozen=True)
class ScoreSummary:
    """The spread of one side's confidence scores."""

    count: int
    min: float
    p50: float
    max: float


def summarize(scores: Sequence[float]) -> ScoreSummary:
    return ScoreSummary(len(scores), min(scores), percentile(scores, 50), max(scores))


@dataclass
class Calibration:
    threshold: float
    """Answer when confidence >= threshold, refuse below."""
    balanced_accuracy: float
    refused_answerable: float
    """Share of the answerable questions the threshold would refuse."""
    answered_unanswerable: float
    """Share of the unanswerable questions it would answer."""
    answerable: ScoreSummary
    unanswerable: ScoreSummary
    mode: str
    """The search mode the scores were taken in: use the same one when asking."""
    created: str = ""
    source: str = SOURCE_USER
    """Where the answerable questions came from: ``user`` (``rag calibrate``), ``synthetic``
    (the index's self-evaluation questions) or ``chunks`` (keywords from its chunks)."""

    @property
    def automatic(self) -> bool:
        """Made by :func:`auto_calibrate`, so a later build may redo it."""
        return self.source in (SOURCE_SYNTHETIC, SOURCE_CHUNKS)

    def describe(self) -> str:
        """One line for ``rag info``: the threshold and where it came from."""
        origin = {
            SOURCE_USER: "your questions (mentor rag calibrate)",
            SOURCE_SYNTHETIC: "automatic, from the index's synthetic questions",
            SOURCE_CHUNKS: "automatic, from keyword questions drawn from the chunks",
        }.get(self.source, self.source)
        return (
            f"{self.threshold:.3f} ({origin}; {self.answerable.count} in-domain vs "
            f"{self.unanswerable.count} off-domain questions, {self.mode} search, "
            f"{self.refused_answerable:.0%} of in-domain refused, "
            f"{self.answered_unanswerable:.0%} of off-domain answered)"
        )

    def to_dict(self) -> dict[str, object]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Calibration:
        """Files written before ``source`` existed were all made by ``rag calibrate``."""
        sides = {side: ScoreSummary(**data[side]) for side in ("answerable", "unanswerable")}
        return cls(**{**data, **sides})

    def save(self, index_folder: Path) -> Path:
        path = index_folder / CALIBRATION
        atomic_write_text(path, json.dumps(self.to_dict(), indent=2) + "\n")
        return path


def load_calibration(index_folder: Path) -> Calibration | None:
    """The index's calibration, or None when it was never calibrated."""
    path = index_folder / CALIBRATION
    if not path.exists():
        return None
    return Calibration.from_dict(json.loads(path.read_text()))


def load_threshold(index_folder: Path) -> float | None:
    calibration = load_calibration(index_folder)
    return None if calibration is None else calibration.threshold


def choose_threshold(answerable: Sequence[float], unanswerable: Sequence[float]) -> float:
    """The threshold of best balanced accuracy, lowest among ties, midway between two scores."""
    if not answerable or not unanswerable:
        raise ValueError("calibration needs both answerable and unanswerable questions")
    values = sorted(set(answerable) | set(unanswerable))
    # Answering everything (the lowest score) and then a cut between each pair of neighbours.
    cuts = [values[0]] + [(low + high) / 2 for low, high in itertools.pairwise(values)]
    best, best_accuracy = cuts[0], -1.0
    for cut in cuts:
        accuracy = balanced_accuracy(cut, answerable, unanswerable)
        if accuracy > best_accuracy:  # strict: a tie keeps the lower threshold
            best, best_accuracy = cut, accuracy
    return best


def balanced_accuracy(
    threshold: float, answerable: Sequence[float], unanswerable: Sequence[float]
) -> float:
    answered = sum(s >= threshold for s in answerable) / len(answerable)
    refused = sum(s < threshold for s in unanswerable) / len(unanswerable)
    return (answered + refused) / 2


def calibrate(
    retriever: Searcher,
    answerable: Sequence[str],
    unanswerable: Sequence[str] = OFF_DOMAIN_QUESTIONS,
    *,
    search: SearchConfig,
    reranker: Reranker | None = None,
    source: str = SOURCE_USER,
    trim: float = 0.0,
) -> Calibration:
    """Score both sets of questions and pick the threshold that best tells them apart; the
    lowest ``trim`` share of the answerable scores is left out of the choice (noisy positives:
    ``KEYWORD_TRIM``), though the reported rates count every question."""
    pos = [confidence(retriever.search(q, search, reranker=reranker).hits) for q in answerable]
    neg = [confidence(retriever.search(q, search, reranker=reranker).hits) for q in unanswerable]
    threshold = choose_threshold(sorted(pos)[int(len(pos) * trim) :], neg)
    return Calibration(
        threshold=threshold,
        balanced_accuracy=balanced_accuracy(threshold, pos, neg),
        refused_answerable=sum(s < threshold for s in pos) / len(pos),
        answered_unanswerable=sum(s >= threshold for s in neg) / len(neg),
        answerable=summarize(pos),
        unanswerable=summarize(neg),
        mode=search.mode,
        created=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        source=source,
    )


def synthetic_questions(index_folder: Path) -> list[str]:
    """The questions of the index's self-evaluation set (``selfeval.json``: lists of records
    with a ``question``), or none when there is no such file or it holds something else."""
    path = index_folder / SELFEVAL
    if not path.exists():
        return []
    try:
        raw = json.loads(path.read_text())
        rows = [*raw.get("tuning", []), *raw.get("held_out", [])]
        return [str(r["question"]) for r in rows if isinstance(r, dict) and r.get("question")]
    except (ValueError, AttributeError, TypeError):
        return []


def auto_calibrate(retriever: Retriever, *, force: bool = False) -> Calibration | None:
    """Calibrate the index from questions it makes itself, and save it; None (and nothing
    written) when the user's own calibration is there and ``force`` is off, or when the index
    is empty.

    In-domain: the self-evaluation's synthetic questions when there are at least
    ``MIN_SYNTHETIC`` (written like a user's questions), else ``questions_from_chunks``.
    Off-domain: ``OFF_DOMAIN_QUESTIONS``. Searched as ``rag ask`` searches: the index's tuned
    fusion when it has one, else hybrid (a tuned BM25 alone gives no comparable confidence and
    ``ask`` then uses no threshold, so hybrid is calibrated, for an explicit ``--mode``)."""
    from mentor.rag.tune import resolve_search

    index_folder = retriever.folder
    search = resolve_search(index_folder, {})
    if search.mode == "bm25":
        search = SearchConfig(mode="hybrid")
    existing = load_calibration(index_folder)
    if existing is not None and not existing.automatic and not force:
        return None
    answerable, source = synthetic_questions(index_folder), SOURCE_SYNTHETIC
    if len(answerable) < MIN_SYNTHETIC:
        answerable, source = questions_from_chunks(retriever.chunks), SOURCE_CHUNKS
    if not answerable:
        return None
    trim = KEYWORD_TRIM if source == SOURCE_CHUNKS else 0.0
    result = calibrate(retriever, answerable, search=search, source=source, trim=trim)
    result.save(index_folder)
    return result


_SENTENCE = re.compile(r"[^.!?\n]+[.!?]?")
_WORD = re.compile(r"[A-Za-z][\w'-]*|\d[\w.,-]*")


def questions_from_chunks(
    chunks: Sequence[Chunk], n: int = 40, *, seed: int = 0, words: int = 6
) -> list[str]:
    """Keyword queries drawn from the documents, for when the user has no eval set.

    Each is the first ``words`` content words of a random sentence of a random chunk, the way
    people type searches. They share more words with their chunk than real questions do, so
    the threshold they give errs on the side of refusing; an eval set of real questions is
    better.
    """
    rng = random.Random(seed)
    picked = rng.sample(list(chunks), min(n, len(chunks)))
    queries = []
    for chunk in picked:
        sentences = [s for s in _SENTENCE.findall(chunk.text) if len(_WORD.findall(s)) >= 3]
        if not sentences:
            continue
        kept = [w for w in _WORD.findall(rng.choice(sentences)) if w.lower() not in STOP_WORDS]
        if kept:
            queries.append(" ".join(kept[:words]))
    return queries
