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
- ``+ whole-document BM25``: a third list, BM25 over each document's title and full text (the
  index's analyzer), beside the chunk-level BM25;
- pseudo-relevance feedback, label-free and at query time, each the best of a small grid: dense
  Rocchio (the query vector plus ``beta`` times the mean vector of the best chunk of each of the
  first ``k`` documents of the alpha-0.5 fusion, Rocchio 1971 / the "average" vector PRF of Li et
  al., 2021) in place of the MiniLM list; RM3 (Lavrenko and Croft, 2001; Abdul-Jaleel et al.,
  2004: the ``m`` terms of those chunks' BM25 weight mass, interpolated with the query's terms by
  ``lambda``) in place of the BM25 list;
- ``+ mpnet`` (``--mpnet``, needs ``mentor models pull mpnet-base``; about 20 min for SciFact on
  2 cores in bf16): a third list, all-mpnet-base-v2 over title + text (its first 384 tokens),
  and a row with mpnet in MiniLM's place (mpnet + BM25);
- ``+ reranker, score blend`` (``--reranker FOLDER``, a cross-encoder trained by mentor): the
  tuned top 30 chunks ordered by ``w`` z(cross-encoder score) + (1 - ``w``) z(-log(1 + rank)),
  ``w`` in 0, 0.1 .. 1 (1: the reranker alone), rather than the judge's RRF of the two orders;
- ``UPR`` (``--upr N``, about 5 s a question on 2 cores): the tuned top 10 of the first N judged
  questions reranked by SmolLM2-135M's mean log-probability of the question given the passage
  (Sachan et al., 2022), alone and fused with the first stage by RRF.

Run (on an index tuned by ``mentor rag index``):
  python bench/rag_ceiling.py --index IDX --corpus scifact [--mpnet] [--upr 161] [--cache DIR]
      [--reranker IDX/reranker]
"""

from __future__ import annotations

import argparse
import re
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import numpy as np
import numpy.typing as npt
import scipy.sparse as sp
import torch
from rich.console import Console
from rich.table import Table

from mentor.evaluate.retrieval import ndcg_at_k
from mentor.models.loading import load_causal_lm, load_tokenizer, resolve_model_path
from mentor.rag.bm25 import BM25Index, bm25_matrix, count_terms, tokenize
from mentor.rag.evaluation import EvalSet
from mentor.rag.fusion import fuse
from mentor.rag.index import bm25_texts, embed_input
from mentor.rag.records import Chunk
from mentor.rag.reranker import CrossEncoderReranker
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
ROCCHIO = tuple((k, beta) for k in (3, 5, 10) for beta in (0.3, 0.7))
"""Dense feedback settings tried: (feedback documents, weight of their mean vector)."""
RM3 = tuple((k, m, lam) for k in (3, 5, 10) for m in (10, 30) for lam in (0.3, 0.5))
"""RM3 settings tried: (feedback documents, expansion terms, weight of the expansion)."""
Docs = list[tuple[str, float]]
BLEND_DEPTH = 30
"""Chunks of the tuned ranking the reranker blend rescores."""


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


def standardised(values: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    return (values - values.mean()) / (values.std() + 1e-9)


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


def chunk_matrices(
    retriever: Retriever,
) -> tuple[npt.NDArray[np.float32], sp.csr_matrix, dict[str, int], list[str]]:
    """The index's chunk vectors, its BM25 weights (chunks x terms, rebuilt with the manifest's
    settings), the term ids and each row's document id, all in the store's row order."""
    store = retriever.store
    vectors = np.asarray(
        [v for batch in store.column_batches(["vector"], 4096) for v in batch["vector"]],  # type: ignore[attr-defined]
        dtype=np.float32,
    )
    chunk_ids: list[str] = []
    doc_ids: list[str] = []
    config = retriever.manifest.config
    counts = count_terms(
        bm25_texts(store, config.bm25_heading_weight, chunk_ids, doc_ids),  # type: ignore[arg-type]
        config.analyzer,
    )
    data, indices, indptr = bm25_matrix(counts, config.bm25_k1, config.bm25_b)
    weights = sp.csc_matrix((data, indices, indptr), shape=(counts.size, len(counts.vocab)))
    return vectors, weights.tocsr(), counts.vocab, doc_ids


class Feedback:
    """Pseudo-relevance feedback over one index's chunk vectors and BM25 weights."""

    def __init__(self, retriever: Retriever) -> None:
        self.vectors, self.bm25, self.vocab, owners = chunk_matrices(retriever)
        self.analyzer = retriever.manifest.config.analyzer
        self.owners = owners
        self.rows_of: dict[str, list[int]] = {}
        for row, doc in enumerate(owners):
            self.rows_of.setdefault(doc, []).append(row)
        per_row = np.asarray(self.bm25.sum(axis=1)).ravel()
        self.term_share = sp.diags(1.0 / np.maximum(per_row, 1e-9)) @ self.bm25  # P(t | chunk)

    def query_terms(self, text: str) -> npt.NDArray[np.float32]:
        weights = np.zeros(len(self.vocab), dtype=np.float32)
        for term in tokenize([text], self.analyzer)[0]:
            if term in self.vocab:
                weights[self.vocab[term]] += 1
        return weights / max(float(weights.sum()), 1.0)

    def feedback_rows(self, first: Docs, vector: npt.NDArray[np.float32], k: int) -> list[int]:
        """The best chunk (by the query's cosine) of each of the first ``k`` documents."""
        return [
            max(self.rows_of[d], key=lambda r: float(self.vectors[r] @ vector))
            for d, _ in first[:k]
        ]

    def rocchio(self, vector: npt.NDArray[np.float32], rows: list[int], beta: float) -> Docs:
        moved = vector + beta * self.vectors[rows].mean(axis=0)
        moved /= np.linalg.norm(moved)
        return top_documents(self.vectors @ moved, self.owners, 200)

    def rm3(self, text: str, rows: list[int], terms: int, lam: float) -> Docs:
        expansion = np.asarray(self.term_share[rows].sum(axis=0)).ravel()
        if terms < len(expansion):
            expansion[expansion < np.partition(expansion, -terms)[-terms]] = 0
        expansion /= max(float(expansion.sum()), 1e-9)
        weights = (1 - lam) * self.query_terms(text) + lam * expansion
        scores = np.asarray(self.bm25 @ weights, dtype=np.float32).ravel()
        return [(d, s) for d, s in top_documents(scores, self.owners, 200) if s > 0]


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
    parser.add_argument("--reranker", type=Path, help="a cross-encoder folder for the blend row")
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
    console.print("whole-document BM25 ...")
    analyzer = retriever.manifest.config.analyzer
    whole = BM25Index.build([f"{docs[d][0]}\n{docs[d][1]}" for d in doc_ids], analyzer=analyzer)
    for key, text in texts.items():
        lists[key]["document BM25"] = [(doc_ids[r], s) for r, s in whole.search(text, 200)]
    thirds: list[str | None] = [None, "title", "sentences", "document BM25"]
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
    if args.mpnet:  # mpnet in MiniLM's place: the index a user would build with --embedder
        swapped = {
            key: {**found_lists, "dense": found_lists["mpnet"]}
            for key, found_lists in lists.items()
        }
        best, pick, synthetic = oracle(sets, swapped, None)
        table.add_row("mpnet + BM25", f"{best:.3f}", f"{pick:.3f}", f"{synthetic:.3f}")
    console.print("pseudo-relevance feedback ...")
    feedback = Feedback(retriever)
    rows_of = {
        key: feedback.feedback_rows(
            [(d, 0.0) for d in fused(lists[key], {"dense": 0.5, "bm25": 0.5})],
            query_vectors[i],
            max(k for k, _ in ROCCHIO),
        )
        for i, key in enumerate(texts)
    }
    rocchio = [
        {
            key: {**lists[key], "dense": feedback.rocchio(query_vectors[i], rows_of[key][:k], beta)}
            for i, key in enumerate(texts)
        }
        for k, beta in ROCCHIO
    ]
    rm3 = [
        {
            key: {**lists[key], "bm25": feedback.rm3(texts[key], rows_of[key][:k], m, lam)}
            for key in texts
        }
        for k, m, lam in RM3
    ]
    for name, variants, settings in (
        (f"MiniLM Rocchio + BM25 (best of {len(ROCCHIO)})", rocchio, ROCCHIO),
        (f"MiniLM + BM25 RM3 (best of {len(RM3)})", rm3, RM3),
    ):
        results = [oracle(sets, variant, None) for variant in variants]
        best = max(range(len(results)), key=lambda i: results[i][0])
        picked = max(range(len(results)), key=lambda i: (results[i][2], results[i][1]))
        console.print(
            f"  {name}: judged best at {settings[best]}, synthetic pick {settings[picked]}"
        )
        table.add_row(
            name,
            f"{results[best][0]:.3f}",
            f"{results[picked][1]:.3f}",
            f"{results[picked][2]:.3f}",
        )
    if args.reranker is not None:
        reranker = CrossEncoderReranker(args.reranker)
        chunk_of = {c.chunk_id: c for c in retriever.chunks}
        weights = [w / 10 for w in range(11)]
        blended: dict[str, list[float]] = {}
        for name, questions in sets.items():
            per_weight: list[dict[str, list[str]]] = [{} for _ in weights]
            for q in questions.qrels:
                ranking = offline_ranking(found[f"{name}:{q}"], tuned)
                head = ranking[:BLEND_DEPTH]
                scores = reranker.score(
                    questions.queries[q], [embed_input(chunk_of[c]) for c in head]
                )
                prior = standardised(-np.log1p(np.arange(len(head))))
                rescored = standardised(np.asarray(scores))
                for i, w in enumerate(weights):
                    order = np.argsort(-(w * rescored + (1 - w) * prior), kind="stable")
                    chunk_ids = [head[j] for j in order] + ranking[BLEND_DEPTH:]
                    per_weight[i][q] = ranked_documents(chunk_ids, doc_of)
            blended[name] = [mean_ndcg(r, questions) for r in per_weight]
        pick = max(
            range(len(weights)), key=lambda i: (blended["synthetic"][i], blended["judged"][i])
        )
        best = max(range(len(weights)), key=lambda i: blended["judged"][i])
        console.print(
            f"  blend: judged best at w {weights[best]}, synthetic pick w {weights[pick]}; "
            f"reranker alone {blended['judged'][-1]:.3f} judged"
        )
        table.add_row(
            f"tuned + reranker, score blend (top {BLEND_DEPTH})",
            f"{blended['judged'][best]:.3f}",
            f"{blended['judged'][pick]:.3f}",
            f"{max(blended['synthetic']):.3f}",
        )
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
