"""Keep a trained reranker only when it pays, and rescore only as deep as it needs.

After training, :func:`judge_reranker` runs the held-out synthetic questions (their documents
were never trained on) through the first stage, scores each question's deepest candidate list
with the reranker once, and replays the rerank stage of :meth:`Retriever.search` at every
candidate depth from those scores. Two decisions follow from the per-question nDCG@10:

- the depth: the shortest one whose nDCG@10 is within noise of the deepest's (the paired
  bootstrap interval of the difference reaches 0, and the mean gives up at most
  ``tolerance``); scoring cost grows with the depth, so this is the latency knob;
- keep or drop: the reranker at that depth against the first stage alone, by paired bootstrap;
  kept only when the interval of the gain lies above 0.

The verdict is written to ``reranker.json`` in the index folder (and a copy in the reranker's
folder); ``mentor rag search``, ``ask``, ``eval``, ``diagnose``, the server and the bakeoff then
use the reranker by default only when it was kept, at the chosen depth (one rule:
:func:`chosen_reranker`). The first stage is a parameter, so a tuned first stage can be the
one the reranker must beat.

Run: ``mentor rag train-reranker --index idx --out idx/reranker`` (judges and saves the verdict);
``mentor rag judge-reranker --index idx --reranker idx/reranker`` to judge again.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from mentor.evaluate.retrieval import ndcg_at_k, reciprocal_rank_fusion
from mentor.evaluate.stats import Estimate, mean_of, paired_bootstrap
from mentor.rag.index import embed_input
from mentor.rag.retrieve import Reranker, SearchConfig
from mentor.utils.fs import atomic_write_text

DECISION = "reranker.json"
HELD_OUT = "held-out-questions.jsonl"
"""In a trained reranker's folder: the questions it never saw, to judge it on again."""
DEPTHS = (5, 10, 15, 20, 30, 50)
CUTOFF = 10
"""nDCG@10: the cut-off every depth is compared at."""


def rerank_ranking(
    first: Sequence[str], scores: Sequence[float], depth: int, *, fusion: bool, rrf_k: float
) -> list[str]:
    """The order :meth:`Retriever.search` returns when the reranker rescores the top ``depth``.

    ``first`` is the first stage's order (ids), ``scores`` the reranker's scores of at least
    its top ``depth``. Rescored ids come first, by score (fused with the first stage's order by
    RRF when ``fusion``), then the rest in first-stage order. Ties break as the search's do.
    """
    if depth < 1:
        raise ValueError(f"depth must be >= 1, got {depth}")
    head = list(first[:depth])
    if len(scores) < len(head):
        raise ValueError(f"{len(scores)} scores for a head of {len(head)}")
    reranked = [i for i, _ in sorted(zip(head, scores, strict=False), key=lambda x: -x[1])]
    if fusion:
        both = {"first": head, "rerank": reranked}
        top = [i for i, _ in reciprocal_rank_fusion(both, k=rrf_k)]
    else:
        top = reranked
    return top + list(first[depth:])


def choose_depth(
    per_query: Mapping[int, Sequence[float]],
    *,
    tolerance: float = 0.01,
    confidence: float = 0.95,
    seed: int = 0,
) -> int:
    """The shortest depth whose mean per-query score is within noise of the deepest's.

    ``per_query`` maps a depth to its per-question scores, aligned across depths. A depth
    qualifies when the paired bootstrap interval of (it - deepest) reaches 0 and its mean gives
    up at most ``tolerance``: both, so neither a noisy small set nor a huge one that makes
    every hair significant decides alone.
    """
    if not per_query:
        raise ValueError("no depths to choose from")
    depths = sorted(per_query)
    deepest = per_query[depths[-1]]
    n = len(deepest)
    if any(len(per_query[d]) != n for d in depths):
        raise ValueError("every depth needs one score per question, aligned")
    if n == 0:
        return depths[-1]
    for depth in depths[:-1]:
        diff = paired_bootstrap(
            mean_of(per_query[depth]), mean_of(deepest), n, confidence=confidence, seed=seed
        )
        if diff.high >= 0 and diff.value >= -tolerance:
            return depth
    return depths[-1]


@dataclass
class RerankDecision:
    """Whether a reranker beat the first stage on held-out questions, and at what depth."""

    keep: bool
    depth: int
    """The candidate depth to rescore (``SearchConfig.rerank_depth``)."""
    fusion: bool
    """Whether the reranker's order is fused with the first stage's (``rerank_fusion``)."""
    first_stage: float
    """Mean nDCG@10 of the first stage alone."""
    reranked: float
    """Mean nDCG@10 with the reranker at ``depth``."""
    gain: Estimate
    """reranked - first stage, with its paired bootstrap interval."""
    by_depth: dict[int, float]
    """Mean nDCG@10 at each depth measured."""
    queries: int
    reranker: str
    """The reranker's folder (as given)."""
    first_stage_config: dict[str, Any] = field(default_factory=dict)
    """The SearchConfig the reranker was compared against (filters left out)."""
    score_ms_per_passage: float = 0.0
    """Reranker scoring time per passage during the judgement (batched)."""
    created: str = ""

    def reason(self) -> str:
        g = self.gain
        verdict = "kept" if self.keep else "dropped"
        return (
            f"reranker {verdict}: nDCG@10 {self.first_stage:.3f} -> {self.reranked:.3f} at depth "
            f"{self.depth} on {self.queries} held-out questions (gain {g.value:+.3f}, "
            f"95% interval {g.low:+.3f} .. {g.high:+.3f}); rescoring {self.depth} candidates "
            f"took about {self.depth * self.score_ms_per_passage:.0f} ms a query while judging"
        )

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["by_depth"] = {str(k): v for k, v in self.by_depth.items()}
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> RerankDecision:
        values = dict(data)
        values["gain"] = Estimate(**values["gain"])
        values["by_depth"] = {int(k): float(v) for k, v in values["by_depth"].items()}
        return cls(**values)


def judge_reranker(
    retriever: Any,
    queries: Mapping[str, str],
    positives: Mapping[str, set[str]],
    reranker: Reranker,
    first_stage: SearchConfig = SearchConfig(),
    *,
    reranker_name: str = "",
    depths: Sequence[int] = DEPTHS,
    fusion: bool | None = None,
    tolerance: float = 0.01,
    confidence: float = 0.95,
    seed: int = 0,
) -> RerankDecision:
    """Compare ``first_stage`` alone with ``first_stage`` + ``reranker`` on held-out questions.

    ``retriever`` is a :class:`~mentor.rag.retrieve.Retriever` (anything with ``search`` and
    ``chunks``); ``positives`` maps a query id to its relevant chunk ids (synthetic questions)
    or doc ids (judgements); nDCG@10 is over chunks, a chunk relevant when either of its ids is
    listed. ``fusion`` None keeps ``first_stage.rerank_fusion``. Each question's deepest list
    is scored once; shallower depths reuse a prefix of those scores, as a search at that depth
    would compute them.
    """
    asked = [q for q in queries if positives.get(q)]
    if not asked:
        raise ValueError("no held-out questions with a relevant passage to judge the reranker on")
    depths = sorted(set(depths))
    if not depths or depths[0] < 1:
        raise ValueError(f"depths must be >= 1, got {list(depths)}")
    fuse = first_stage.rerank_fusion if fusion is None else fusion
    deepest = depths[-1]
    config = replace(
        first_stage, k=max(deepest, CUTOFF), candidates=max(first_stage.candidates, deepest)
    )
    chunk_ids = {c.chunk_id for c in retriever.chunks}
    doc_sizes = Counter(c.doc_id for c in retriever.chunks)
    base: list[float] = []
    per_depth: dict[int, list[float]] = {d: [] for d in depths}
    scored, seconds = 0, 0.0
    for qid in asked:
        relevant = positives[qid]
        hits = retriever.search(queries[qid], config).hits
        ids = [h.chunk.chunk_id for h in hits]
        gains = {
            h.chunk.chunk_id: 1
            for h in hits
            if h.chunk.chunk_id in relevant or h.chunk.doc_id in relevant
        }
        # Relevant chunks the search missed still count in the ideal ranking.
        units = sum(1 if r in chunk_ids else doc_sizes.get(r, 0) for r in relevant)
        missing = max(0, units - len(gains))
        judged = gains | {f"missing:{i}": 1 for i in range(missing)}
        base.append(ndcg_at_k(judged, ids, CUTOFF))
        passages = [embed_input(h.chunk) for h in hits[:deepest]]
        t0 = time.perf_counter()
        scores = reranker.score(queries[qid], passages) if passages else []
        seconds += time.perf_counter() - t0
        scored += len(passages)
        for depth in depths:
            order = rerank_ranking(ids, scores, depth, fusion=fuse, rrf_k=first_stage.rrf_k)
            per_depth[depth].append(ndcg_at_k(judged, order, CUTOFF))
    depth = choose_depth(per_depth, tolerance=tolerance, confidence=confidence, seed=seed)
    chosen = per_depth[depth]
    gain = paired_bootstrap(
        mean_of(chosen), mean_of(base), len(base), confidence=confidence, seed=seed
    )
    settings = {k: v for k, v in asdict(first_stage).items() if k != "filters"}
    return RerankDecision(
        keep=gain.low > 0,
        depth=depth,
        fusion=fuse,
        first_stage=float(np.mean(base)),
        reranked=float(np.mean(chosen)),
        gain=gain,
        by_depth={d: float(np.mean(v)) for d, v in per_depth.items()},
        queries=len(base),
        reranker=reranker_name or str(getattr(reranker, "name", "")),
        first_stage_config=settings,
        score_ms_per_passage=1000 * seconds / max(scored, 1),
        created=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    )


def save_decision(decision: RerankDecision, index: Path, reranker: Path | None = None) -> Path:
    """Write the verdict to ``index/reranker.json`` (and into ``reranker``'s folder)."""
    text = json.dumps(decision.to_dict(), indent=2)
    atomic_write_text(index / DECISION, text)
    if reranker is not None and reranker.is_dir():
        atomic_write_text(reranker / DECISION, text)
    return index / DECISION


def load_decision(index: Path) -> RerankDecision | None:
    """The saved verdict of ``index``, or None when no reranker was judged for it."""
    path = index / DECISION
    if not path.exists():
        return None
    try:
        return RerankDecision.from_dict(json.loads(path.read_text()))
    except (ValueError, TypeError, KeyError) as exc:
        raise ValueError(f"{path}: unreadable reranker verdict ({exc}); judge it again") from None


def default_reranker(index: Path) -> tuple[Path, RerankDecision] | None:
    """The reranker ``search`` and ``ask`` use when no flag says otherwise: the judged one, if
    it was kept and its folder is still there (a relative path is read from the index)."""
    decision = load_decision(index)
    if decision is None or not decision.keep or not decision.reranker:
        return None
    folder = Path(decision.reranker)
    if not folder.is_absolute():
        folder = index / folder
    return (folder, decision) if (folder / "config.json").is_file() else None


def write_questions(
    path: Path, queries: Mapping[str, str], positives: Mapping[str, set[str]]
) -> None:
    """Held-out questions as JSONL: {"id", "question", "relevant": [chunk or doc ids]}."""
    rows = [
        json.dumps({"id": q, "question": text, "relevant": sorted(positives.get(q, set()))})
        for q, text in queries.items()
    ]
    atomic_write_text(path, "".join(row + "\n" for row in rows))


def read_questions(path: Path) -> tuple[dict[str, str], dict[str, set[str]]]:
    """What :func:`write_questions` wrote: query id -> text, query id -> relevant ids."""
    queries: dict[str, str] = {}
    positives: dict[str, set[str]] = {}
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            qid, text, relevant = str(row["id"]), str(row["question"]), row["relevant"]
        except (json.JSONDecodeError, KeyError, TypeError) as exc:
            raise ValueError(f"{path}:{number}: expected id, question, relevant ({exc})") from None
        queries[qid] = text
        positives[qid] = {str(r) for r in relevant}
    return queries, positives


def chosen_reranker(
    index: Path | None, folder: Path | None, use: bool | None, device: str = "auto"
) -> tuple[Reranker | None, int | None]:
    """The one rule for every caller (search, ask, eval, diagnose, the server, the bakeoff):
    the reranker for a search and its depth. ``use`` False: none; a ``folder`` given: that one
    (depth left to the caller); else the index's judged reranker when it was kept, at its
    chosen depth (``use`` True and none kept: ValueError). Raises ValueError on an unreadable
    verdict."""
    if use is False:
        return None, None
    if folder is not None:
        return _load_reranker(folder, device), None
    kept = default_reranker(index) if index is not None else None
    if kept is None:
        if use:
            raise ValueError(
                f"{index}: no kept reranker; train one with: mentor rag train-reranker"
            )
        return None, None
    path, decision = kept
    return _load_reranker(path, device), decision.depth


def _load_reranker(folder: Path, device: str) -> Reranker:
    from mentor.rag.reranker import CrossEncoderReranker

    return CrossEncoderReranker(folder, device="cpu" if device == "auto" else device)
