"""How far can a first stage built from the packaged models go? Oracle ceilings on judged questions.

Issue 21 asks for a tuned first stage of 0.76 nDCG@10 on SciFact's held-out fifth. The tuner can
only choose among the settings it is given, so this bench asks what the best of several richer
first stages scores when the *judged* questions pick its weights (an oracle: what no label-free
tuner can beat), beside the index's own tuned setting and what the synthetic questions would
pick. Every list is scored at the document level, fused by z-score convex combination (the
fusion the tuner keeps on SciFact) over each list's top 50 documents.

Rows:
- ``tuned``: the index's saved setting (what ``search`` does);
- ``MiniLM + BM25``: the two lists of the index, oracle alpha;
- ``+ title``: a third list, the MiniLM cosine of the query and the document's title alone;
- ``+ sentences``: a third list, the best MiniLM cosine over the document's sentences (claims
  often restate one sentence of an abstract);
- ``+ mpnet`` (``--mpnet``, needs ``mentor models pull mpnet-base``; about 20 min for SciFact on
  2 cores in bf16): a third list, all-mpnet-base-v2 over title + text (its first 384 tokens);
- ``UPR`` (``--upr N``, about 5 s a question on 2 cores): the tuned top 10 of the first N judged
  questions reranked by SmolLM2-135M's mean log-probability of the question given the passage
  (Sachan et al., 2022), alone and fused with the first stage by RRF.

Run (on an index tuned by ``mentor rag index``):
  python bench/rag_ceiling.py --index IDX --corpus scifact [--mpnet] [--upr 161] [--cache DIR]
"""

from __future__ import annotations

import argparse
import re
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import numpy as np
import numpy.typing as npt
import torch
from rich.console import Console
from rich.table import Table

from mentor.evaluate.retrieval import ndcg_at_k
from mentor.models.loading import load_causal_lm, load_tokenizer, resolve_model_path
from mentor.rag.evaluation import EvalSet
from mentor.rag.fusion import fuse
from mentor.rag.records import Chunk
from mentor.rag.retrieve import Retriever
from mentor.rag.selfeval import SelfEvalSet, as_eval_set
from mentor.rag.tune import Retrieved, offline_ranking, resolve_search, retrieve_once
from mentor.utils.logs import quiet_libraries
from rag_beir import DEFAULT_DATA
from rag_selftune import _embedder, judged_set

console = Console()
DEPTH = 50
"""Documents each list contributes to the fusion."""
ALPHAS = tuple(round(a / 10, 1) for a in range(11))
THIRD = (0.1, 0.2, 0.3, 0.4)
"""Weights tried for a third list (the rest split between dense and BM25 by ALPHAS)."""
Docs = list[tuple[str, float]]


def doc_level(scored: Sequence[tuple[str, float]], doc_of: Mapping[str, str]) -> Docs:
    """Chunk hits to document hits: a document scores as its best chunk, in that chunk's place."""
    seen: set[str] = set()
    out: Docs = []
    for chunk_id, score in scored:
        doc = doc_of[chunk_id]
        if doc not in seen:
            seen.add(doc)
            out.append((doc, score))
    return out


def ranked_documents(chunk_ids: Sequence[str], doc_of: Mapping[str, str]) -> list[str]:
    """Chunk ids, best first, to document ids in the place of their best chunk."""
    return list(dict.fromkeys(doc_of[c] for c in chunk_ids))


def top_documents(scores: npt.NDArray[np.float32], owners: Sequence[str], n: int) -> Docs:
    """The best ``n`` documents of a row of unit scores, a document scoring as its best unit."""
    out: Docs = []
    seen: set[str] = set()
    for j in np.argsort(-scores):
        if owners[j] not in seen:
            seen.add(owners[j])
            out.append((owners[j], float(scores[j])))
            if len(out) == n:
                break
    return out


def mean_ndcg(rankings: Mapping[str, list[str]], judged: EvalSet) -> float:
    return float(np.mean([ndcg_at_k(dict(judged.qrels[q]), rankings[q], 10) for q in rankings]))


def fused(lists: Mapping[str, Docs], weights: Mapping[str, float]) -> list[str]:
    used = {name: lists[name][:DEPTH] for name, w in weights.items() if w > 0}
    ranking = fuse(used, {n: weights[n] for n in used}, fusion="convex", method="zscore")
    return [doc for doc, _ in ranking[:DEPTH]]


def weight_grid(third: str | None) -> list[dict[str, float]]:
    if third is None:
        return [{"dense": a, "bm25": 1 - a} for a in ALPHAS]
    return [
        {"dense": a * (1 - w), "bm25": (1 - a) * (1 - w), third: w} for a in ALPHAS for w in THIRD
    ]


def oracle(
    sets: Mapping[str, EvalSet], lists: Mapping[str, dict[str, Docs]], third: str | None
) -> tuple[float, float, float]:
    """(judged score of the judged-best weights, of the synthetic-best weights, synthetic best)."""
    scores: list[tuple[float, float]] = []
    for weights in weight_grid(third):
        per_set = []
        for name, questions in sets.items():
            rankings = {q: fused(lists[f"{name}:{q}"], weights) for q in questions.qrels}
            per_set.append(mean_ndcg(rankings, questions))
        scores.append((per_set[0], per_set[1]))
    judged_best = max(j for j, _ in scores)
    judged_of_pick, synthetic_best = max(scores, key=lambda js: (js[1], js[0]))
    return judged_best, judged_of_pick, synthetic_best


def sentences(text: str) -> list[str]:
    """Sentences of at least 12 words (shorter ones joined to the next)."""
    out, buffer = [], ""
    for part in re.split(r"(?<=[.!?])\s+(?=[A-Z(\[])", text):
        buffer = f"{buffer} {part}".strip()
        if len(buffer.split()) >= 12:
            out.append(buffer)
            buffer = ""
    return out + ([buffer] if buffer else [])


def cached(
    path: Path | None, make: Callable[[], npt.NDArray[np.float32]]
) -> npt.NDArray[np.float32]:
    if path is not None and path.exists():
        return np.asarray(np.load(path), dtype=np.float32)
    started = time.perf_counter()
    array = make()
    console.print(f"  embedded {len(array):,} texts in {time.perf_counter() - started:.0f} s")
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        np.save(path, array)
    return array


def documents(chunks: Sequence[Chunk]) -> dict[str, tuple[str, str]]:
    """doc id -> (title, its chunks' text in order, overlaps included)."""
    out: dict[str, tuple[str, str]] = {}
    for chunk in chunks:
        title, text = out.get(chunk.doc_id, (chunk.title, ""))
        out[chunk.doc_id] = (title, f"{text} {chunk.text}".strip())
    return out


def upr_scores(
    query: str, passages: Sequence[str], lm: torch.nn.Module, tokenizer: object
) -> list[float]:
    """Mean log-probability of the query's tokens after each passage and an instruction."""

    def encode(text: str) -> list[int]:
        return list(tokenizer(text).input_ids)  # type: ignore[operator]

    prompts = [
        encode(f"Passage: {p[:1500]}\nA claim supported by this passage: ")[-300:] for p in passages
    ]
    asked = encode(query)
    rows = [p + asked for p in prompts]
    width = max(map(len, rows))
    ids = torch.tensor([r + [0] * (width - len(r)) for r in rows])
    mask = torch.tensor([[1] * len(r) + [0] * (width - len(r)) for r in rows])
    with torch.inference_mode():
        logp = lm(input_ids=ids, attention_mask=mask).logits.float().log_softmax(-1)
    out = []
    for b, row in enumerate(rows):
        start = len(prompts[b])
        picked = logp[b, torch.arange(start - 1, len(row) - 1), torch.tensor(row[start:])]
        out.append(float(picked.mean()))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--index", type=Path, required=True, help="an index tuned by mentor")
    parser.add_argument("--corpus", choices=("scifact", "tidepool"), default="scifact")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="the SciFact folder")
    parser.add_argument("--mpnet", action="store_true", help="add the mpnet row (slow)")
    parser.add_argument("--upr", type=int, default=0, help="judged questions for the UPR rows")
    parser.add_argument("--cache", type=Path, help="folder to keep embeddings in between runs")
    args = parser.parse_args()
    quiet_libraries()

    embedder = _embedder(args.index)
    retriever = Retriever(args.index, embedder)
    self_eval = SelfEvalSet.load(args.index)
    if self_eval is None:
        raise SystemExit(f"{args.index}: no selfeval.json; tune the index first")
    sets = {"judged": judged_set(args.corpus, args.data, args.index)}
    sets["synthetic"] = as_eval_set(self_eval.held_out)
    texts = {f"{n}:{q}": t for n, s in sets.items() for q, t in s.queries.items() if q in s.qrels}
    console.print(f"searching {len(texts)} questions ...")
    found: dict[str, Retrieved] = retrieve_once(retriever, texts, 200)
    doc_of = {c.chunk_id: c.doc_id for c in retriever.chunks}
    lists = {
        key: {"dense": doc_level(f.dense, doc_of), "bm25": doc_level(f.bm25, doc_of)}
        for key, f in found.items()
    }
    query_vectors = embedder.embed(list(texts.values()))
    docs = documents(retriever.chunks)
    doc_ids = list(docs)

    def add_list(
        name: str,
        units: npt.NDArray[np.float32],
        owners: Sequence[str],
        vectors: npt.NDArray[np.float32],
    ) -> None:
        scores = vectors @ units.T
        for row, key in enumerate(texts):
            lists[key][name] = top_documents(scores[row], owners, 200)

    cache = args.cache
    console.print("titles ...")
    titles = cached(
        cache and cache / "titles.npy", lambda: embedder.embed([docs[d][0] for d in doc_ids])
    )
    add_list("title", titles, doc_ids, query_vectors)
    console.print("sentences ...")
    owners = [d for d in doc_ids for _ in sentences(docs[d][1])]
    units = [s for d in doc_ids for s in sentences(docs[d][1])]
    add_list(
        "sentences",
        cached(cache and cache / "sentences.npy", lambda: embedder.embed(units)),
        owners,
        query_vectors,
    )
    thirds: list[str | None] = [None, "title", "sentences"]
    if args.mpnet:
        from sentence_transformers import SentenceTransformer

        console.print("mpnet ...")
        mpnet = SentenceTransformer(str(resolve_model_path("mpnet-base")), device="cpu")
        mpnet.to(torch.bfloat16)

        def encode(texts: list[str]) -> npt.NDArray[np.float32]:
            vectors = mpnet.encode(texts, batch_size=16, normalize_embeddings=True)
            return np.asarray(vectors, dtype=np.float32)

        vectors = cached(
            cache and cache / "mpnet.npy",
            lambda: encode([f"{docs[d][0]}\n{docs[d][1]}" for d in doc_ids]),
        )
        add_list("mpnet", vectors, doc_ids, encode(list(texts.values())))
        thirds.append("mpnet")

    table = Table(
        title=f"First-stage ceilings, {args.corpus} (nDCG@10, z-score convex fusion, top {DEPTH})"
    )
    for column in (
        "first stage",
        "judged: oracle weights",
        "judged: synthetic's pick",
        "synthetic best",
    ):
        table.add_column(column, justify="right" if column != "first stage" else "left")
    tuned = resolve_search(args.index, {})
    tuned_rankings = {
        name: {
            q: ranked_documents(offline_ranking(found[f"{name}:{q}"], tuned), doc_of)
            for q in questions.qrels
        }
        for name, questions in sets.items()
    }
    tuned_scores = [mean_ndcg(tuned_rankings[name], sets[name]) for name in sets]
    table.add_row(
        "tuned (the index's setting)", f"{tuned_scores[0]:.3f}", "", f"{tuned_scores[1]:.3f}"
    )
    for third in thirds:
        best, pick, synthetic = oracle(sets, lists, third)
        name = "MiniLM + BM25" if third is None else f"MiniLM + BM25 + {third}"
        table.add_row(name, f"{best:.3f}", f"{pick:.3f}", f"{synthetic:.3f}")
    if args.upr:
        tokenizer = load_tokenizer("smollm2-135m-instruct")
        lm = load_causal_lm("smollm2-135m-instruct", dtype="float32", device="cpu")
        text_of = {c.doc_id: c.text for c in reversed(retriever.chunks)}  # first chunk wins
        judged = sets["judged"]
        chosen = list(judged.qrels)[: args.upr]
        first, alone, rrf = {}, {}, {}
        started = time.perf_counter()
        for q in chosen:
            ranking = tuned_rankings["judged"][q]
            head = ranking[:10]
            scores = upr_scores(judged.queries[q], [text_of[d] for d in head], lm, tokenizer)
            order = [head[i] for i in np.argsort(-np.asarray(scores))]
            place = {d: i for i, d in enumerate(order)}  # RRF, ties kept in first-stage order
            both = sorted(
                range(len(head)), key=lambda i: -(1 / (60 + i) + 1 / (60 + place[head[i]]))
            )
            first[q], alone[q] = ranking, order + ranking[10:]
            rrf[q] = [head[i] for i in both] + ranking[10:]
        seconds = (time.perf_counter() - started) / max(1, len(chosen))
        console.print(f"UPR: {len(chosen)} questions, {seconds:.1f} s each")
        table.add_row(
            f"tuned, same {len(chosen)} questions", f"{mean_ndcg(first, judged):.3f}", "", ""
        )
        table.add_row("tuned + UPR (SmolLM2) top 10", f"{mean_ndcg(alone, judged):.3f}", "", "")
        table.add_row("tuned + UPR, RRF with tuned", f"{mean_ndcg(rrf, judged):.3f}", "", "")
    console.print(table)


if __name__ == "__main__":
    main()
