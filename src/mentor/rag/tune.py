"""Tune retrieval per index and remember the answer: query expansion, and the fusion setting.

Fusion (``mentor rag tune --index idx``, no labels needed): each tuning question of the index's
self-evaluation set (:mod:`mentor.rag.selfeval`) is searched ONCE by the dense retriever and
once by BM25, to a fixed depth, with scores; every candidate setting (mode, RRF k and weights,
convex fusion's alpha and normalisation, candidate depth) is then scored offline from those two
lists by the pure functions of :mod:`mentor.rag.fusion`, with no search repeated. The best on
the tuning part is then set against the reference settings on the held-out part, and the
first one not measurably worse than the best there is kept (:func:`simplest_within_noise`), in
the order of :data:`PREFERENCE`: the default hybrid first, then ``tuned`` (the tuning part's
pick, which BM25 and dense competed for), then ``bm25`` (no embedder) and ``dense`` (one
embedding). So a corpus where BM25 beats fusion beyond noise ends up with BM25 (or a setting
within noise of it), and a difference within noise does not change the default.
The choice is saved as ``fusion.json`` beside the index, and :func:`resolve_search` gives it
to ``search``, ``ask``, ``eval``, ``diagnose``, the server and the bakeoff whenever the user did
not set a flag.

Expansion (with ``--queries``): decide, on the user's own questions, whether query expansion
helps.

``mentor rag tune`` evaluates retrieval with no expansion, multi-query and HyDE on up to
``max_queries`` judged questions and writes ``tuning.json`` beside the index. ``search``, ``ask``
and ``diagnose`` then use expansion only when it beat plain retrieval by at least ``margin``
nDCG@10 there ("on by default only where it helps").

Run: ``mentor rag tune --index idx --queries qa.jsonl``.
"""

from __future__ import annotations

import json
import random
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any, get_args

from mentor.evaluate.retrieval import ndcg_at_k
from mentor.evaluate.stats import Estimate, mean_of, paired_bootstrap
from mentor.models.protocols import Generator
from mentor.rag.evaluation import EvalSet, evaluate_retrieval, subset
from mentor.rag.expansion import ExpansionName, QueryExpander, make_expander
from mentor.rag.fusion import Scored, fuse
from mentor.rag.retrieve import Reranker, Retriever, SearchConfig, SearchResult
from mentor.rag.synthetic import SyntheticQuestion
from mentor.utils.fs import atomic_write_text

TUNING = "tuning.json"
FUSION = "fusion.json"
TUNED_FIELDS = (
    "mode",
    "fusion",
    "rrf_k",
    "dense_weight",
    "bm25_weight",
    "alpha",
    "normalization",
    "candidates",
)
"""The SearchConfig fields the fusion tuner sets (and ``fusion.json`` holds)."""
SIMPLICITY = ("bm25", "dense", "hybrid", "tuned")
"""The names of :data:`REFERENCES` and the tuned setting, cheapest query first (no embedder,
one embedding, both with default RRF, both with a tuned fusion)."""
PREFERENCE = ("hybrid", "tuned", "bm25", "dense")
"""The order the guard keeps them in: the fixed recipe (default hybrid) first, so it changes
only where another setting beats it beyond noise (on the Tidepool handbook, BM25 "within noise"
of hybrid on synthetic questions scored 0.021 below it on judged ones); then the setting chosen
on the tuning questions (the whole grid, single retrievers included, competed for it); then the
cheaper ones. A single retriever ahead of the tuned setting let the synthetic questions' lexical
lean decide: on SciFact with 127 held-out questions, hybrid lost beyond noise to the tuned convex
fusion, BM25 was within noise of it and was kept, and scored 0.694 on judged questions against
the tuned setting's 0.75."""
REFERENCES = (SearchConfig(mode="bm25"), SearchConfig(mode="dense"), SearchConfig())
"""bm25, dense and hybrid as they are without tuning."""


@dataclass
class Tuning:
    expansion: ExpansionName
    """The setting chosen: the best one if it beat "none" by the margin, else "none"."""
    ndcg_at_10: dict[str, float]
    p50_ms: dict[str, float]
    queries: int
    margin: float
    created: str

    def save(self, index: Path) -> None:
        atomic_write_text(index / TUNING, json.dumps(asdict(self), indent=2))


def load_tuning(index: Path) -> Tuning | None:
    path = index / TUNING
    return Tuning(**json.loads(path.read_text())) if path.exists() else None


class ExpandingSearcher:
    """A retriever that always expands queries with one expander (for ask and diagnose)."""

    def __init__(self, retriever: Retriever, expander: QueryExpander | None) -> None:
        self.retriever = retriever
        self.expander = expander

    @property
    def chunks(self) -> list[object]:
        return list(self.retriever.chunks)

    def search(
        self, query: str, config: SearchConfig = SearchConfig(), reranker: Reranker | None = None
    ) -> SearchResult:
        return self.retriever.search(query, config, reranker=reranker, expander=self.expander)


def tune_expansion(
    retriever: Retriever,
    eval_set: EvalSet,
    generator: Generator,
    config: SearchConfig,
    *,
    max_queries: int = 40,
    margin: float = 0.01,
    seed: int = 0,
) -> Tuning:
    ids = sorted(eval_set.queries)
    random.Random(seed).shuffle(ids)
    sample = subset(eval_set, dict.fromkeys(ids[:max_queries]))
    scores: dict[str, float] = {}
    latency: dict[str, float] = {}
    for name in get_args(ExpansionName):
        expander = make_expander(name, generator)
        probe = ExpandingSearcher(retriever, expander)
        report = evaluate_retrieval(probe, sample, config, ks=(10,))
        scores[name] = report.retrieval.metrics["ndcg@10"]
        latency[name] = report.latency["total"].p50_ms
    best = max(scores, key=lambda n: (scores[n], n == "none"))
    chosen: ExpansionName = best if scores[best] >= scores["none"] + margin else "none"  # type: ignore[assignment]
    return Tuning(
        chosen,
        scores,
        latency,
        len(sample.queries),
        margin,
        time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    )


# ---------------------------------------------------------------------------------------------
# Fusion tuning


@dataclass
class Retrieved:
    """One question's two rankings, fetched once: chunk ids with their retriever's scores."""

    dense: Scored
    bm25: Scored


def retrieve_once(
    retriever: Retriever,
    queries: Mapping[str, str],
    depth: int,
    progress: Callable[[int, int], None] | None = None,
) -> dict[str, Retrieved]:
    """Each query searched by the dense retriever and by BM25 alone, ``depth`` deep."""
    out: dict[str, Retrieved] = {}
    configs = {m: SearchConfig(mode=m, k=depth, candidates=depth) for m in ("dense", "bm25")}
    for done, (qid, text) in enumerate(queries.items(), start=1):
        lists = {
            mode: [(h.chunk.chunk_id, h.score) for h in retriever.search(text, config).hits]
            for mode, config in configs.items()
        }
        out[qid] = Retrieved(lists["dense"], lists["bm25"])
        if progress is not None:
            progress(done, len(queries))
    return out


def offline_ranking(found: Retrieved, config: SearchConfig) -> list[str]:
    """The chunk ids ``config`` would return (before ``k``), from the fetched lists: what
    :meth:`Retriever.search` computes, without searching again."""
    depth = max(config.candidates, config.k)
    if config.mode == "dense":
        return [c for c, _ in found.dense[:depth]]
    if config.mode == "bm25":
        return [c for c, _ in found.bm25[:depth]]
    lists = {"dense:0": found.dense, "bm25:0": found.bm25}
    fused = fuse(
        lists,
        config.weights(lists),
        fusion=config.fusion,
        rrf_k=config.rrf_k,
        method=config.normalization,
        depth=depth,
    )
    return [c for c, _ in fused]


def per_query_ndcg(
    found: Mapping[str, Retrieved],
    relevant: Mapping[str, str],
    doc_of: Mapping[str, str],
    config: SearchConfig,
    k: int = 10,
) -> list[float]:
    """nDCG@k at the document level (a document ranks where its best chunk ranks), one value
    per query of ``relevant`` (query id -> its relevant document), in that order."""
    scores = []
    for qid, doc in relevant.items():
        docs = list(dict.fromkeys(doc_of[c] for c in offline_ranking(found[qid], config)))
        scores.append(ndcg_at_k({doc: 1}, docs, k))
    return scores


def candidate_grid(
    rrf_ks: Sequence[float] = (10.0, 30.0, 60.0, 100.0),
    dense_weights: Sequence[float] = (0.25, 0.5, 1.0, 2.0, 4.0),
    alphas: Sequence[float] = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9),
    depths: Sequence[int] = (20, 50, 100),
) -> list[SearchConfig]:
    """The settings tried, simplest first: BM25, dense, default hybrid, then RRF (k x dense
    weight against BM25's 1, only the ratio counts) and convex (alpha x normalisation), each at
    every candidate depth."""
    grid = list(REFERENCES)
    for depth in depths:
        for rrf_k in rrf_ks:
            for weight in dense_weights:
                grid.append(SearchConfig(rrf_k=rrf_k, dense_weight=weight, candidates=depth))
        for alpha in alphas:
            for norm in ("minmax", "zscore"):
                grid.append(
                    SearchConfig(fusion="convex", alpha=alpha, normalization=norm, candidates=depth)
                )
    unique = {tuple(_fields(c).values()): c for c in reversed(grid)}  # first one wins
    return sorted(unique.values(), key=grid.index)


def simplest_within_noise(
    per_query: Mapping[str, Sequence[float]],
    order: Sequence[str],
    *,
    resamples: int = 1000,
    seed: int = 0,
) -> tuple[str, dict[str, Estimate]]:
    """The first name in ``order`` (simplest first) whose mean is not measurably below the best
    one's, and each name's paired bootstrap difference (its mean minus the best's).

    "Measurably below": the 95% interval of the paired difference lies wholly under 0."""
    means = {name: sum(per_query[name]) / len(per_query[name]) for name in order}
    best = max(order, key=lambda n: (means[n], -order.index(n)))
    n = len(per_query[best])
    gaps = {
        name: paired_bootstrap(
            mean_of(per_query[name]), mean_of(per_query[best]), n, resamples=resamples, seed=seed
        )
        for name in order
    }
    chosen = next(name for name in order if not gaps[name].high < 0)
    return chosen, gaps


def _fields(config: SearchConfig) -> dict[str, Any]:
    return {name: getattr(config, name) for name in TUNED_FIELDS}


@dataclass
class FusionTuning:
    """What ``mentor rag tune`` chose for an index, and the scores that chose it."""

    setting: dict[str, Any]
    """The chosen SearchConfig fields (those in TUNED_FIELDS)."""
    chosen: str
    """Which of bm25, dense, hybrid (default) or tuned it is."""
    best_on_tuning: dict[str, Any]
    """The setting that scored best on the tuning part (it may have lost the guard)."""
    tuning_ndcg: dict[str, float]
    """Mean nDCG@10 on the tuning part: bm25, dense, hybrid and tuned."""
    held_out_ndcg: dict[str, float]
    """Mean nDCG@10 on the held-out part, same keys."""
    held_out_gap: dict[str, list[float]]
    """Each one's paired difference from the held-out best: [value, low, high] (95%)."""
    settings_tried: int
    tuning_questions: int
    held_out_questions: int
    seconds: float
    created: str = field(default_factory=lambda: time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))

    def save(self, index: Path) -> Path:
        path = index / FUSION
        atomic_write_text(path, json.dumps(asdict(self), indent=2))
        return path

    def apply(self, config: SearchConfig) -> SearchConfig:
        return replace(config, **self.setting)


def load_fusion(index: Path) -> FusionTuning | None:
    """The index's tuned fusion, or None when it was never tuned."""
    path = index / FUSION
    if not path.exists():
        return None
    raw = json.loads(path.read_text())
    raw["setting"] = {k: v for k, v in raw["setting"].items() if k in TUNED_FIELDS}
    return FusionTuning(**raw)


def resolve_search(
    index: Path | None, explicit: Mapping[str, Any], base: SearchConfig = SearchConfig()
) -> SearchConfig:
    """The one rule for every caller: an explicit value (not None) > the index's tuned setting
    > ``base``. ``explicit`` maps SearchConfig field names to the user's flags."""
    known = {f.name for f in fields(SearchConfig)}
    if unknown := set(explicit) - known:
        raise ValueError(f"not SearchConfig fields: {sorted(unknown)}")
    tuned = load_fusion(index) if index is not None else None
    config = tuned.apply(base) if tuned is not None else base
    given = {name: value for name, value in explicit.items() if value is not None}
    return replace(config, **given)


def tune_fusion(
    retriever: Retriever,
    tuning: Sequence[SyntheticQuestion],
    held_out: Sequence[SyntheticQuestion],
    *,
    grid: Sequence[SearchConfig] | None = None,
    resamples: int = 1000,
    seed: int = 0,
    progress: Callable[[str, int, int], None] | None = None,
) -> FusionTuning:
    """Choose the fusion setting on ``tuning``, guard it on ``held_out`` (see the module
    docstring). ``progress(stage, done, total)``."""
    if not tuning or not held_out:
        raise ValueError(
            f"need questions in both parts, got {len(tuning)} tuning and {len(held_out)} held "
            "out: write questions for more chunks (or documents)"
        )
    started = time.perf_counter()
    candidates = list(grid) if grid is not None else candidate_grid()
    depth = max(max(c.candidates, c.k) for c in candidates)
    questions = {f"t{i}": q for i, q in enumerate(tuning)}
    questions.update({f"h{i}": q for i, q in enumerate(held_out)})

    def step(stage: str) -> Callable[[int, int], None] | None:
        return None if progress is None else lambda done, total: progress(stage, done, total)

    found = retrieve_once(
        retriever, {q: s.question for q, s in questions.items()}, depth, step("retrieving")
    )
    doc_of = {c.chunk_id: c.doc_id for c in retriever.chunks}
    tune_rel = {q: s.doc_id for q, s in questions.items() if q.startswith("t")}
    held_rel = {q: s.doc_id for q, s in questions.items() if q.startswith("h")}

    means: list[float] = []
    for done, config in enumerate(candidates, start=1):
        scores = per_query_ndcg(found, tune_rel, doc_of, config)
        means.append(sum(scores) / len(scores))
        if progress is not None:
            progress("scoring settings", done, len(candidates))
    # Ties go to the earlier, simpler setting.
    best = candidates[max(range(len(candidates)), key=lambda i: (means[i], -i))]

    named = dict(zip(SIMPLICITY, [*REFERENCES, best], strict=True))
    held = {name: per_query_ndcg(found, held_rel, doc_of, c) for name, c in named.items()}
    # When the best on tuning is itself a reference, "tuned" is that reference under another name.
    order = [n for n in PREFERENCE if n != "tuned" or best not in REFERENCES]
    chosen, gaps = simplest_within_noise(held, order, resamples=resamples, seed=seed)
    tune_scores = {
        name: sum(s) / len(s)
        for name, s in ((n, per_query_ndcg(found, tune_rel, doc_of, c)) for n, c in named.items())
    }
    return FusionTuning(
        setting=_fields(named[chosen]),
        chosen=chosen,
        best_on_tuning=_fields(best),
        tuning_ndcg=tune_scores,
        held_out_ndcg={n: sum(s) / len(s) for n, s in held.items()},
        held_out_gap={n: [e.value, e.low, e.high] for n, e in gaps.items()},
        settings_tried=len(candidates),
        tuning_questions=len(tune_rel),
        held_out_questions=len(held_rel),
        seconds=time.perf_counter() - started,
    )
