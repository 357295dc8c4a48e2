"""The records the retrieval pipeline passes along: documents, chunks, hits and load failures."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class PageSpan:
    """Where one page of a paginated source (PDF) lies in the document's text."""

    page: int
    """1-based page number."""
    start: int
    end: int


@dataclass(frozen=True)
class Document:
    """One source document as a loader read it."""

    doc_id: str
    """Stable id: the file's path relative to the indexed root, or a corpus ``_id``."""
    source: str
    """Where it came from: the file's absolute path (for a corpus file, ``path#_id``)."""
    title: str
    text: str
    content_hash: str
    """sha256 of the source bytes (of the record, for corpus files): drives ``--sync``."""
    pages: tuple[PageSpan, ...] = ()
    metadata: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class LoadFailure:
    """A file that could not be read; the rest of the build goes on."""

    path: str
    reason: str

    def __str__(self) -> str:
        return f"{self.path}: {self.reason}"


@dataclass(frozen=True)
class Chunk:
    """A retrievable piece of a document."""

    chunk_id: str
    """``<doc_id>#<n>``, n counting from 0 in document order."""
    doc_id: str
    source: str
    title: str
    text: str
    start: int
    """Character offset of the chunk in the document's text (end is exclusive)."""
    end: int
    page: int | None = None
    """Page where the chunk starts, for paginated sources."""
    heading: str = ""
    """The section headings above the chunk, joined with " > "."""
    metadata: dict[str, str] = field(default_factory=dict)


@dataclass
class Hit:
    """A retrieved chunk with its final score and the evidence of each stage."""

    chunk: Chunk
    score: float
    rank: int
    """1-based rank in the final list."""
    stages: dict[str, float] = field(default_factory=dict)
    """Per-stage scores, e.g. {"dense": 0.71, "bm25": 12.3, "rerank": 4.2}."""
