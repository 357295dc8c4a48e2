"""Tune the BM25 side of an index to its corpus, on the index's own synthetic questions.

Three cheap knobs, tried in stages, each stage starting from the best of the one before:

1. the analyser: the corpus' language is read off a sample of chunks (:func:`detect_language`,
   the share of words that are stop words of one language only), and BM25 with that language's
   stop words and Snowball stemmer is tried, then without stemming, then without stop words
   (words only when no language is recognised), against mentor's default (English, both);
2. the title/heading weight: the ``title > heading`` line repeated 0 to 3 times in front of a
   chunk's BM25 text, the classic cheap approximation of a weighted title field (BM25F);
3. BM25's k1 and b, on a small grid (one tokenization serves the whole grid).

Each candidate BM25 is built in memory from the stored chunks (seconds for ten thousand) and
scored alone on the tuning questions (nDCG@10 at document level, as the fusion tuner scores).
Each stage's winner is then set against the simpler ones on the held-out questions with
:func:`mentor.rag.tune.simplest_within_noise`: the default is kept unless a change is better
beyond noise. The kept settings go in the manifest's config (so ``mentor rag index --sync``
rebuilds BM25 the same way) and the index's BM25 is rebuilt with them (written beside the old
one, then the manifest points at it); the analyser is saved inside the BM25 folder, so a query
is always tokenized as the index was. What was tried, with scores, is saved as
``lexical.json``.

doc2query-style expansion (indexing questions written for each chunk) is not done: the
self-evaluation questions are themselves questions written for chunks, so indexing such
questions with their chunks would let the evaluation see its own answers.

Run: ``mentor rag tune --index idx`` (``--no-lexical`` to skip this part).
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from mentor.rag.bm25 import STOPWORD_LISTS, Analyzer, BM25Index, TermCounts, count_terms
from mentor.rag.index import (
    BM25_BATCH_ROWS,
    IndexConfig,
    Manifest,
    bm25_texts,
    open_store,
    set_bm25,
)
from mentor.rag.retrieve import SearchConfig
from mentor.rag.selfeval import SelfEvalSet
from mentor.rag.store import LanceStore
from mentor.rag.tune import Retrieved, per_query_ndcg, simplest_within_noise
from mentor.utils.fs import atomic_write_text

LEXICAL = "lexical.json"
LEXICAL_FIELDS = (
    "bm25_language",
    "bm25_stem",
    "bm25_stopwords",
    "bm25_heading_weight",
    "bm25_k1",
    "bm25_b",
)
"""The IndexConfig fields the lexical tuner sets."""
STAGES = ("default", "analyser", "heading", "k1-b")
"""Simplest first: each stage's setting adds one change to the one before."""
HEADING_WEIGHTS = (1, 0, 2, 3)
"""Times the title > heading line is repeated; mentor's default first (ties go to it)."""
K1S = (1.5, 0.9, 1.2)
BS = (0.75, 0.4, 0.9)
DEPTH = 100
"""Chunks BM25 returns per question: enough for ten distinct documents."""
SAMPLE_CHUNKS = 300
"""Chunks, spread over the table, whose words decide the language."""
MIN_STOPWORD_SHARE = 0.03
"""Below this share of words that are one language's own stop words, the language is unknown."""
_WORD = re.compile(r"(?u)\b\w\w*\b")


def _detection_lists() -> dict[str, frozenset[str]]:
    """Each language's stop words less those of any other language: the words that tell it.

    English uses bm25s's longer NLTK-style list, like the other languages' lists."""
    import bm25s.stopwords

    lists = {
        lang: frozenset(getattr(bm25s.stopwords, name)) for lang, name in STOPWORD_LISTS.items()
    }
    lists["english"] = frozenset(bm25s.stopwords.STOPWORDS_EN_PLUS)
    return {
        lang: words - frozenset().union(*(w for other, w in lists.items() if other != lang))
        for lang, words in lists.items()
    }


def stopword_shares(texts: Sequence[str]) -> dict[str, float]:
    """Per language, the share of the words of ``texts`` that are its own stop words."""
    words = [w for text in texts for w in _WORD.findall(text.lower())]
    if not words:
        return dict.fromkeys(STOPWORD_LISTS, 0.0)
    return {
        lang: sum(w in own for w in words) / len(words) for lang, own in _detection_lists().items()
    }


def detect_language(texts: Sequence[str]) -> tuple[str | None, dict[str, float]]:
    """The language of ``texts`` (None when no language's stop words reach
    MIN_STOPWORD_SHARE of the words), and every language's share."""
    shares = stopword_shares(texts)
    best = max(shares, key=lambda lang: shares[lang])
    return (best if shares[best] >= MIN_STOPWORD_SHARE else None), shares


def _sample_texts(store: LanceStore, n: int = SAMPLE_CHUNKS) -> list[str]:
    step = max(1, len(store) // n)
    sample: list[str] = []
    row = 0
    for batch in store.column_batches(("text",), BM25_BATCH_ROWS):
        for text in batch["text"]:
            if row % step == 0:
                sample.append(text)
            row += 1
    return sample


def _setting(config: IndexConfig) -> dict[str, Any]:
    return {name: getattr(config, name) for name in LEXICAL_FIELDS}


def describe_setting(setting: Mapping[str, Any]) -> str:
    """A lexical setting in a few words."""
    analyzer = Analyzer(setting["bm25_language"], setting["bm25_stem"], setting["bm25_stopwords"])
    return (
        f"{analyzer.describe()}, heading x{setting['bm25_heading_weight']}, "
        f"k1={setting['bm25_k1']} b={setting['bm25_b']}"
    )


@dataclass
class LexicalTuning:
    """What the lexical tuner tried on an index, the scores, and what it kept."""

    setting: dict[str, Any]
    """The kept IndexConfig BM25 fields (LEXICAL_FIELDS)."""
    chosen: str
    """The stage whose setting was kept: default, analyser, heading or k1-b."""
    language: str | None
    """The language detected from a sample of chunks (None: unknown)."""
    language_shares: dict[str, float]
    """The three highest shares of words that are one language's own stop words."""
    tried: list[dict[str, Any]]
    """Every candidate: its stage, setting and mean nDCG@10 on the tuning questions."""
    stage_settings: dict[str, dict[str, Any]]
    """Each stage's winner on the tuning questions (stages that changed nothing left out)."""
    tuning_ndcg: dict[str, float]
    """Mean nDCG@10 of BM25 alone on the tuning questions, per stage."""
    held_out_ndcg: dict[str, float]
    held_out_gap: dict[str, list[float]]
    """Each stage's paired difference from the held-out best: [value, low, high] (95%)."""
    applied: bool
    """Whether the index's BM25 was rebuilt (False: it already had the kept setting)."""
    tuning_questions: int
    held_out_questions: int
    seconds: float
    created: str = field(default_factory=lambda: time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))

    def save(self, index: Path) -> Path:
        path = index / LEXICAL
        atomic_write_text(path, json.dumps(asdict(self), indent=2))
        return path


def load_lexical(index: Path) -> LexicalTuning | None:
    """The index's lexical tuning record, or None when it was never tuned."""
    path = index / LEXICAL
    return LexicalTuning(**json.loads(path.read_text())) if path.exists() else None


class _Scorer:
    """Builds candidate BM25s from the stored chunks and scores them on the questions."""

    def __init__(
        self,
        store: LanceStore,
        selfeval: SelfEvalSet,
        progress: Callable[[str, int, int], None] | None,
    ) -> None:
        self.store = store
        self.progress = progress
        self.chunk_ids: list[str] = []
        self.doc_of: dict[str, str] = {}
        self.questions = {f"t{i}": q.question for i, q in enumerate(selfeval.tuning)}
        self.questions.update({f"h{i}": q.question for i, q in enumerate(selfeval.held_out)})
        self.tuning = {f"t{i}": q.doc_id for i, q in enumerate(selfeval.tuning)}
        self.held_out = {f"h{i}": q.doc_id for i, q in enumerate(selfeval.held_out)}
        self._counts: dict[tuple[Analyzer, int], TermCounts] = {}
        self.tried: list[dict[str, Any]] = []

    def counts(self, config: IndexConfig) -> TermCounts:
        key = (config.analyzer, config.bm25_heading_weight)
        if key not in self._counts:
            chunk_ids: list[str] = []
            doc_ids: list[str] = []
            texts = bm25_texts(self.store, config.bm25_heading_weight, chunk_ids, doc_ids)
            self._counts[key] = count_terms(texts, config.analyzer)
            if not self.chunk_ids:
                self.chunk_ids = chunk_ids
                self.doc_of = dict(zip(chunk_ids, doc_ids, strict=True))
        return self._counts[key]

    def keep_only(self, config: IndexConfig) -> None:
        """Forget every tokenization but ``config``'s: memory holds one or two at a time."""
        key = (config.analyzer, config.bm25_heading_weight)
        self._counts = {k: v for k, v in self._counts.items() if k == key}

    def per_query(self, config: IndexConfig, relevant: Mapping[str, str]) -> list[float]:
        index = BM25Index.from_counts(self.counts(config), k1=config.bm25_k1, b=config.bm25_b)
        found = {
            qid: Retrieved(
                [],
                [(self.chunk_ids[row], s) for row, s in index.search(self.questions[qid], DEPTH)],
            )
            for qid in relevant
        }
        return per_query_ndcg(found, relevant, self.doc_of, SearchConfig(mode="bm25"))

    def best(self, stage: str, candidates: Sequence[IndexConfig]) -> IndexConfig:
        """The candidate with the best mean on the tuning questions; ties to the earliest."""
        unique = list({tuple(_setting(c).values()): c for c in reversed(candidates)}.values())
        unique.sort(key=candidates.index)
        means = []
        for done, config in enumerate(unique, start=1):
            scores = self.per_query(config, self.tuning)
            means.append(sum(scores) / len(scores))
            self.tried.append(
                {"stage": stage, "setting": _setting(config), "tuning_ndcg": means[-1]}
            )
            if self.progress is not None:
                self.progress(f"lexical: {stage}", done, len(unique))
        return unique[max(range(len(unique)), key=lambda i: (means[i], -i))]


def tune_lexical(
    index: Path,
    selfeval: SelfEvalSet,
    *,
    apply: bool = True,
    resamples: int = 1000,
    seed: int = 0,
    progress: Callable[[str, int, int], None] | None = None,
) -> LexicalTuning:
    """Choose the index's BM25 analyser, heading weight, k1 and b on the tuning questions, guard
    them on the held-out ones, and (``apply``) rebuild the index's BM25 with what is kept and
    save ``lexical.json`` (see the module docstring). ``progress(stage, done, total)``."""
    if not selfeval.tuning or not selfeval.held_out:
        raise ValueError(
            f"need questions in both parts, got {len(selfeval.tuning)} tuning and "
            f"{len(selfeval.held_out)} held out: write questions for more chunks (or documents)"
        )
    started = time.perf_counter()
    manifest = Manifest.read(index)
    store = open_store(index, manifest)
    language, shares = detect_language(_sample_texts(store))
    default = replace(manifest.config, **_setting(IndexConfig()))
    scorer = _Scorer(store, selfeval, progress)

    def analyser(lang: str | None, stem: bool, stop: bool) -> IndexConfig:
        return replace(default, bm25_language=lang, bm25_stem=stem, bm25_stopwords=stop)

    if language is None:
        variants = [analyser(None, False, False)]
    else:  # the language's stop words and stemmer, then without stemming, without stop words
        variants = [
            analyser(language, *both) for both in ((True, True), (False, True), (True, False))
        ]
    stages = {"default": default}
    held: dict[str, list[float]] = {}
    stages["analyser"] = scorer.best("analyser", [default, *variants])
    held["default"] = scorer.per_query(default, scorer.held_out)
    held["analyser"] = scorer.per_query(stages["analyser"], scorer.held_out)
    scorer.keep_only(stages["analyser"])
    stages["heading"] = scorer.best(
        "heading",
        [replace(stages["analyser"], bm25_heading_weight=w) for w in HEADING_WEIGHTS],
    )
    held["heading"] = scorer.per_query(stages["heading"], scorer.held_out)
    scorer.keep_only(stages["heading"])
    stages["k1-b"] = scorer.best(
        "k1-b", [replace(stages["heading"], bm25_k1=k1, bm25_b=b) for k1 in K1S for b in BS]
    )
    held["k1-b"] = scorer.per_query(stages["k1-b"], scorer.held_out)
    # A stage that changed nothing is the stage before it under another name.
    order = [
        name
        for i, name in enumerate(STAGES)
        if i == 0 or _setting(stages[name]) != _setting(stages[STAGES[i - 1]])
    ]
    held = {name: held[name] for name in order}
    chosen, gaps = simplest_within_noise(held, order, resamples=resamples, seed=seed)
    kept = stages[chosen]
    applied = False
    if apply and _setting(kept) != _setting(manifest.config):
        if progress is not None:
            progress("lexical: rebuilding BM25", 0, 1)
        set_bm25(index, replace(manifest.config, **_setting(kept)))
        applied = True
    tuning_mean = {tuple(t["setting"].values()): t["tuning_ndcg"] for t in scorer.tried}
    top = sorted(shares, key=lambda lang: -shares[lang])[:3]
    result = LexicalTuning(
        setting=_setting(kept),
        chosen=chosen,
        language=language,
        language_shares={lang: round(shares[lang], 4) for lang in top},
        tried=scorer.tried,
        stage_settings={name: _setting(stages[name]) for name in order},
        tuning_ndcg={n: tuning_mean[tuple(_setting(stages[n]).values())] for n in order},
        held_out_ndcg={name: sum(s) / len(s) for name, s in held.items()},
        held_out_gap={name: [e.value, e.low, e.high] for name, e in gaps.items()},
        applied=applied,
        tuning_questions=len(scorer.tuning),
        held_out_questions=len(scorer.held_out),
        seconds=time.perf_counter() - started,
    )
    if apply:
        result.save(index)
    return result
