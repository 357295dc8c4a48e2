"""Grounding: how much of a generated answer the retrieved text supports, and what it invents.

Method (lexical, deterministic, no model in the loop):

1. Citation markers such as ``[1]`` or ``[2, 3]`` are removed first: they point at sources and
   are not content.
2. Content tokens are the SQuAD-normalised words (:func:`mentor.evaluate.text.normalize_answer`:
   lower case, no punctuation, no articles) minus the small English stop-word list
   ``STOP_WORDS``. Numbers are kept: they carry facts.
3. ``support(answer, sources)`` is the share of the answer's content tokens (counted with
   repetition) that occur anywhere in the sources; an answer with no content tokens is fully
   supported (it claims nothing). ``is_supported`` compares it with a threshold (0.8).
4. ``invented_numbers`` lists the numbers, amounts and dates of the answer that no source
   contains, compared as numbers (``1,200`` = ``1200``, ``3.50`` = ``3.5``, ``07`` = ``7``):
   a number the sources lack is the crispest sign of an invented fact.
5. ``answer_in_sources(reference, sources)`` is the same share for a reference answer: whether
   the retrieved text holds the answer at all (used by ``mentor rag diagnose``).

Limits: words are matched exactly (no stemming or synonyms), so a faithful paraphrase scores
below 1 and a fluent recombination of source words scores high; use the scores to compare
systems on the same questions, not as proof of a single answer's truth.

Usage::

    support("Boards export as CSV [1].", ["Boards export as CSV files."])  # 1.0
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from decimal import Decimal, InvalidOperation

from mentor.evaluate.text import normalize_answer

_STOP = """
    i me my we our you your he him his she her it its they them their this that these those
    what which who whom whose when where why how
    am is are was were be been being have has had do does did will would shall should can
    could may might must
    and or but if then so than as of at by for with about to from in on into onto over under
    up down out off not no nor only also too very just there here
    all any both each some such other more most own same
    please according source sources document documents
"""
STOP_WORDS = frozenset(_STOP.split())
"""Function words, plus the words answers use to frame themselves ("according to the sources")."""

_CITATION = re.compile(r"\[\s*(?:sources?\s*)?\d+(?:\s*[,;]\s*\d+)*\s*\]", re.IGNORECASE)
# A number that is not the tail of a word ("SmolLM2", "v2"); units may follow ("10GB", "3rd").
_NUMBER = re.compile(r"(?<![A-Za-z0-9_.])\d+(?:[.,]\d+)*")
_THOUSANDS = re.compile(r"^\d{1,3}(?:,\d{3})+(?:\.\d+)?$")


def strip_citations(text: str) -> str:
    """``text`` without its citation markers ([1], [1, 2], [Source 3])."""
    return _CITATION.sub(" ", text)


def content_tokens(text: str) -> list[str]:
    """The normalised words of ``text`` that carry content, in order, with repetition."""
    return [w for w in normalize_answer(strip_citations(text)).split() if w not in STOP_WORDS]


def _share_found(text: str, sources: Sequence[str]) -> float:
    tokens = content_tokens(text)
    if not tokens:
        return 1.0
    vocabulary = set(content_tokens("\n".join(sources)))
    return sum(t in vocabulary for t in tokens) / len(tokens)


def support(answer: str, sources: Sequence[str]) -> float:
    """Share of the answer's content tokens present in the sources (1.0 for an empty answer)."""
    return _share_found(answer, sources)


def is_supported(answer: str, sources: Sequence[str], threshold: float = 0.8) -> bool:
    return support(answer, sources) >= threshold


def unsupported_tokens(answer: str, sources: Sequence[str]) -> list[str]:
    """The answer's content tokens absent from the sources, once each, in order of appearance."""
    vocabulary = set(content_tokens("\n".join(sources)))
    missing = [t for t in content_tokens(answer) if t not in vocabulary]
    return list(dict.fromkeys(missing))


def _number_value(raw: str) -> str:
    """One spelling per number: no thousands commas, no leading or trailing zeros."""
    if _THOUSANDS.match(raw):
        raw = raw.replace(",", "")
    try:
        return format(Decimal(raw).normalize(), "f")
    except InvalidOperation:  # "1,5,7" and the like: compare as written
        return raw


def numbers(text: str) -> list[str]:
    """The numbers written in ``text`` (citation markers excluded), as written."""
    return _NUMBER.findall(strip_citations(text))


def invented_numbers(answer: str, sources: Sequence[str]) -> list[str]:
    """Numbers, amounts and dates in the answer that no source contains, once each, as written.

    Only numbers written in digits count. Numbers are compared by value; a date is compared
    by its parts, so "2024-03-05" needs the numbers 2024, 3 and 5 somewhere in the sources.
    """
    known = {_number_value(n) for source in sources for n in numbers(source)}
    invented = [n for n in numbers(answer) if _number_value(n) not in known]
    return list(dict.fromkeys(invented))


def answer_in_sources(reference: str, sources: Sequence[str]) -> float:
    """Share of the reference answer's content tokens found in the sources.

    Near 1: the retrieved text holds the answer; near 0: retrieval missed it, whatever the
    generator does next.
    """
    return _share_found(reference, sources)
