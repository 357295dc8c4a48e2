"""A cross-encoder reranker: score (query, passage) pairs, and train one from your own data.

No pretrained cross-encoder ships offline, so mentor trains one. The recipe:

1. ``mine_pairs``: for each training query, the relevant passage (from qrels, or the chunk a
   synthetic question was written for) plus hard negatives, the best hybrid-search hits that
   are not relevant.
2. ``train_reranker``: a MiniLM encoder with a fresh one-logit head reads ``[CLS] query [SEP]
   passage [SEP]``; each query's positive and its negatives go through one softmax, and the
   loss is the cross-entropy of picking the positive (a listwise loss, as in the "localized
   contrastive estimation" of Gao et al. 2021, arXiv:2101.08751). With a few hundred queries
   this learns far more per example than pointwise BCE: every step compares the positive with
   all of its negatives at once.
3. ``CrossEncoderReranker``: loads the saved folder and satisfies
   :class:`mentor.rag.retrieve.Reranker`, so ``Retriever.search(..., reranker=...)`` uses it.

The loop is plain PyTorch over the sentence-transformers ``CrossEncoder``'s model and tokenizer:
its own trainer needs the ``datasets`` package (not a dependency) and hides what a listwise
step does. Training and scoring share one tokenisation, so validation scores are what search
will see.

Run: ``mentor rag train-reranker --index idx --queries q.jsonl --qrels train.tsv --out rr``.
"""

from __future__ import annotations

import itertools
import json
import math
import random
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

import torch
import torch.nn.functional as F  # noqa: N812  (the usual torch alias)

from mentor.rag.index import embed_input
from mentor.rag.retrieve import SearchConfig, SearchResult
from mentor.rag.types import Chunk
from mentor.utils.fs import atomic_write_text, make_temp_dir, remove_tree

METADATA = "mentor-reranker.json"
Progress = Callable[[int, int, float], None]
"""(step, total steps, loss of that step)."""


class Searchable(Protocol):
    """What mining needs of an index: its chunks and a search (``Retriever`` fits)."""

    @property
    def chunks(self) -> list[Chunk]: ...

    def search(self, query: str, config: SearchConfig) -> SearchResult: ...


@dataclass(frozen=True)
class TrainingPair:
    """One training query: its relevant passage and passages that look relevant but are not."""

    query: str
    positive: str
    negatives: list[str]


# ---------------------------------------------------------------------------------------------
# Scoring


def _load(folder: str | Path, device: str, **kwargs: Any) -> Any:
    """A sentence-transformers ``CrossEncoder`` (imported late: it takes seconds to import)."""
    from sentence_transformers import CrossEncoder

    from mentor.utils.logs import quiet_libraries

    quiet_libraries()
    return CrossEncoder(str(folder), device=device, **kwargs)


def _logits(
    model: Any, tokenizer: Any, queries: Sequence[str], passages: Sequence[str], max_length: int
) -> torch.Tensor:
    """Raw relevance logits, shape (len(queries),), for aligned query/passage lists."""
    batch = tokenizer(
        list(queries),
        list(passages),
        padding=True,
        truncation="longest_first",  # a long query gives up tokens too, never fails
        max_length=max_length,
        return_tensors="pt",
    ).to(model.device)
    out: torch.Tensor = model(**batch).logits  # (B, 1)
    return out.squeeze(-1)


class CrossEncoderReranker:
    """A trained cross-encoder folder as a :class:`mentor.rag.retrieve.Reranker`."""

    def __init__(
        self, folder: Path, *, device: str = "cpu", batch_size: int = 32, max_length: int = 256
    ) -> None:
        encoder = _load(folder, device)
        self.model = encoder.model.eval()
        self.tokenizer = encoder.tokenizer
        self.batch_size = batch_size
        self.max_length = max_length
        self.name = f"cross-encoder:{folder.name}"

    @torch.inference_mode()
    def score(self, query: str, passages: list[str]) -> list[float]:
        """One raw logit per passage, in input order; higher is more relevant."""
        scores: list[float] = []
        for start in range(0, len(passages), self.batch_size):
            part = passages[start : start + self.batch_size]
            logits = _logits(self.model, self.tokenizer, [query] * len(part), part, self.max_length)
            scores.extend(logits.float().tolist())
        return scores


# ---------------------------------------------------------------------------------------------
# Mining


def _first_chunks(chunks: Sequence[Chunk]) -> dict[str, Chunk]:
    """doc_id -> the chunk that opens the document."""
    first: dict[str, Chunk] = {}
    for chunk in chunks:
        if chunk.doc_id not in first or chunk.start < first[chunk.doc_id].start:
            first[chunk.doc_id] = chunk
    return first


def _is_positive(chunk: Chunk, relevant: set[str]) -> bool:
    return chunk.chunk_id in relevant or chunk.doc_id in relevant


def mine_pairs(
    retriever: Searchable,
    queries: Mapping[str, str],
    positives: Mapping[str, set[str]],
    *,
    negatives_per_query: int = 7,
    depth: int = 30,
    skip_top: int = 0,
    seed: int = 0,
) -> list[TrainingPair]:
    """One :class:`TrainingPair` per query id in both ``queries`` and ``positives``.

    ``positives`` maps a query id to relevant doc ids (qrels) or chunk ids (synthetic
    questions); a chunk is positive when either of its ids is in the set. The positive passage
    is the best-ranked positive hit of a hybrid search ``depth`` deep, else the first chunk of
    the first relevant document (a relevant chunk id is taken as it is). Negatives are the
    best non-positive hits after the first ``skip_top`` of them (skipping guards against
    relevant passages that nobody labelled); when the search runs short they are topped up
    with random chunks, so every query has the same number. Queries whose relevant documents
    are not in the index are left out. The result depends only on the inputs and ``seed``.
    """
    chunks = retriever.chunks
    by_id = {c.chunk_id: c for c in chunks}
    first = _first_chunks(chunks)
    config = SearchConfig(mode="hybrid", k=depth, candidates=max(depth, 100))
    pairs = []
    for qid, query in queries.items():
        relevant = positives.get(qid, set())
        hits = [h.chunk for h in retriever.search(query, config).hits]
        found = [c for c in hits if _is_positive(c, relevant)]
        known = [by_id.get(i) or first.get(i) for i in sorted(relevant)]
        fallback = [c for c in known if c is not None]
        if not found and not fallback:
            continue
        positive = found[0] if found else fallback[0]
        negatives = [c for c in hits if not _is_positive(c, relevant)][skip_top:]
        negatives = negatives[:negatives_per_query]
        if len(negatives) < negatives_per_query:
            negatives += _random_negatives(
                chunks, relevant, {c.chunk_id for c in negatives},
                negatives_per_query - len(negatives), random.Random(f"{seed}:{qid}"),
            )  # fmt: skip
        pairs.append(
            TrainingPair(query, embed_input(positive), [embed_input(c) for c in negatives])
        )
    return pairs


def _random_negatives(
    chunks: Sequence[Chunk], relevant: set[str], taken: set[str], n: int, rng: random.Random
) -> list[Chunk]:
    pool = [c for c in chunks if c.chunk_id not in taken and not _is_positive(c, relevant)]
    return rng.sample(pool, min(n, len(pool)))


# ---------------------------------------------------------------------------------------------
# Training


@dataclass
class RerankerTrainReport:
    """What a training run did and how well the result ranks held-out pairs."""

    out: Path
    base: str
    pairs: int
    epochs: int
    steps: int
    seconds: float
    pairs_per_second: float
    """Training pairs (a query with its positive and all its negatives) per second."""
    final_loss: float
    """Mean loss over the last tenth of the steps."""
    losses: list[float] = field(default_factory=list)
    """Mean loss of each twentieth of training, for a loss curve."""
    validation_pairs: int = 0
    mrr_before: float | None = None
    """Mean reciprocal rank of the positive among its negatives, fresh head, validation set."""
    mrr_after: float | None = None
    created: str = ""


def _batches(pairs: Sequence[TrainingPair], size: int) -> Iterator[list[TrainingPair]]:
    for start in range(0, len(pairs), size):
        yield list(pairs[start : start + size])


def listwise_loss(scores: torch.Tensor, sizes: Sequence[int]) -> torch.Tensor:
    """Softmax cross-entropy of the positive within its group.

    ``scores`` is flat: group after group, each positive first then its negatives; groups may
    differ in size. Equals ``-mean_g log softmax(scores_g)[0]``.
    """
    width = max(sizes)
    table = scores.new_full((len(sizes), width), float("-inf"))  # (G, width), padded with -inf
    mask = (
        torch.arange(width, device=scores.device)
        < torch.tensor(sizes, device=scores.device)[:, None]
    )
    table[mask] = scores  # row-major fill matches the flat group-after-group order
    target = torch.zeros(len(sizes), dtype=torch.long, device=scores.device)
    return F.cross_entropy(table.float(), target)


def _group_scores(
    model: Any, tokenizer: Any, groups: Sequence[TrainingPair], max_length: int
) -> torch.Tensor:
    queries = [g.query for g in groups for _ in range(1 + len(g.negatives))]
    passages = [p for g in groups for p in (g.positive, *g.negatives)]
    return _logits(model, tokenizer, queries, passages, max_length)


@torch.inference_mode()
def _mrr(model: Any, tokenizer: Any, pairs: Sequence[TrainingPair], max_length: int) -> float:
    """Mean reciprocal rank of each positive among its own negatives (ties count against it)."""
    model.eval()
    total = 0.0
    for group in _batches(pairs, 4):
        scores = _group_scores(model, tokenizer, group, max_length).float().tolist()
        at = 0
        for pair in group:
            positive, *negatives = scores[at : at + 1 + len(pair.negatives)]
            total += 1.0 / (1 + sum(s >= positive for s in negatives))
            at += 1 + len(pair.negatives)
    return total / max(len(pairs), 1)


@contextmanager
def _seeded(seed: int) -> Iterator[None]:
    # The fresh head is drawn from torch's global generator; fork it so a run is repeatable
    # without changing the caller's random state.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


def _schedule(step: int, warmup: int, total: int) -> float:
    """Linear warmup to the full rate, then linear decay to zero."""
    if step < warmup:
        return (step + 1) / warmup
    return max(0.0, (total - step) / max(1, total - warmup))


def _save(encoder: Any, out: Path, meta: dict[str, Any]) -> None:
    """Write the model beside ``out``, then swap it in: a crash leaves the old folder whole."""
    tmp = make_temp_dir(out.parent, f".{out.name}.tmp-")
    try:
        encoder.save(str(tmp), safe_serialization=True, create_model_card=False)
        atomic_write_text(tmp / METADATA, json.dumps(meta, indent=2))
        old = out.with_name(f".{out.name}.old") if out.exists() else None
        if old is not None:
            remove_tree(old)
            out.rename(old)
        tmp.rename(out)
        if old is not None:
            remove_tree(old)
    finally:
        remove_tree(tmp)


def train_reranker(
    pairs: Sequence[TrainingPair],
    *,
    out: Path,
    base: str | Path = "minilm-l6",
    epochs: int = 1,
    batch_size: int = 16,
    lr: float = 7e-5,
    warmup_ratio: float = 0.1,
    max_length: int = 256,
    micro_batch: int = 4,
    seed: int = 0,
    validation: Sequence[TrainingPair] | None = None,
    progress: Progress | None = None,
) -> RerankerTrainReport:
    """Fine-tune ``base`` (registry name or folder) into a cross-encoder saved at ``out``.

    ``batch_size`` counts queries per optimiser step (each with its 1 + n passages);
    ``micro_batch`` queries go through the model at once, gradients adding up over a step,
    which bounds memory without changing the result. ``lr`` defaults to 7e-5, above the usual
    2e-5 for cross-encoders, because a few hundred queries give only tens of steps and the
    head starts from scratch; on SciFact it beat 2e-5 and 2e-4 (see the module's run notes in
    the reranker report). AdamW, linear warmup then decay, gradients clipped to norm 1.
    """
    from mentor.models.loading import resolve_model_path

    if not pairs:
        raise ValueError("no training pairs: nothing to learn from")
    started = time.perf_counter()
    folder = resolve_model_path(base)
    with _seeded(seed):
        encoder = _load(folder, "cpu", num_labels=1, max_length=max_length)
        model, tokenizer = encoder.model, encoder.tokenizer
        held_out = list(validation or [])
        mrr_before = _mrr(model, tokenizer, held_out, max_length) if held_out else None

        order = list(pairs)
        steps_per_epoch = math.ceil(len(order) / batch_size)
        total = steps_per_epoch * epochs
        warmup = max(1, round(warmup_ratio * total))
        optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01)
        scheduler = torch.optim.lr_scheduler.LambdaLR(
            optimizer, lambda s: _schedule(s, warmup, total)
        )
        rng = random.Random(seed)
        step_losses: list[float] = []
        model.train()
        for _ in range(epochs):
            rng.shuffle(order)
            for batch in _batches(order, batch_size):
                loss_sum = 0.0
                for part in _batches(batch, micro_batch):
                    scores = _group_scores(model, tokenizer, part, max_length)
                    sizes = [1 + len(p.negatives) for p in part]
                    loss = listwise_loss(scores, sizes) * (len(part) / len(batch))
                    loss.backward()  # type: ignore[no-untyped-call]
                    loss_sum += float(loss)
                torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
                optimizer.step()
                scheduler.step()
                optimizer.zero_grad(set_to_none=True)
                step_losses.append(loss_sum)
                if progress is not None:
                    progress(len(step_losses), total, loss_sum)
        train_seconds = time.perf_counter() - started
        mrr_after = _mrr(model, tokenizer, held_out, max_length) if held_out else None

    report = RerankerTrainReport(
        out=out,
        base=str(base),
        pairs=len(pairs),
        epochs=epochs,
        steps=len(step_losses),
        seconds=train_seconds,
        pairs_per_second=len(pairs) * epochs / train_seconds,
        final_loss=_mean(step_losses[-max(1, len(step_losses) // 10) :]),
        losses=_curve(step_losses, 20),
        validation_pairs=len(held_out),
        mrr_before=mrr_before,
        mrr_after=mrr_after,
        created=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    )
    meta = asdict(report) | {"out": str(out), "lr": lr, "batch_size": batch_size}
    _save(encoder, out, meta | {"max_length": max_length, "seed": seed})
    return report


def _mean(values: Sequence[float]) -> float:
    return sum(values) / len(values) if values else float("nan")


def _curve(values: Sequence[float], points: int) -> list[float]:
    """``values`` averaged in ``points`` consecutive slices (fewer if there are fewer values)."""
    n = min(points, len(values))
    bounds = [round(i * len(values) / n) for i in range(n + 1)]
    return [_mean(values[a:b]) for a, b in itertools.pairwise(bounds)]
