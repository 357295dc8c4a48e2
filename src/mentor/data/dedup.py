"""Exact and near-duplicate detection within one dataset, and leakage between train and test.

Texts are first normalised (:func:`normalize_text`): two texts equal after normalisation are
*exact* duplicates. *Near* duplicates are found with MinHash (128 permutations, fixed seed) over
shingles - word 3-grams, or character 5-grams for texts under 20 words, both for 12-19 words so
that pairs straddling the boundary are still compared - indexed in a MinHash LSH whose candidate
threshold sits a little below ``threshold``. Every candidate pair is then confirmed with the real
Jaccard similarity of the shingle sets, so LSH can miss nothing above its recall but never adds a
false pair. Results are deterministic: no ``hash()``, no set iteration order reaches the output.
"""

from __future__ import annotations

import re
import unicodedata
import zlib
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import cache
from typing import Any, Literal, cast

from pydantic import BaseModel

from mentor.data.schemas import (
    ChatRecord,
    ClassificationRecord,
    CorpusRecord,
    QARecord,
    QrelRow,
    QueryRecord,
    TextRecord,
    schema_name,
)

NUM_PERM = 128
SEED = 1
WORD_N = 3
CHAR_N = 5
CHAR_BELOW_WORDS = 20
"""Texts with fewer words than this are (also) shingled by characters."""
WORD_FROM_WORDS = 12
"""Texts with at least this many words are (also) shingled by words."""
LSH_SLACK = 0.15
"""How far below the confirmation threshold LSH looks for candidates."""

DuplicateKind = Literal["exact", "near"]
_NOT_WORD = re.compile(r"[^\w\s]|_")


def normalize_text(text: str) -> str:
    """NFKC, casefold, punctuation and symbols to spaces, whitespace collapsed to single spaces."""
    text = unicodedata.normalize("NFKC", text).casefold()
    return " ".join(_NOT_WORD.sub(" ", text).split())


_KEY_TEXT: dict[str, Callable[[Any], str]] = {
    "qa": lambda r: cast(QARecord, r).question,
    "classification": lambda r: cast(ClassificationRecord, r).text,
    "chat": lambda r: "\n".join(
        m.content for m in cast(ChatRecord, r).messages if m.role == "user"
    ),
    "corpus": lambda r: f"{cast(CorpusRecord, r).title}\n{cast(CorpusRecord, r).text}".strip(),
    "query": lambda r: cast(QueryRecord, r).text,
    "text": lambda r: cast(TextRecord, r).text,
    "qrels": lambda r: f"{cast(QrelRow, r).query_id}\t{cast(QrelRow, r).doc_id}",
}


def key_text(record: BaseModel, schema: str | None = None) -> str:
    """The text that identifies an example: what two copies of one example share.

    qa: the question; classification: the text; chat: the user turns joined; corpus: title and
    text; query: the text; qrels: the query and document ids. ``schema`` defaults to the kind of
    the record's model.
    """
    return _KEY_TEXT[schema or schema_name(record)](record)


@dataclass(frozen=True)
class DuplicateGroup:
    """Lines (1-based, of one file) holding one example; ``similarity`` is the lowest pair's."""

    kind: DuplicateKind
    lines: list[int]
    similarity: float
    text: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "lines": self.lines,
            "similarity": round(self.similarity, 4),
            "text": self.text,
        }


@dataclass(frozen=True)
class LeakPair:
    """A test example that also appears (exactly or nearly) in the training data."""

    train_line: int
    test_line: int
    kind: DuplicateKind
    similarity: float
    text: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "train_line": self.train_line,
            "test_line": self.test_line,
            "kind": self.kind,
            "similarity": round(self.similarity, 4),
            "text": self.text,
        }


@dataclass
class _Unique:
    """One distinct normalised text, the lines it occurs on and its shingle sets."""

    norm: str
    lines: list[int]
    text: str
    chars: frozenset[str] | None = None
    words: frozenset[str] | None = None
    signatures: dict[str, Any] | None = None

    def shingle(self) -> dict[str, Any]:
        """Build the shingle sets and their MinHash signatures (once); return the signatures."""
        if self.signatures is None:
            words = self.norm.split()
            if len(words) < CHAR_BELOW_WORDS:
                starts = range(max(1, len(self.norm) - CHAR_N + 1))
                self.chars = frozenset(self.norm[i : i + CHAR_N] for i in starts)
            if len(words) >= WORD_FROM_WORDS:
                self.words = frozenset(
                    " ".join(words[i : i + WORD_N]) for i in range(len(words) - WORD_N + 1)
                )
            shingles = {"c": self.chars, "w": self.words}
            self.signatures = {k: _minhash(v) for k, v in shingles.items() if v is not None}
        return self.signatures


def _jaccard(a: frozenset[str], b: frozenset[str]) -> float:
    return len(a & b) / len(a | b)


def _similarity(a: _Unique, b: _Unique) -> float:
    """Jaccard of the shingle sets both texts have (the higher one when they share both kinds)."""
    scores = [0.0]
    if a.chars is not None and b.chars is not None:
        scores.append(_jaccard(a.chars, b.chars))
    if a.words is not None and b.words is not None:
        scores.append(_jaccard(a.words, b.words))
    return max(scores)


def _uniques(
    texts: Sequence[str], lines: Sequence[int] | None, normalize: Callable[[str], str]
) -> list[_Unique]:
    if lines is not None and len(lines) != len(texts):
        raise ValueError(f"got {len(texts)} texts but {len(lines)} line numbers")
    numbers = list(lines) if lines is not None else list(range(1, len(texts) + 1))
    by_norm: dict[str, _Unique] = {}
    for text, line in zip(texts, numbers, strict=True):
        norm = normalize(text)
        if not norm:
            continue  # nothing left to compare (empty or punctuation only)
        if norm in by_norm:
            by_norm[norm].lines.append(line)
        else:
            by_norm[norm] = _Unique(norm, [line], text)
    return list(by_norm.values())


def _hash(shingle: str) -> int:
    return zlib.crc32(shingle.encode("utf-8"))


@cache
def _minhash_kwargs() -> dict[str, Any]:
    """Constructor arguments that reuse one set of permutations (building them is the slow part)."""
    from datasketch import MinHash

    base = MinHash(num_perm=NUM_PERM, seed=SEED)
    kwargs: dict[str, Any] = {"num_perm": NUM_PERM, "seed": SEED, "permutations": base.permutations}
    if getattr(base, "scheme", None) is not None:  # datasketch >= 2 wants it named explicitly
        kwargs["scheme"] = base.scheme
    return kwargs


def _minhash(shingles: frozenset[str]) -> Any:
    from datasketch import MinHash

    sig = MinHash(hashfunc=_hash, **_minhash_kwargs())
    sig.update_batch(shingles)
    return sig


class _Index:
    """One MinHash LSH over the uniques of one or two sides ("a": train, "b": test)."""

    def __init__(self, threshold: float, sides: dict[str, Sequence[_Unique]]) -> None:
        from datasketch import MinHashLSH  # imported here: it is slow to import

        self.lsh = MinHashLSH(threshold=max(0.3, threshold - LSH_SLACK), num_perm=NUM_PERM)
        for side, items in sides.items():
            for pos, item in enumerate(items):
                for kind, signature in item.shingle().items():
                    self.lsh.insert((side, kind, pos), signature, check_duplication=False)
        self._found: dict[int, dict[str, list[int]]] = {}

    def candidates(self, item: _Unique, side: str) -> list[int]:
        """Positions on ``side`` whose signature of the same shingle kind collides with item's."""
        if id(item) not in self._found:
            found: dict[str, set[int]] = defaultdict(set)
            for kind, signature in item.shingle().items():
                for key_side, key_kind, pos in self.lsh.query(signature):
                    if key_kind == kind:
                        found[key_side].add(pos)
            self._found[id(item)] = {k: sorted(v) for k, v in found.items()}
        return self._found[id(item)].get(side, [])


def _preview(text: str, limit: int = 80) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


def _exact_groups(uniques: list[_Unique]) -> list[DuplicateGroup]:
    return [
        DuplicateGroup("exact", u.lines, 1.0, _preview(u.text)) for u in uniques if len(u.lines) > 1
    ]


def _near_groups(
    uniques: list[_Unique], index: _Index, side: str, threshold: float
) -> list[DuplicateGroup]:
    """Union-find over the confirmed near pairs of one side; each component is a group."""
    parent = list(range(len(uniques)))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    lowest: dict[int, float] = {}
    for i, item in enumerate(uniques):
        for j in index.candidates(item, side):
            if j <= i:
                continue
            score = _similarity(item, uniques[j])
            if score >= threshold:
                a, b = sorted((root(i), root(j)))
                parent[b] = a
                lowest[a] = min(lowest.get(a, 1.0), lowest.pop(b, 1.0), score)
    members: dict[int, list[int]] = defaultdict(list)
    for i in range(len(uniques)):
        members[root(i)].append(i)
    return [
        DuplicateGroup(
            "near",
            sorted(line for i in group for line in uniques[i].lines),
            lowest.get(head, 1.0),
            _preview(uniques[head].text),
        )
        for head, group in members.items()
        if len(group) > 1
    ]


def _leaks(
    train: list[_Unique], test: list[_Unique], index: _Index | None, threshold: float
) -> list[LeakPair]:
    """Exact leaks by normalised text; near leaks (when an index is given) by confirmed Jaccard."""
    exact = {u.norm: u for u in train}
    pairs: list[LeakPair] = []
    for t in test:
        match = exact.get(t.norm)
        if match is not None:
            pairs += [
                LeakPair(a, b, "exact", 1.0, _preview(t.text)) for a in match.lines for b in t.lines
            ]
        elif index is not None:
            for j in index.candidates(t, "a"):
                score = _similarity(train[j], t)
                if score >= threshold:
                    pairs += [
                        LeakPair(a, b, "near", score, _preview(t.text))
                        for a in train[j].lines
                        for b in t.lines
                    ]
    return sorted(pairs, key=lambda p: (p.test_line, p.train_line))


def _sorted_groups(groups: list[DuplicateGroup]) -> list[DuplicateGroup]:
    return sorted(groups, key=lambda g: (g.lines[0], g.kind))


def find_duplicates(
    texts: Sequence[str],
    *,
    lines: Sequence[int] | None = None,
    threshold: float = 0.8,
    near: bool = True,
    normalize: Callable[[str], str] = normalize_text,
) -> list[DuplicateGroup]:
    """Groups of exact duplicates and of near duplicates (Jaccard >= ``threshold``).

    ``lines`` gives each text's line number (default 1, 2, ...). A near group lists every line of
    its members; a text duplicated exactly *and* nearly is in both kinds of group. Groups come
    sorted by their first line. ``near=False`` finds exact duplicates only; ``normalize`` decides
    which texts are exactly equal (pass ``str.strip`` to compare ids verbatim).
    """
    uniques = _uniques(texts, lines, normalize)
    groups = _exact_groups(uniques)
    if near and len(uniques) > 1:
        groups += _near_groups(uniques, _Index(threshold, {"a": uniques}), "a", threshold)
    return _sorted_groups(groups)


def find_leakage(
    train_texts: Sequence[str],
    test_texts: Sequence[str],
    threshold: float = 0.8,
    *,
    train_lines: Sequence[int] | None = None,
    test_lines: Sequence[int] | None = None,
    near: bool = True,
    normalize: Callable[[str], str] = normalize_text,
) -> list[LeakPair]:
    """Pairs (train line, test line) where a test example also appears in the training data.

    A test text equal to a training text after normalisation is an ``exact`` leak; otherwise it is
    a ``near`` leak when its Jaccard similarity to a training text reaches ``threshold``.
    """
    train = _uniques(train_texts, train_lines, normalize)
    test = _uniques(test_texts, test_lines, normalize)
    index = _Index(threshold, {"a": train}) if near and train and test else None
    return _leaks(train, test, index, threshold)


def find_duplicates_and_leakage(
    train_texts: Sequence[str],
    test_texts: Sequence[str],
    threshold: float = 0.8,
    *,
    train_lines: Sequence[int] | None = None,
    test_lines: Sequence[int] | None = None,
    near: bool = True,
    normalize: Callable[[str], str] = normalize_text,
) -> tuple[list[DuplicateGroup], list[DuplicateGroup], list[LeakPair]]:
    """Duplicates within train, duplicates within test and leakage, from one shared LSH index.

    The same results as :func:`find_duplicates` on each file and :func:`find_leakage`, at the cost
    of signing and indexing every text once.
    """
    train = _uniques(train_texts, train_lines, normalize)
    test = _uniques(test_texts, test_lines, normalize)
    train_groups, test_groups = _exact_groups(train), _exact_groups(test)
    index = _Index(threshold, {"a": train, "b": test}) if near else None
    if index is not None:
        train_groups += _near_groups(train, index, "a", threshold)
        test_groups += _near_groups(test, index, "b", threshold)
    leaks = _leaks(train, test, index, threshold)
    return _sorted_groups(train_groups), _sorted_groups(test_groups), leaks
