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
step does. Training and scoring share one tokenisation and run under bf16 autocast where the
CPU has bf16 instructions (1.3-1.7 times faster here), with the scoring layer kept in fp32.

Training is slow on a CPU: about 2-3 queries (with 7 negatives) a second at 128 tokens on
2 cores. So the defaults train on fewer and shorter pairs (3 negatives; a token budget measured
on the pairs, :func:`choose_max_length`) and stop early when the held-out MRR stops rising
(:class:`EarlyStopping`, which keeps the best weights). A trained reranker can still rank worse
than the first stage (on SciFact, three epochs over 650 queries once reranked BM25's top 20 to
nDCG@10 0.65 against BM25's 0.68), so :mod:`mentor.rag.rerank_gate` judges it on held-out
questions and it is used by default only when it was kept.

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
from mentor.rag.records import Chunk
from mentor.rag.retrieve import SearchConfig, SearchResult
from mentor.utils.fs import atomic_write_text, make_temp_dir, remove_tree

METADATA = "mentor-reranker.json"
HEAD_LR_FACTOR = 30.0
"""How much faster the fresh scoring head learns than the encoder. Its weights start near zero
(std 0.02) and read a [CLS] vector that a mean-pooling sentence model never trained, so at the
encoder's rate the scores barely move in the few dozen steps that a small label set gives."""
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

    from mentor.models.loading import NO_HUB_KERNELS
    from mentor.utils.logs import quiet_libraries

    quiet_libraries()
    encoder = CrossEncoder(str(folder), device=device, model_kwargs=dict(NO_HUB_KERNELS), **kwargs)
    _fp32_head(encoder.model)
    return encoder


def _fp32_head(model: torch.nn.Module) -> None:
    """Compute the scoring layer in fp32 even under bf16 autocast.

    bf16 keeps 8 bits of mantissa: logits near 4 would land on a grid 0.03 apart and tie. The
    hook recomputes the (hidden -> 1) layer's output in fp32; the weights stay as they are.
    """

    def recompute(layer: torch.nn.Module, args: tuple[torch.Tensor, ...], _: Any) -> torch.Tensor:
        assert isinstance(layer, torch.nn.Linear)
        with torch.autocast(args[0].device.type, enabled=False):
            return F.linear(
                args[0].float(),
                layer.weight.float(),
                None if layer.bias is None else layer.bias.float(),
            )

    labels = getattr(model.config, "num_labels", 1)
    for layer in model.modules():
        if isinstance(layer, torch.nn.Linear) and layer.out_features == labels:
            layer.register_forward_hook(recompute)


def _bf16(device: torch.device) -> bool:
    """Whether to run under bf16 autocast: on a CPU with bf16 instructions, or a bf16 GPU.

    Measured here (2 cores, AVX-512 BF16, no AMX), MiniLM at 256 tokens: training 6.0 vs 4.6
    pairs-of-texts/s, scoring 38 vs 23 per second; at 128 tokens 20 vs 13 and 80 vs 50.
    """
    from mentor.models.loading import preferred_dtype

    mkldnn = torch.backends.mkldnn.is_available()  # type: ignore[no-untyped-call]
    return (device.type != "cpu" or mkldnn) and preferred_dtype(device) == torch.bfloat16


def _autocast(device: torch.device) -> torch.autocast:
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=_bf16(device))


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
        self,
        folder: Path,
        *,
        device: str = "cpu",
        batch_size: int = 32,
        max_length: int | None = None,
    ) -> None:
        """``max_length`` (tokens of query and passage together) defaults to what the model was
        trained with, as its ``mentor-reranker.json`` records, else 256."""
        if not (folder / "config.json").is_file():
            raise FileNotFoundError(f"{folder}: no config.json, so no model folder")
        architectures = json.loads((folder / "config.json").read_text()).get("architectures") or []
        if not any(a.endswith("ForSequenceClassification") for a in architectures):
            raise ValueError(
                f"{folder}: not a cross-encoder (config.json names {', '.join(architectures)}); "
                "train one with: mentor rag train-reranker"
            )
        encoder = _load(folder, device)
        self.model = encoder.model.eval()
        self.tokenizer = encoder.tokenizer
        self.batch_size = batch_size
        meta = folder / METADATA
        trained = json.loads(meta.read_text()).get("max_length") if meta.exists() else None
        self.max_length: int = max_length or trained or 256
        self.name = f"cross-encoder:{folder.name}"

    @torch.inference_mode()
    def score(self, query: str, passages: list[str]) -> list[float]:
        """One raw logit per passage, in input order; higher is more relevant.

        Passages go through in batches of similar length (longest first), so a batch pads to
        its own longest passage rather than the list's: the order does not change a score.
        """
        order = sorted(range(len(passages)), key=lambda i: -len(passages[i]))
        scores = [0.0] * len(passages)
        for start in range(0, len(order), self.batch_size):
            rows = order[start : start + self.batch_size]
            part = [passages[i] for i in rows]
            with _autocast(self.model.device):
                logits = _logits(
                    self.model, self.tokenizer, [query] * len(part), part, self.max_length
                )
            for i, value in zip(rows, logits.float().tolist(), strict=True):
                scores[i] = value
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
    best hits of OTHER documents after the first ``skip_top`` of them (skipping guards against
    relevant passages that nobody labelled): a chunk of a relevant document is never a
    negative, not even when only one of its chunks is named (on SciFact, where an abstract is
    about two overlapping chunks under one title, the sibling chunk was the hardest "negative"
    of most synthetic questions, and the reranker trained on them learnt nothing: validation
    MRR 0.49 -> 0.58 among 4 passages, chance 0.52). When the search runs short they are topped
    up with random chunks, so every query has the same number. Queries whose relevant documents
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
        documents = relevant | {c.doc_id for c in fallback}  # the positive's among them
        negatives = [c for c in hits if not _is_positive(c, documents)][skip_top:]
        negatives = negatives[:negatives_per_query]
        if len(negatives) < negatives_per_query:
            negatives += _random_negatives(
                chunks, documents, {c.chunk_id for c in negatives},
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
    """Wall time of the whole run: loading, validation, training and saving."""
    train_seconds: float
    pairs_per_second: float
    """Training pairs (a query with its positive and all its negatives) per second of training."""
    final_loss: float
    """Mean loss over the last tenth of the steps."""
    losses: list[float] = field(default_factory=list)
    """Mean loss of each twentieth of training, for a loss curve."""
    bf16: bool = False
    validation_pairs: int = 0
    mrr_before: float | None = None
    """Mean reciprocal rank of each validation positive among its negatives, fresh head."""
    mrr_after: float | None = None
    """The same after training: the best check's, when early stopping kept the best weights."""
    created: str = ""
    max_length: int = 0
    """Tokens of query and passage together, measured (``choose_max_length``) unless given."""
    stopped: str = ""
    """Why training ended before its last epoch ("no gain", "time budget"), else ""."""
    best_step: int = 0
    """The optimiser step whose weights were kept."""
    validation_curve: list[tuple[int, float]] = field(default_factory=list)
    """(step, validation MRR) of each early-stopping check."""


def listwise_loss(scores: torch.Tensor, sizes: Sequence[int]) -> torch.Tensor:
    """Softmax cross-entropy of the positive within its group, averaged over groups.

    ``scores`` is flat, group after group, each group its positive first and then its
    negatives; groups may differ in size. Equals ``mean_g -log softmax(scores_g)[0]``.
    """
    width = max(sizes)
    table = scores.new_full((len(sizes), width), float("-inf"))  # (G, width), padded with -inf
    lengths = torch.tensor(sizes, device=scores.device)
    mask = torch.arange(width, device=scores.device) < lengths[:, None]  # (G, width)
    table[mask] = scores  # row-major fill matches the flat group-after-group order
    target = torch.zeros(len(sizes), dtype=torch.long, device=scores.device)
    return F.cross_entropy(table.float(), target)


def _batches(pairs: Sequence[TrainingPair], size: int) -> Iterator[list[TrainingPair]]:
    for start in range(0, len(pairs), size):
        yield list(pairs[start : start + size])


def _group_scores(
    model: Any, tokenizer: Any, groups: Sequence[TrainingPair], max_length: int
) -> torch.Tensor:
    queries = [g.query for g in groups for _ in range(1 + len(g.negatives))]
    passages = [p for g in groups for p in (g.positive, *g.negatives)]
    return _logits(model, tokenizer, queries, passages, max_length)


@torch.inference_mode()
def mean_reciprocal_rank(
    model: Any, tokenizer: Any, pairs: Sequence[TrainingPair], max_length: int
) -> float:
    """Mean over pairs of 1 / rank of the positive among its own negatives (ties rank it low)."""
    model.eval()
    total = 0.0
    for group in _batches(pairs, 4):
        with _autocast(model.device):
            scores = _group_scores(model, tokenizer, group, max_length).float().tolist()
        at = 0
        for pair in group:
            positive, *negatives = scores[at : at + 1 + len(pair.negatives)]
            total += 1.0 / (1 + sum(s >= positive for s in negatives))
            at += 1 + len(pair.negatives)
    return total / max(len(pairs), 1)


def _schedule(step: int, warmup: int, total: int) -> float:
    """Learning-rate factor: linear warmup to 1, then linear decay to 0."""
    if step < warmup:
        return (step + 1) / warmup
    return max(0.0, (total - step) / max(1, total - warmup))


@dataclass
class EarlyStopping:
    """Stop training when the held-out MRR stops rising, or at a time budget; keep the best.

    One check scores every validation pair (a few seconds for a hundred questions with three
    negatives), so checks are spaced ``every`` optimiser steps. A check counts as a gain only
    when it beats the best so far by more than ``min_delta``. The budget is checked after every
    step, so a run ends within one step of ``max_seconds``.
    """

    validation: Sequence[TrainingPair]
    every: int
    patience: int = 2
    min_delta: float = 0.002
    max_seconds: float | None = None
    best: float = float("-inf")
    best_step: int = 0
    stopped: bool = False
    reason: str = ""
    """Why training ended early: "no gain", "time budget", or "" when it ran to the end."""
    curve: list[tuple[int, float]] = field(default_factory=list)
    """(step, validation MRR) of every check."""
    _state: dict[str, torch.Tensor] | None = None
    _since_best: int = 0

    def __post_init__(self) -> None:
        if self.every < 1 or self.patience < 1:
            raise ValueError(f"every and patience must be >= 1, got {self.every}, {self.patience}")

    def check(
        self, model: Any, tokenizer: Any, step: int, total: int, elapsed: float, max_length: int
    ) -> bool:
        """Whether to stop after ``step`` (of ``total``)."""
        over_budget = self.max_seconds is not None and elapsed >= self.max_seconds
        if step % self.every and step != total and not over_budget:
            return False
        if self.validation:
            mrr = mean_reciprocal_rank(model, tokenizer, self.validation, max_length)
            model.train()
            self.curve.append((step, mrr))
            if mrr > self.best + self.min_delta or self._state is None:
                self.best, self.best_step, self._since_best = max(mrr, self.best), step, 0
                self._state = {k: v.detach().clone() for k, v in model.state_dict().items()}
            else:
                self._since_best += 1
        if over_budget and step != total:
            self.stopped, self.reason = True, "time budget"
        elif self._since_best >= self.patience and step != total:
            self.stopped, self.reason = True, "no gain"
        return self.stopped

    def restore(self, model: Any) -> None:
        """Put back the weights of the best check (no-op when none was made)."""
        if self._state is not None:
            model.load_state_dict(self._state)


def choose_max_length(
    lengths: Sequence[int],
    *,
    coverage: float = 0.8,
    multiple: int = 32,
    floor: int = 64,
    cap: int = 128,
) -> int:
    """The shortest token budget, a multiple of ``multiple`` in [floor, cap], that holds
    ``coverage`` of the (query, passage) pairs whole.

    Attention costs grow with the square of the length and the rest linearly, so a budget that
    fits most chunks instead of the longest one trains and scores several times faster; the
    pairs cut short lose only their tail, and a chunk's opening is what its title and first
    sentences say it is about. The cap is 128: on SciFact, 128 tokens (title and first
    sentences) trained 3 times faster than 256 and reranked to 0.775 nDCG@10, and scoring 30
    candidates at 256 cannot meet a 150 ms query budget on 2 cores; short-chunk corpora (FAQ
    entries, help articles) get less.
    """
    if not lengths:
        raise ValueError("no pair lengths to measure")
    if not 0.0 < coverage <= 1.0:
        raise ValueError(f"coverage must be in (0, 1], got {coverage}")
    ordered = sorted(lengths)
    needed = ordered[min(len(ordered) - 1, math.ceil(coverage * len(ordered)) - 1)]
    rounded = math.ceil(needed / multiple) * multiple
    return max(floor, min(cap, rounded))


def pair_lengths(tokenizer: Any, pairs: Sequence[TrainingPair], limit: int = 400) -> list[int]:
    """Token lengths of (query, passage) pairs, untruncated, positives and negatives alike, for
    the first ``limit`` training pairs (enough for a quantile)."""
    queries = [p.query for p in pairs[:limit] for _ in range(1 + len(p.negatives))]
    passages = [x for p in pairs[:limit] for x in (p.positive, *p.negatives)]
    encoded = tokenizer(queries, passages, truncation=False)["input_ids"]
    return [len(ids) for ids in encoded]


def _train(
    model: Any,
    tokenizer: Any,
    pairs: Sequence[TrainingPair],
    *,
    epochs: int,
    batch_size: int,
    micro_batch: int,
    lr: float,
    warmup_ratio: float,
    max_length: int,
    seed: int,
    progress: Progress | None,
    stopping: EarlyStopping | None = None,
) -> list[float]:
    """The training loop; returns the loss of every optimiser step.

    With ``stopping``, the validation MRR is measured every ``stopping.every`` steps; training
    ends after ``stopping.patience`` checks without a gain, or once ``stopping.max_seconds``
    have passed, and the model is left with the weights of its best check.
    """
    order = list(pairs)
    total = math.ceil(len(order) / batch_size) * epochs
    warmup = max(1, round(warmup_ratio * total))
    named = list(model.named_parameters())
    head = [p for name, p in named if name.startswith("classifier.")]
    body = [p for name, p in named if not name.startswith("classifier.")]
    groups = [{"params": body, "lr": lr}, {"params": head, "lr": lr * HEAD_LR_FACTOR}]
    optimizer = torch.optim.AdamW(groups, lr=lr, weight_decay=0.01)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: _schedule(s, warmup, total))
    rng = random.Random(seed)
    losses: list[float] = []
    started = time.perf_counter()
    model.train()
    for _ in range(epochs):
        if stopping is not None and stopping.stopped:
            break
        rng.shuffle(order)
        for batch in _batches(order, batch_size):
            step_loss = 0.0
            for part in _batches(batch, micro_batch):
                with _autocast(model.device):
                    scores = _group_scores(model, tokenizer, part, max_length)
                # Weighted by share of the batch, so the summed gradients are the batch mean's.
                loss = listwise_loss(scores, [1 + len(p.negatives) for p in part])
                loss = loss * (len(part) / len(batch))
                loss.backward()  # type: ignore[no-untyped-call]
                step_loss += loss.item()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            losses.append(step_loss)
            if progress is not None:
                progress(len(losses), total, step_loss)
            if stopping is not None:
                elapsed = time.perf_counter() - started
                if stopping.check(model, tokenizer, len(losses), total, elapsed, max_length):
                    break
    model.eval()
    if stopping is not None:
        stopping.restore(model)
    return losses


def train_reranker(
    pairs: Sequence[TrainingPair],
    *,
    out: Path,
    base: str | Path = "minilm-l6",
    epochs: int = 3,
    batch_size: int = 8,
    lr: float = 1e-4,
    warmup_ratio: float = 0.1,
    max_length: int | None = None,
    micro_batch: int = 4,
    seed: int = 0,
    device: str = "auto",
    validation: Sequence[TrainingPair] | None = None,
    patience: int | None = 2,
    checks_per_epoch: int = 4,
    max_seconds: float | None = None,
    progress: Progress | None = None,
) -> RerankerTrainReport:
    """Fine-tune ``base`` (registry name or model folder) into a cross-encoder saved at ``out``.

    The base's encoder weights load with a fresh one-logit head. ``batch_size`` counts queries
    per optimiser step, each with its 1 + n passages; ``micro_batch`` queries go through the
    model at once and gradients add up over the step, which bounds memory without changing
    the result. AdamW, linear warmup then decay, gradients clipped to norm 1; bf16 autocast
    where the CPU has bf16 instructions. ``out`` is replaced only once training succeeded.

    ``max_length`` None measures it: :func:`choose_max_length` over the pairs' token lengths.
    With ``validation`` pairs and a ``patience``, the held-out MRR is checked
    ``checks_per_epoch`` times an epoch and training stops after ``patience`` checks without
    a gain, keeping the best weights (:class:`EarlyStopping`); ``max_seconds`` caps the
    training loop's time either way, so ``epochs`` is an upper bound.

    The rate and batch come from SciFact runs on a 2-core CPU (650 training queries, 7 BM25
    hard negatives each). A few hundred queries make only tens of steps, so the rate is high
    for a cross-encoder (1e-4, the head 30 times that) and the batch small: at 2e-5 and 16
    queries a step the loss had not moved after an epoch. 128 tokens trained about 3 times
    faster than 256 (2-3 pairs of 8 texts a second here, against 0.7-1); validation MRR on hard
    negatives rose from 0.36 to 0.64 after one epoch and 0.75 after three.
    """
    from mentor.models.loading import resolve_device, resolve_model_path

    if not pairs:
        raise ValueError("no training pairs: nothing to learn from")
    started = time.perf_counter()
    held_out = list(validation or [])
    with _seeded(seed):
        encoder = _load(resolve_model_path(base), str(resolve_device(device)), num_labels=1)
        model, tokenizer = encoder.model, encoder.tokenizer
        length = max_length or choose_max_length(pair_lengths(tokenizer, pairs))
        mrr_before = mean_reciprocal_rank(model, tokenizer, held_out, length)
        steps_per_epoch = math.ceil(len(pairs) / batch_size)
        stopping = None
        if (held_out and patience is not None) or max_seconds is not None:
            stopping = EarlyStopping(
                held_out,
                every=max(1, steps_per_epoch // max(1, checks_per_epoch)),
                patience=patience or steps_per_epoch * epochs,
                max_seconds=max_seconds,
            )
        t0 = time.perf_counter()
        losses = _train(
            model, tokenizer, pairs, epochs=epochs, batch_size=batch_size,
            micro_batch=micro_batch, lr=lr, warmup_ratio=warmup_ratio, max_length=length,
            seed=seed, progress=progress, stopping=stopping,
        )  # fmt: skip
        train_seconds = time.perf_counter() - t0
        if stopping is not None and stopping.curve:
            mrr_after = stopping.best  # the restored weights are the best check's
        else:
            mrr_after = mean_reciprocal_rank(model, tokenizer, held_out, length)

    report = RerankerTrainReport(
        out=out,
        base=str(base),
        pairs=len(pairs),
        epochs=epochs,
        steps=len(losses),
        seconds=0.0,
        train_seconds=train_seconds,
        pairs_per_second=min(len(pairs) * epochs, len(losses) * batch_size) / train_seconds,
        final_loss=_mean(losses[-max(1, len(losses) // 10) :]),
        losses=_curve(losses, 20),
        bf16=_bf16(model.device),
        validation_pairs=len(held_out),
        mrr_before=mrr_before if held_out else None,
        mrr_after=mrr_after if held_out else None,
        created=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        max_length=length,
        stopped=stopping.reason if stopping else "",
        best_step=stopping.best_step if stopping and stopping.curve else len(losses),
        validation_curve=list(stopping.curve) if stopping else [],
    )
    settings = {"lr": lr, "batch_size": batch_size, "seed": seed}
    _save(encoder, out, asdict(report) | {"out": str(out)} | settings)
    report.seconds = time.perf_counter() - started
    return report


@contextmanager
def _seeded(seed: int) -> Iterator[None]:
    # The fresh head is drawn from torch's global generator (and dropout too): fork it, so a
    # run is repeatable without changing the caller's random state.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


def _save(encoder: Any, out: Path, meta: dict[str, Any]) -> None:
    """Write the model beside ``out``, then swap it in: a crash leaves the old folder whole."""
    tmp = make_temp_dir(out.parent, f".{out.name}.tmp-")
    try:
        encoder.save(str(tmp), safe_serialization=True, create_model_card=False)
        atomic_write_text(tmp / METADATA, json.dumps(meta, indent=2))
        old = out.with_name(f".{out.name}.old")
        remove_tree(old)
        if out.exists():
            out.rename(old)
        tmp.rename(out)
        remove_tree(old)
    finally:
        remove_tree(tmp)


def _mean(values: Sequence[float]) -> float:
    return sum(values) / len(values) if values else float("nan")


def _curve(values: Sequence[float], points: int) -> list[float]:
    """``values`` averaged over ``points`` consecutive slices (fewer when there are fewer)."""
    n = min(points, len(values))
    bounds = [round(i * len(values) / n) for i in range(n + 1)]
    return [_mean(values[a:b]) for a, b in itertools.pairwise(bounds)]
