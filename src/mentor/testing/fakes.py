"""Deterministic stand-ins for the model and retrieval protocols, with no model and no torch.

``HashEmbedder`` satisfies :class:`mentor.models.protocols.Embedder` with no model at all: texts
that share words get similar vectors, identically in every process. ``ScriptedGenerator``
satisfies :class:`mentor.models.protocols.Generator` by replaying canned replies (or calling a
function) and records every call, so tests can assert on the prompts a component sent.
``MemoryStore`` satisfies :class:`mentor.rag.store.VectorStore` with numpy arrays and exact
cosine search, and ``KeywordReranker`` satisfies :class:`mentor.rag.retrieve.Reranker` by
counting shared words, recording every call.
"""

from __future__ import annotations

import functools
import hashlib
import itertools
import re
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import numpy.typing as npt

from mentor.models.protocols import ChatMessage, SamplingConfig
from mentor.rag.filters import check_filters, matches
from mentor.rag.records import Chunk

__all__ = [
    "HashEmbedder",
    "KeywordReranker",
    "MemoryStore",
    "RerankCall",
    "ScriptedCall",
    "ScriptedGenerator",
]

_WORD = re.compile(r"\w+")
_PIECE = re.compile(r"\s*\S+|\s+")
"""A word with the whitespace before it; a lone match of trailing whitespace ends the text."""


@functools.lru_cache(maxsize=65536)
def _bucket_and_sign(feature: str, dim: int) -> tuple[int, float]:
    # blake2b, not hash(): Python salts str hashes per process, and vectors stored in an index
    # by one process must match queries embedded by the next.
    digest = hashlib.blake2b(feature.encode("utf-8"), digest_size=8).digest()
    value = int.from_bytes(digest, "little")
    # The sign comes from the top bit, close to independent of the bucket (value % dim), so
    # colliding features cancel as often as they add and inner products stay unbiased.
    return value % dim, 1.0 if value >> 63 else -1.0


def _features(text: str) -> list[str]:
    words = _WORD.findall(text.lower())
    return words + [f"{a} {b}" for a, b in itertools.pairwise(words)]


class HashEmbedder:
    """Signed feature hashing of lowercase word unigrams and bigrams, L2-normalised.

    Deterministic across processes and platforms. A text with no words (or whose features
    cancel out exactly) maps to a fixed unit vector, the first basis vector.
    """

    def __init__(self, dim: int = 64, name: str = "hash") -> None:
        if dim < 1:
            raise ValueError(f"dim must be positive, got {dim}")
        self.dim = dim
        self.name = name

    def count_tokens(self, text: str) -> int:
        """Words: the tokens this embedder reads."""
        return len(_WORD.findall(text.lower()))

    def embed(self, texts: Sequence[str], *, batch_size: int = 32) -> npt.NDArray[np.float32]:
        """Return a float32 array of shape ``(len(texts), dim)`` with unit-length rows.

        ``batch_size`` is accepted for protocol compatibility; hashing needs no batching.
        """
        if batch_size < 1:
            raise ValueError(f"batch_size must be positive, got {batch_size}")
        if isinstance(texts, str):
            raise TypeError("embed() takes a sequence of texts; wrap a single text in a list")
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        for row, text in enumerate(texts):
            out[row] = self._embed_one(text)
        return out

    def _embed_one(self, text: str) -> npt.NDArray[np.float32]:
        vector = np.zeros(self.dim, dtype=np.float64)  # accumulate in float64, round once
        for feature in _features(text):
            bucket, sign = _bucket_and_sign(feature, self.dim)
            vector[bucket] += sign
        norm = float(np.linalg.norm(vector))
        if norm == 0.0:
            vector[0] = 1.0
            norm = 1.0
        return (vector / norm).astype(np.float32)

    def __repr__(self) -> str:
        return f"HashEmbedder(dim={self.dim}, name={self.name!r})"


@dataclass(frozen=True)
class ScriptedCall:
    """One call to :meth:`ScriptedGenerator.stream`: what was asked, and what came back."""

    messages: tuple[ChatMessage, ...]
    """Copies of the messages, so later mutation by the caller does not rewrite history."""
    config: SamplingConfig
    reply: str
    """The text streamed back, after ``max_new_tokens`` and ``stop`` were applied."""


Responder = Callable[[Sequence[ChatMessage]], str]
Chunking = Literal["word", "char", "whole"]


class ScriptedGenerator:
    """A generator that replays scripted replies, like a mock LLM with a response queue.

    ``responses`` is either replies to return in order (a single ``str`` counts as one reply) or
    a function from the messages to the reply. Replies are streamed in pieces (``chunk``: a word
    with its leading whitespace, a character, or the whole reply), cut after
    ``config.max_new_tokens`` whitespace-separated words and before the first ``config.stop``
    string, as a real generator would. Every call is recorded in :attr:`calls`.
    """

    def __init__(
        self,
        responses: Iterable[str] | Responder,
        name: str = "scripted",
        chunk: Chunking = "word",
    ) -> None:
        if chunk not in ("word", "char", "whole"):
            raise ValueError(f"chunk must be 'word', 'char' or 'whole', got {chunk!r}")
        self.name = name
        self.chunk: Chunking = chunk
        self.calls: list[ScriptedCall] = []
        self._responder: Responder | None = None
        self._queue: deque[str] = deque()
        if callable(responses):
            self._responder = responses
        else:
            self.push(*([responses] if isinstance(responses, str) else responses))

    def push(self, *responses: str) -> None:
        """Queue more replies after those already waiting."""
        if self._responder is not None:
            raise TypeError("this ScriptedGenerator answers with a function; it has no queue")
        self._queue.extend(responses)

    @property
    def remaining(self) -> int:
        """How many queued replies have not been used yet (0 in function mode)."""
        return len(self._queue)

    def stream(self, messages: Sequence[ChatMessage], config: SamplingConfig) -> Iterator[str]:
        """Yield the next reply in pieces; raise ``RuntimeError`` if the queue is empty.

        The reply is taken and the call recorded at once, not on first iteration, so an
        exhausted queue fails where the generator was called.
        """
        reply = _truncate(self._next_reply(messages), config)
        self.calls.append(ScriptedCall(tuple(m.copy() for m in messages), config, reply))
        return iter(_split(reply, self.chunk))

    def _next_reply(self, messages: Sequence[ChatMessage]) -> str:
        if self._responder is not None:
            return self._responder(messages)
        if not self._queue:
            last = repr(messages[-1]["content"][:80]) if messages else "(no messages)"
            raise RuntimeError(
                f"ScriptedGenerator {self.name!r} ran out of scripted replies: all "
                f"{len(self.calls)} were used and call {len(self.calls) + 1} has none "
                f"(last message: {last}). Script more replies, or push() them."
            )
        return self._queue.popleft()

    def __repr__(self) -> str:
        mode = "function" if self._responder is not None else f"{self.remaining} queued"
        return f"ScriptedGenerator(name={self.name!r}, {mode}, calls={len(self.calls)})"


def _truncate(reply: str, config: SamplingConfig) -> str:
    # Word limit first, then stop strings within what is left: a real generator halts at
    # whichever comes first and never sees a stop string that would end beyond its budget.
    pieces = _PIECE.findall(reply)
    words = [p for p in pieces if not p.isspace()]
    if len(words) > config.max_new_tokens:
        reply = "".join(pieces[: max(config.max_new_tokens, 0)])
    cut = min((i for s in config.stop if s and (i := reply.find(s)) >= 0), default=len(reply))
    return reply[:cut]


def _split(reply: str, chunk: Chunking) -> list[str]:
    if chunk == "whole":
        return [reply] if reply else []
    if chunk == "char":
        return list(reply)
    return _PIECE.findall(reply)


class MemoryStore:
    """A :class:`mentor.rag.store.VectorStore` in memory: chunks and their vectors, exact search.

    ``vectors`` has one row per chunk, in the same order; rows are normalised on the way in and
    queries on each search, so scores are true cosine similarities. Filtering is
    :func:`mentor.rag.filters.matches` applied chunk by chunk, the reference meaning of a filter.
    Equal scores come back in row order.
    """

    def __init__(self, chunks: Sequence[Chunk], vectors: npt.ArrayLike) -> None:
        matrix = np.asarray(vectors, dtype=np.float64)
        if matrix.ndim != 2 or len(matrix) != len(chunks):
            raise ValueError(
                f"vectors {matrix.shape} do not give one row to each of {len(chunks)} chunks"
            )
        self._chunks = list(chunks)
        self._row_of = {c.chunk_id: row for row, c in enumerate(self._chunks)}
        if len(self._row_of) != len(self._chunks):
            raise ValueError("chunk ids repeat; a store's chunk ids are unique")
        self.dim = matrix.shape[1]
        self._unit = _unit_rows(matrix)  # (n, dim)

    def __len__(self) -> int:
        return len(self._chunks)

    def chunks(self) -> list[Chunk]:
        return self._chunks

    def row_of(self, chunk_id: str) -> int:
        return self._row_of[chunk_id]

    def search(
        self, vector: npt.ArrayLike, k: int, filters: Mapping[str, str] | None = None
    ) -> list[tuple[int, float]]:
        if filters:
            check_filters(filters)
        query = np.asarray(vector, dtype=np.float64)
        if query.shape != (self.dim,):
            raise ValueError(f"query vector {query.shape}, this store holds {self.dim}-d vectors")
        rows = np.array(
            [row for row, c in enumerate(self._chunks) if not filters or matches(c, filters)],
            dtype=np.int64,
        )
        if k <= 0 or not len(rows):
            return []
        scores = self._unit[rows] @ _unit_rows(query[None, :])[0]  # (len(rows),)
        best = np.argsort(-scores, kind="stable")[:k]
        return [(int(rows[i]), float(scores[i])) for i in best]

    def __repr__(self) -> str:
        return f"MemoryStore({len(self)} chunks, dim={self.dim})"


def _unit_rows(matrix: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    norms = np.linalg.norm(matrix, axis=1, keepdims=True)
    return matrix / np.where(norms == 0.0, 1.0, norms)  # a zero vector stays zero: cosine 0


@dataclass(frozen=True)
class RerankCall:
    """One call to :meth:`KeywordReranker.score`: the query, the passages, the scores given."""

    query: str
    passages: tuple[str, ...]
    scores: tuple[float, ...]


class KeywordReranker:
    """A :class:`mentor.rag.retrieve.Reranker` that scores by shared words, deterministically.

    A passage scores the number of distinct words (lowercase, as ``\\w+`` splits them) it shares
    with the query, or, when ``keywords`` are given, with those keywords whatever the query: a
    reranker that disagrees with the first stage on purpose. Every call is recorded in
    :attr:`calls`.
    """

    def __init__(self, keywords: Iterable[str] | None = None, name: str = "keyword") -> None:
        if isinstance(keywords, str):
            raise TypeError("keywords is a sequence of words; wrap a single word in a list")
        self.keywords = None if keywords is None else frozenset(_words(" ".join(keywords)))
        self.name = name
        self.calls: list[RerankCall] = []

    def score(self, query: str, passages: list[str]) -> list[float]:
        wanted = self.keywords if self.keywords is not None else _words(query)
        scores = [float(len(wanted & _words(p))) for p in passages]
        self.calls.append(RerankCall(query, tuple(passages), tuple(scores)))
        return scores

    def __repr__(self) -> str:
        words = "query words" if self.keywords is None else sorted(self.keywords)
        return f"KeywordReranker({words}, calls={len(self.calls)})"


def _words(text: str) -> frozenset[str]:
    return frozenset(_WORD.findall(text.lower()))
