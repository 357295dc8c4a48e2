"""Fine-tune the index's embedder on its own synthetic questions; keep it only where it pays.

Training data: each TUNING question of the index's self-evaluation set
(:mod:`mentor.rag.selfeval`) paired with the chunk it was written for, plus one BM25-mined hard
negative (the best BM25 chunk of another document). The loss is in-batch contrastive
(InfoNCE, sentence-transformers' MultipleNegativesRankingLoss): each question against every
chunk of its batch, the chunks of its own document masked out so a second question on the same
document is never pushed away from its answer.

Early stopping: a slice of the tuning questions (whole documents, never the held-out ones) is
ranked after every epoch against a pool of candidates (the union of what BM25 and the stock
dense search find for them, the whole corpus when it is small); training stops when it stops
improving, and the weights of the best epoch are kept. No epoch better than the stock model
there: nothing more is spent. Learning rate 2e-5 with warm-up and clipped gradients; with 100
to 200 questions a few epochs are all it takes, and the validation check is the guard against
a collapse.

The guard: the corpus is re-embedded into a candidate table, and dense-only nDCG@10 (document
level, :func:`mentor.rag.tune.per_query_ndcg`) on the HELD-OUT questions is compared with the
index's current embedder by :func:`mentor.rag.tune.simplest_within_noise`: the current one is
kept unless the tuned one is better beyond noise. If kept, the model (safetensors) and its table
go into the index as ``embedder-<tag>/`` and ``lance-<tag>/``, and ONE manifest write switches
to them (``IndexConfig.embedder`` becomes the relative folder, so the index can be moved);
then the old table and model are removed. A kill at any point leaves the old index whole; the
leftovers of a killed run are removed by the next one. ``embedder.json`` records what was tried.

Run: ``mentor rag tune --index idx`` (on when re-embedding fits the budget; see
:func:`fits_budget`), or ``tune_embedder(index, selfeval, budget_s=300)``.
"""

from __future__ import annotations

import copy
import json
import math
import random
import secrets
import shutil
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from mentor.rag.bm25 import BM25Index
from mentor.rag.index import (
    Manifest,
    embed_input,
    embedder_location,
    open_store,
    remove_unnamed,
)
from mentor.rag.records import Chunk
from mentor.rag.retrieve import SearchConfig
from mentor.rag.selfeval import SelfEvalSet, split_by_document
from mentor.rag.store import ANN_THRESHOLD, LanceStore
from mentor.rag.synthetic import SyntheticQuestion
from mentor.rag.tune import Retrieved, per_query_ndcg, simplest_within_noise
from mentor.utils.fs import atomic_write_text, make_temp_dir, remove_tree

if TYPE_CHECKING:
    import torch
    from sentence_transformers import SentenceTransformer

    from mentor.models.protocols import Embedder

EMBEDDER_JSON = "embedder.json"
DEPTH = 100
"""How deep the dense lists go for the held-out nDCG@10 (document level needs more than 10)."""
SAMPLE_CHUNKS = 64
"""Chunks embedded to time the embedder (the auto rule of :func:`fits_budget`)."""
Progress = Callable[[str, int, int], None]
Vectors = npt.NDArray[np.float32]


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def _quiet(stage: str, done: int, total: int) -> None:
    """Default progress callback: silent."""


@dataclass(frozen=True)
class EmbedTuneConfig:
    """How the embedder is fine-tuned."""

    epochs: int = 4
    """Passes over the training pairs at most (early stopping may end sooner)."""
    learning_rate: float = 2e-5
    """Peak learning rate (AdamW): small, since 100-200 pairs move a model easily."""
    batch_size: int = 16
    """Questions per step; every other chunk of the batch is a negative."""
    scale: float = 20.0
    """Inverse temperature of the contrastive loss (sentence-transformers' default)."""
    hard_negatives: bool = True
    """Add each question's best BM25 chunk from another document as an extra negative."""
    validation_share: float = 0.2
    """Share of the tuning questions (whole documents) held back for early stopping."""
    pool_size: int = 1000
    """At most this many chunks are ranked for early stopping (the union of what BM25 and the
    stock dense search find for the validation questions; all chunks of a smaller corpus)."""
    max_tokens: int = 256
    """Tokens per text in training (the model's own limit when lower)."""
    warmup_share: float = 0.1
    """Share of the steps over which the learning rate rises from 0."""
    seed: int = 0
    resamples: int = 1000
    """Bootstrap resamples of the held-out guard."""

    def __post_init__(self) -> None:
        for name in ("epochs", "batch_size", "pool_size", "max_tokens"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.batch_size < 2:
            raise ValueError(f"batch_size must be >= 2 (in-batch negatives), got {self.batch_size}")
        if not 0.0 < self.validation_share < 1.0:
            raise ValueError(f"validation_share must be in (0, 1), got {self.validation_share}")
        if not self.learning_rate >= 0.0:
            raise ValueError(f"learning_rate must be >= 0, got {self.learning_rate}")


@dataclass
class EmbedderTuning:
    """What the embedder tuner tried on an index, and what it chose (``embedder.json``)."""

    chosen: str
    """"current" (the index's embedder stays) or "tuned" (the fine-tuned one replaced it)."""
    reason: str
    base: str
    """The embedder fine-tuning started from (the stock one, also after an earlier tuning)."""
    current: str
    """The embedder the index used before this run."""
    embedder: str
    """The embedder the index uses now (``IndexConfig.embedder``)."""
    train_loss: list[float] = field(default_factory=list)
    """Mean contrastive loss of each epoch."""
    validation_ndcg: list[float] = field(default_factory=list)
    """nDCG@10 on the early-stopping slice: before training, then after each epoch."""
    best_epoch: int = 0
    held_out_ndcg: dict[str, float] = field(default_factory=dict)
    """Dense-only nDCG@10 on the held-out questions: current and tuned."""
    held_out_gap: dict[str, list[float]] = field(default_factory=dict)
    """Each one's paired difference from the better one: [value, low, high] (95%)."""
    pairs: int = 0
    validation_questions: int = 0
    held_out_questions: int = 0
    train_seconds: float = 0.0
    embed_seconds: float = 0.0
    """Re-embedding the corpus with the tuned model."""
    seconds: float = 0.0
    selfeval_created: str = ""
    """The self-evaluation set it was tuned on (a rerun on the same set is skipped)."""
    created: str = field(default_factory=_now)

    def save(self, index: Path) -> Path:
        path = index / EMBEDDER_JSON
        atomic_write_text(path, json.dumps(asdict(self), indent=2))
        return path


def load_embedder_tuning(index: Path) -> EmbedderTuning | None:
    path = index / EMBEDDER_JSON
    return EmbedderTuning(**json.loads(path.read_text())) if path.exists() else None


# ---------------------------------------------------------------------------------------------
# Pure parts


def contrastive_loss(
    queries: torch.Tensor,
    passages: torch.Tensor,
    *,
    scale: float = 20.0,
    same_doc: torch.Tensor | None = None,
) -> torch.Tensor:
    """InfoNCE over in-batch negatives: row i of ``queries`` should score its positive
    ``passages[i]`` above every other passage (rows past the batch are extra negatives).

    ``same_doc[i, j]`` True masks passage j out of query i's negatives (a chunk of its own
    document); the diagonal is never masked. Inputs are L2-normalised here."""
    import torch
    from torch.nn.functional import cross_entropy, normalize

    q = normalize(queries, dim=-1)
    p = normalize(passages, dim=-1)
    scores = scale * q @ p.T
    n = q.shape[0]
    if same_doc is not None:
        mask = same_doc.clone()
        mask[torch.arange(n), torch.arange(n)] = False
        scores = scores.masked_fill(mask, float("-inf"))
    return cross_entropy(scores, torch.arange(n, device=scores.device))


def dense_lists(
    queries: Vectors, matrix: Vectors, ids: Sequence[str], depth: int = DEPTH
) -> list[list[tuple[str, float]]]:
    """Each query's top ``depth`` rows of ``matrix`` by dot product, as (id, score)."""
    scores = queries @ matrix.T
    depth = min(depth, matrix.shape[0])
    out = []
    for row in scores:
        top = np.argpartition(-row, depth - 1)[:depth]
        top = top[np.argsort(-row[top], kind="stable")]
        out.append([(ids[i], float(row[i])) for i in top])
    return out


def dense_ndcg(
    query_vectors: Vectors,
    matrix: Vectors,
    ids: Sequence[str],
    relevant: Sequence[str],
    doc_of: Mapping[str, str],
) -> list[float]:
    """Dense-only nDCG@10 at the document level, one per query (relevant[i]: its document)."""
    lists = dense_lists(query_vectors, matrix, ids)
    found = {str(i): Retrieved(dense, []) for i, dense in enumerate(lists)}
    rel = {str(i): doc for i, doc in enumerate(relevant)}
    return per_query_ndcg(found, rel, doc_of, SearchConfig(mode="dense", candidates=DEPTH))


def fits_budget(chunks: int, seconds_per_chunk: float, budget_s: float) -> bool:
    """The auto rule: tune the embedder when re-embedding the corpus takes at most half the
    budget, so the other half is left for training."""
    return chunks * seconds_per_chunk <= budget_s / 2


# ---------------------------------------------------------------------------------------------
# Reading the index


@dataclass
class _Corpus:
    chunks: list[Chunk]
    texts: list[str]
    """What is embedded for each chunk (:func:`mentor.rag.index.embed_input`)."""
    hashes: list[str]
    matrix: Vectors
    """The stored vectors, row for row."""

    @property
    def ids(self) -> list[str]:
        return [c.chunk_id for c in self.chunks]


def _read_corpus(index: Path, manifest: Manifest) -> _Corpus:
    store = open_store(index, manifest)
    data = store.table.to_arrow()
    chunks = store.chunks()  # the same row order as the arrow table
    flat = data.column("vector").combine_chunks().flatten().to_numpy(zero_copy_only=False)
    matrix = np.array(flat, dtype=np.float32).reshape(-1, manifest.dim)
    hashes = [str(h) for h in data.column("doc_hash").to_pylist()]
    return _Corpus(chunks, [embed_input(c) for c in chunks], hashes, matrix)


def _bm25_lists(
    index: Path, manifest: Manifest, questions: Sequence[str], depth: int
) -> list[list[str]]:
    folder = index / manifest.bm25_dir
    bm25 = BM25Index.load(folder)
    ids: list[str] = json.loads((folder / "ids.json").read_text())
    return [[ids[row] for row, _ in bm25.search(q, depth)] for q in questions]


# ---------------------------------------------------------------------------------------------
# Training


@dataclass
class _Example:
    question: str
    positive: str
    negative: str | None
    doc_id: str
    negative_doc: str | None


def _features(model: SentenceTransformer, texts: Sequence[str]) -> dict[str, Any]:
    # sentence-transformers 6 calls it preprocess; 5.x has only tokenize
    prepare = getattr(model, "preprocess", None) or model.tokenize
    features: dict[str, Any] = prepare(list(texts))
    device = model.device
    return {k: v.to(device) if hasattr(v, "to") else v for k, v in features.items()}


def _encode(model: SentenceTransformer, texts: Sequence[str]) -> torch.Tensor:
    out: torch.Tensor = model(_features(model, texts))["sentence_embedding"]
    return out


def _step_loss(model: SentenceTransformer, batch: Sequence[_Example], scale: float) -> torch.Tensor:
    import torch

    negatives = [e for e in batch if e.negative is not None]
    q = _encode(model, [e.question for e in batch])
    p = _encode(model, [e.positive for e in batch] + [e.negative or "" for e in negatives])
    docs = [e.doc_id for e in batch] + [e.negative_doc or "" for e in negatives]
    same_doc = torch.tensor([[e.doc_id == d for d in docs] for e in batch], device=q.device)
    return contrastive_loss(q, p, scale=scale, same_doc=same_doc)


def _embed_with(model: SentenceTransformer, texts: Sequence[str], batch: int = 64) -> Vectors:
    import torch

    model.eval()
    rows = []
    with torch.inference_mode():
        for start in range(0, len(texts), batch):
            out = _encode(model, texts[start : start + batch])
            rows.append(torch.nn.functional.normalize(out.float(), dim=-1).cpu().numpy())
    model.train()
    if not rows:
        return np.zeros((0, 0), dtype=np.float32)
    return np.concatenate(rows).astype(np.float32)


@dataclass
class TrainResult:
    model: SentenceTransformer
    """The model at its best epoch (the base model when no epoch beat it)."""
    improved: bool
    """Whether an epoch beat the base model on the validation slice."""
    losses: list[float]
    validation: list[float]
    best_epoch: int
    seconds: float
    seconds_per_chunk: float
    """Embedding time per chunk measured on the validation pool (fp32, training settings)."""


def train_embedder(
    model: SentenceTransformer,
    examples: Sequence[_Example],
    validation: Sequence[SyntheticQuestion],
    pool_ids: Sequence[str],
    pool_texts: Sequence[str],
    doc_of: Mapping[str, str],
    config: EmbedTuneConfig,
    *,
    deadline: Callable[[float, float], bool],
    progress: Progress = _quiet,
) -> TrainResult:
    """Fine-tune ``model`` in place on ``examples``; after each epoch rank ``pool`` for the
    ``validation`` questions and keep the best epoch's weights.
    ``deadline(epoch_seconds, seconds_per_chunk)`` says there is no time for one more epoch
    (``seconds_per_chunk``: the embedding speed measured on the pool)."""
    import torch

    started = time.perf_counter()
    torch.manual_seed(config.seed)
    rng = random.Random(config.seed)
    original = model.max_seq_length
    model.max_seq_length = min(original or config.max_tokens, config.max_tokens)

    per_chunk = 0.0

    def score() -> float:
        t0 = time.perf_counter()
        passages = _embed_with(model, pool_texts)
        queries = _embed_with(model, [q.question for q in validation])
        nonlocal per_chunk
        per_chunk = (time.perf_counter() - t0) / max(1, len(pool_texts) + len(validation))
        values = dense_ndcg(queries, passages, pool_ids, [q.doc_id for q in validation], doc_of)
        return sum(values) / len(values)

    validation_scores = [score()]
    best_state = copy.deepcopy(model.state_dict())
    best_epoch = 0
    losses: list[float] = []
    steps_per_epoch = math.ceil(len(examples) / config.batch_size)
    total_steps = max(1, steps_per_epoch * config.epochs)
    warmup = max(1, int(config.warmup_share * total_steps))
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.learning_rate)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer,
        lambda step: min(
            (step + 1) / warmup, max(0.0, (total_steps - step) / (total_steps - warmup + 1))
        ),
    )
    model.train()
    epoch_seconds = 0.0
    for epoch in range(1, config.epochs + 1):
        if deadline(epoch_seconds, per_chunk):
            break
        t0 = time.perf_counter()
        order = list(examples)
        rng.shuffle(order)
        total = 0.0
        batches = [
            order[i : i + config.batch_size] for i in range(0, len(order), config.batch_size)
        ]
        batches = [b for b in batches if len(b) >= 2]  # one pair alone has no negative
        for step, batch in enumerate(batches, start=1):
            loss = _step_loss(model, batch, config.scale)
            optimizer.zero_grad()
            loss.backward()  # type: ignore[no-untyped-call]
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            scheduler.step()
            total += float(loss.detach())
            progress(f"fine-tuning the embedder (epoch {epoch})", step, len(batches))
        losses.append(total / max(1, len(batches)))
        validation_scores.append(score())
        epoch_seconds = time.perf_counter() - t0
        if validation_scores[-1] > validation_scores[best_epoch]:
            best_epoch = epoch
            best_state = copy.deepcopy(model.state_dict())
        elif epoch - best_epoch >= 2:  # two epochs without a gain: it will not come back
            break
    model.load_state_dict(best_state)
    model.max_seq_length = original
    model.eval()
    return TrainResult(
        model,
        best_epoch > 0,
        losses,
        validation_scores,
        best_epoch,
        time.perf_counter() - started,
        per_chunk,
    )


def _examples(
    questions: Sequence[SyntheticQuestion],
    corpus: _Corpus,
    bm25: Sequence[Sequence[str]],
    hard_negatives: bool,
) -> list[_Example]:
    row_of = {c.chunk_id: i for i, c in enumerate(corpus.chunks)}
    out = []
    for q, found in zip(questions, bm25, strict=True):
        if q.chunk_id not in row_of:
            continue  # the chunk was re-indexed since the question was written
        negative = None
        if hard_negatives:
            negative = next((c for c in found if corpus.chunks[row_of[c]].doc_id != q.doc_id), None)
        out.append(
            _Example(
                q.question,
                corpus.texts[row_of[q.chunk_id]],
                None if negative is None else corpus.texts[row_of[negative]],
                q.doc_id,
                None if negative is None else corpus.chunks[row_of[negative]].doc_id,
            )
        )
    return out


def _pool(
    validation: Sequence[SyntheticQuestion],
    corpus: _Corpus,
    bm25: Sequence[Sequence[str]],
    stock_queries: Vectors,
    size: int,
) -> list[int]:
    """Rows to rank for early stopping: all of a small corpus, else what BM25 and the stock
    dense search put first for the validation questions (plus their own chunks)."""
    if len(corpus.chunks) <= size:
        return list(range(len(corpus.chunks)))
    row_of = {c.chunk_id: i for i, c in enumerate(corpus.chunks)}
    per_list = max(5, size // max(1, 2 * len(validation)))
    dense = dense_lists(stock_queries, corpus.matrix, corpus.ids, per_list)
    rows = dict.fromkeys(row_of[q.chunk_id] for q in validation if q.chunk_id in row_of)
    for lexical, semantic in zip(bm25, dense, strict=True):
        rows.update(dict.fromkeys(row_of[c] for c in lexical[:per_list]))
        rows.update(dict.fromkeys(row_of[c] for c, _ in semantic))
    return list(rows)[: max(size, len(validation))]


# ---------------------------------------------------------------------------------------------
# The swap


def clean_leftovers(index: Path) -> None:
    """Remove what a killed tuner run left: its scratch folders, and the tables, models and BM25
    copies the manifest does not name (:func:`mentor.rag.index.remove_unnamed`)."""
    for path in index.glob(".embedtune-*"):
        remove_tree(path)
    if (index / "index.json").exists():
        remove_unnamed(index)


def write_table(folder: Path, corpus: _Corpus, vectors: Vectors, group: int = 2048) -> LanceStore:
    """A new LanceDB table at ``folder`` holding ``corpus``'s chunks with ``vectors``."""
    store = LanceStore(folder, vectors.shape[1])
    for start in range(0, len(corpus.chunks), group):
        rows = range(start, min(start + group, len(corpus.chunks)))
        # one hash per document per write (a document's rows all share it after a build)
        by_hash: dict[str, list[int]] = {}
        for row in rows:
            by_hash.setdefault(corpus.hashes[row], []).append(row)
        for digest, picked in by_hash.items():
            store.add(
                [corpus.chunks[r] for r in picked],
                vectors[picked],
                {corpus.chunks[r].doc_id: digest for r in picked},
            )
    if len(store) >= ANN_THRESHOLD:
        store.create_ann_index()
    return store


def install(index: Path, model_folder: Path, table_folder: Path, tag: str) -> Manifest:
    """Swap the index over to ``model_folder`` and ``table_folder`` (complete, on the index's
    file system): they move in as ``embedder-<tag>`` and ``lance-<tag>``, then one manifest
    write is the switch; the old table, model and BM25 folder go only after it. A kill before
    the write leaves the old index whole (:func:`clean_leftovers` removes the new folders)."""
    if not tag.startswith("t") or not tag.isalnum():
        raise ValueError(f"tag {tag!r}: expected t followed by letters or digits")
    old = Manifest.read(index)
    model_dir, lance_dir = index / f"embedder-{tag}", index / f"lance-{tag}"
    bm25_dir = index / f"bm25-{tag}"
    # BM25 holds chunk ids, which do not change: a copy under a name no later build reuses
    remove_tree(bm25_dir)
    shutil.copytree(index / old.bm25_dir, bm25_dir)
    model_folder.rename(model_dir)
    table_folder.rename(lance_dir)
    store = LanceStore(lance_dir, old.dim)
    new = replace(
        old,
        config=replace(old.config, embedder=model_dir.name),
        lance_dir=lance_dir.name,
        lance_version=store.version,
        bm25_dir=bm25_dir.name,
        updated=_now(),
    )
    new.write(index)  # the commit point
    remove_tree(index / old.lance_dir)
    remove_tree(index / old.bm25_dir)
    if embedder_location(index, old.config) != old.config.embedder:
        remove_tree(index / old.config.embedder)
    return new


# ---------------------------------------------------------------------------------------------
# The whole run


def _load(location: str, device: str) -> Embedder:
    from mentor.models.loading import load_embedder

    return load_embedder(location, device=device)


def _sentence_model(location: str, device: str) -> SentenceTransformer:
    """The model to train: fp32 (bf16 trains poorly), on ``device``."""
    from mentor.models.loading import load_embedder

    embedder = load_embedder(location, device=device, dtype="float32")
    return embedder.model


def seconds_per_chunk(
    embedder: Embedder, chunks: Sequence[Chunk], sample: int = SAMPLE_CHUNKS
) -> float:
    """Seconds ``embedder`` takes per chunk, timed on a seeded ``sample`` of ``chunks``."""
    picked = random.Random(0).sample(list(chunks), min(sample, len(chunks)))
    texts = [embed_input(c) for c in picked]
    embedder.embed(texts[:4])  # the first call pays for warm-up
    t0 = time.perf_counter()
    embedder.embed(texts, batch_size=64)
    return (time.perf_counter() - t0) / max(1, len(texts))


def tune_embedder(
    index: Path,
    selfeval: SelfEvalSet,
    *,
    budget_s: float = 300.0,
    config: EmbedTuneConfig = EmbedTuneConfig(),
    device: str = "auto",
    force: bool = False,
    progress: Progress = _quiet,
) -> EmbedderTuning:
    """Fine-tune, re-embed, guard on the held-out questions, and swap in the tuned embedder
    when it is better beyond noise (see the module docstring). Saves ``embedder.json``.

    A run that already trained on this very self-evaluation set is not repeated (its record
    is returned) unless ``force``."""
    started = time.perf_counter()
    if not selfeval.tuning or not selfeval.held_out:
        raise ValueError(
            f"need questions in both parts, got {len(selfeval.tuning)} tuning and "
            f"{len(selfeval.held_out)} held out: write questions for more chunks"
        )
    clean_leftovers(index)
    manifest = Manifest.read(index)
    previous = load_embedder_tuning(index)
    current = manifest.config.embedder
    local = embedder_location(index, manifest.config)
    if previous is not None and previous.train_loss and not force:
        same = bool(selfeval.created) and previous.selfeval_created == selfeval.created
        if same:
            return previous  # tried on these very questions already: the verdict stands
    base = previous.base if previous is not None and local != current else current
    base_location = local if base == current else base
    train_q, validation = split_by_document(selfeval.tuning, config.validation_share, config.seed)
    if not train_q or not validation:
        raise ValueError(f"too few tuning documents to keep some for early stopping: {train_q}")

    def result(chosen: str, reason: str, **extra: Any) -> EmbedderTuning:
        tuned = Manifest.read(index).config.embedder
        out = EmbedderTuning(
            chosen,
            reason,
            base,
            current,
            tuned,
            validation_questions=len(validation),
            held_out_questions=len(selfeval.held_out),
            selfeval_created=selfeval.created,
            seconds=time.perf_counter() - started,
            **extra,
        )
        out.save(index)
        return out

    progress("reading the index", 0, 1)
    corpus = _read_corpus(index, manifest)
    doc_of = {c.chunk_id: c.doc_id for c in corpus.chunks}
    stock = _load(local, device)
    if stock.dim != manifest.dim:
        raise ValueError(f"{index}: {local} is {stock.dim}-d, the index {manifest.dim}-d")
    texts = [q.question for q in [*train_q, *validation]]
    bm25 = _bm25_lists(index, manifest, texts, 10 if config.hard_negatives else 0)
    examples = _examples(train_q, corpus, bm25[: len(train_q)], config.hard_negatives)
    if len(examples) < 2:
        return result("current", f"{len(examples)} training pair(s): too few to train on")
    stock_val = stock.embed([q.question for q in validation])
    pool = _pool(validation, corpus, bm25[len(train_q) :], stock_val, config.pool_size)
    progress("reading the index", 1, 1)

    model = _sentence_model(base_location, device)

    def out_of_time(epoch_seconds: float, per_chunk: float) -> bool:
        """No room for one more epoch and the re-embedding after it (timed as in training,
        fp32: an upper bound for the bf16 the index embeds with)."""
        reembed = len(corpus.chunks) * per_chunk
        return time.perf_counter() - started + epoch_seconds + reembed > budget_s

    trained = train_embedder(
        model,
        examples,
        validation,
        [corpus.ids[r] for r in pool],
        [corpus.texts[r] for r in pool],
        doc_of,
        config,
        deadline=out_of_time,
        progress=progress,
    )
    extra: dict[str, Any] = {
        "train_loss": trained.losses,
        "validation_ndcg": trained.validation,
        "best_epoch": trained.best_epoch,
        "pairs": len(examples),
        "train_seconds": trained.seconds,
    }
    if not trained.losses:
        return result("current", "no time left to train within the budget", **extra)
    if not trained.improved:
        return result(
            "current", "no epoch beat the current embedder on the early-stopping slice", **extra
        )

    scratch = make_temp_dir(index, ".embedtune-")
    try:
        model_tmp, table_tmp = scratch / "model", scratch / "lance"
        trained.model.save(str(model_tmp), create_model_card=False, safe_serialization=True)
        tuned = _load(str(model_tmp), device)
        t0 = time.perf_counter()
        total = len(corpus.texts)
        rows = []
        for start in range(0, total, 512):
            rows.append(tuned.embed(corpus.texts[start : start + 512], batch_size=64))
            progress("re-embedding the corpus", min(start + 512, total), total)
        matrix = np.concatenate(rows)
        extra["embed_seconds"] = time.perf_counter() - t0
        held = selfeval.held_out
        relevant = [q.doc_id for q in held]
        questions = [q.question for q in held]
        scores = {
            "current": dense_ndcg(
                stock.embed(questions), corpus.matrix, corpus.ids, relevant, doc_of
            ),
            "tuned": dense_ndcg(tuned.embed(questions), matrix, corpus.ids, relevant, doc_of),
        }
        chosen, gaps = simplest_within_noise(
            scores, ["current", "tuned"], resamples=config.resamples, seed=config.seed
        )
        extra["held_out_ndcg"] = {n: sum(s) / len(s) for n, s in scores.items()}
        extra["held_out_gap"] = {n: [e.value, e.low, e.high] for n, e in gaps.items()}
        if chosen == "current":
            return result(
                "current", "the tuned embedder was not better beyond noise on held-out", **extra
            )
        progress("swapping in the tuned embedder", 0, 1)
        write_table(table_tmp, corpus, matrix)
        install(index, model_tmp, table_tmp, "t" + secrets.token_hex(4))
        progress("swapping in the tuned embedder", 1, 1)
        return result("tuned", "better beyond noise on the held-out questions", **extra)
    finally:
        remove_tree(scratch)
