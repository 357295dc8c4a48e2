"""Query expansion with the local generator: multi-query and HyDE.

* multi-query: the generator rewrites the question a few ways; each rewrite is searched (dense
  and BM25) and all rankings are fused with the original's (Raudaschl's RAG-Fusion).
* HyDE (Gao et al., 2022, "Precise Zero-Shot Dense Retrieval without Relevance Labels"): the
  generator writes a passage that would answer the question, and that passage's embedding is
  searched beside the question's.

Both cost a generation per query, and with a small generator they can hurt; ``mentor rag tune``
measures them on the user's own questions and turns one on only when it helps.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Literal, Protocol

from mentor.models.protocols import ChatMessage, Generator, SamplingConfig, complete

ExpansionName = Literal["none", "multi-query", "hyde"]


@dataclass(frozen=True)
class Expansion:
    queries: list[str] = field(default_factory=list)
    """Extra queries searched like the original (dense and BM25)."""
    dense_texts: list[str] = field(default_factory=list)
    """Extra texts searched by embedding only."""


class QueryExpander(Protocol):
    name: str

    def expand(self, query: str) -> Expansion: ...


_NUMBERING = re.compile(r"^\s*(?:[-*•]|\d+[.)]|q\d*[:.)])\s*", re.IGNORECASE)


class MultiQuery:
    """Rewrite the query ``n`` ways."""

    name = "multi-query"

    def __init__(self, generator: Generator, n: int = 3) -> None:
        self.generator = generator
        self.n = n

    def expand(self, query: str) -> Expansion:
        messages: list[ChatMessage] = [
            {"role": "system", "content": "You rewrite search queries."},
            {
                "role": "user",
                "content": (
                    f"Write {self.n} different search queries that look for the same "
                    f"information as this one, one per line, nothing else.\n\nQuery: {query}"
                ),
            },
        ]
        text = complete(self.generator, messages, SamplingConfig(max_new_tokens=96))
        seen = {query.strip().lower()}
        rewrites = []
        for line in text.splitlines():
            candidate = _NUMBERING.sub("", line).strip().strip('"').strip()
            if len(candidate.split()) >= 2 and candidate.lower() not in seen:
                seen.add(candidate.lower())
                rewrites.append(candidate)
        return Expansion(queries=rewrites[: self.n])


class HyDE:
    """Search with the embedding of a passage the generator imagines as the answer."""

    name = "hyde"

    def __init__(self, generator: Generator, max_new_tokens: int = 96) -> None:
        self.generator = generator
        self.max_new_tokens = max_new_tokens

    def expand(self, query: str) -> Expansion:
        messages: list[ChatMessage] = [
            {"role": "system", "content": "You write short factual passages."},
            {
                "role": "user",
                "content": (
                    f"Write a short passage that answers this question.\n\nQuestion: {query}"
                ),
            },
        ]
        passage = complete(
            self.generator, messages, SamplingConfig(max_new_tokens=self.max_new_tokens)
        ).strip()
        return Expansion(dense_texts=[passage] if passage else [])


def make_expander(name: ExpansionName, generator: Generator | None) -> QueryExpander | None:
    if name == "none":
        return None
    if generator is None:
        raise ValueError(f"query expansion {name!r} needs a generator")
    return MultiQuery(generator) if name == "multi-query" else HyDE(generator)
