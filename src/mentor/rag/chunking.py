"""Split a document into chunks that fit the embedder, keeping its structure together.

Counting is done with the embedder's own tokenizer (``SentenceEmbedder.count_tokens``), so no
chunk is cut short by the model. The text is read as markdown-ish blocks - ``#`` heading lines
and blank-line separated paragraphs - and split in this order of preference:

1. whole blocks are packed into a chunk while it stays within ``max_tokens``; a new ``#``/``##``
   section starts a new chunk once the current one is half full, and a heading always stays with
   the text that follows it;
2. a block too long for one chunk is split between sentences;
3. a sentence too long for one chunk is split at line breaks, then between words, as a last resort.

Each chunk after the first in a run of text begins with the last whole sentences of the previous
chunk, up to ``overlap`` tokens (a chunk that starts at a heading has none). Chunk text is always
the exact slice ``doc.text[chunk.start:chunk.end]``. Every piece (sentence, heading, whitespace
between them) is tokenised once and chunk sizes are sums, so a corpus chunks in linear time; the
sum is an upper bound on what the tokenizer counts for the whole chunk::

    chunks = chunk_document(doc, embedder.count_tokens, max_tokens=384, overlap=64)
"""

from __future__ import annotations

import bisect
import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, replace

from mentor.rag.records import Chunk, Document

TokenCounter = Callable[[str], int]

_HEADING = re.compile(r" {0,3}(#{1,6})[ \t]+(.*?)(?:[ \t]+#+)?[ \t]*")
_FENCE = re.compile(r" {0,3}(?:```|~~~)")
# A sentence ends at . ! or ? (and any closing quotes or brackets) before whitespace and a
# capital letter or digit, optionally behind an opening quote or bracket.
_SENTENCE_END = re.compile(r"([.!?][\"'”’)\]]*)(\s+)(?=[\"'“‘(\[]?[A-Z0-9À-ÖØ-Þ])")
_ABBREVIATIONS = frozenset(
    {
        *("al.", "approx.", "ca.", "cf.", "ch.", "co.", "corp.", "dept.", "dr.", "eq.", "eqs."),
        *("etc.", "fig.", "figs.", "inc.", "jr.", "ltd.", "mr.", "mrs.", "ms.", "no.", "nos."),
        *("p.", "pp.", "prof.", "ref.", "refs.", "resp.", "sec.", "sr.", "st.", "viz.", "vol."),
        *("vs.",),
    }
)
_INITIALS = re.compile(r"(?:[A-Za-z]\.)+")  # e.g. i.e. U.S. J.
_LINE_BREAK = re.compile(r"[ \t]*\n\s*")
_WHITESPACE = re.compile(r"\s+")


def whitespace_token_count(text: str) -> int:
    """Words as tokens: a tokenizer-free counter for tests and fallbacks."""
    return len(text.split())


@dataclass(frozen=True)
class _Block:
    start: int
    end: int
    heading: str
    """The heading path in force (a heading block's own title included)."""
    level: int
    """1-6 for a heading line, 0 for a paragraph."""


@dataclass(frozen=True)
class _Piece:
    """The unit chunks are made of: a sentence, a heading, or a part of an over-long sentence."""

    start: int
    end: int
    tokens: int
    gap: int
    """Tokens of the whitespace between the previous piece and this one."""
    block: int


def chunk_document(
    doc: Document, count_tokens: TokenCounter, *, max_tokens: int = 384, overlap: int = 64
) -> list[Chunk]:
    """Chunks of ``doc`` of at most ``max_tokens`` tokens each; ``[]`` for a blank document.

    ``overlap`` is capped at half of ``max_tokens``: more would mostly embed the previous chunk
    again, and a budget cut to fit a small embedder should not fail on the default overlap.
    """
    if max_tokens < 1 or overlap < 0:
        raise ValueError(f"need max_tokens >= 1 and overlap >= 0, got {max_tokens} and {overlap}")
    return _chunks(doc, count_tokens, max_tokens, min(overlap, max_tokens // 2), [], 0, 0)


def chunk_sections(
    doc: Document,
    sections: Iterable[str],
    count_tokens: TokenCounter,
    *,
    max_tokens: int = 384,
    overlap: int = 64,
) -> Iterator[list[Chunk]]:
    """Chunk a document too large to hold, one section of its text at a time.

    ``sections`` are consecutive pieces of the text, each cut at a paragraph break (a blank
    line); ``doc.text`` is ignored. Yields each section's chunks, numbered and offset as if the
    text were whole, with the heading path carried from section to section. Chunks never span two
    sections, and the first chunk of a section has no overlap: the only difference from
    :func:`chunk_document` on the whole text, at each seam (about one per megabyte).
    """
    if max_tokens < 1 or overlap < 0:
        raise ValueError(f"need max_tokens >= 1 and overlap >= 0, got {max_tokens} and {overlap}")
    overlap = min(overlap, max_tokens // 2)
    path: list[tuple[int, str]] = []
    offset = numbered = 0
    for text in sections:
        part = replace(doc, text=text, pages=())
        chunks = _chunks(part, count_tokens, max_tokens, overlap, path, numbered, offset)
        offset += len(text)
        numbered += len(chunks)
        if chunks:
            yield chunks


def _chunks(
    doc: Document,
    count_tokens: TokenCounter,
    max_tokens: int,
    overlap: int,
    path: list[tuple[int, str]],
    first_number: int,
    offset: int,
) -> list[Chunk]:
    """Chunks of ``doc.text`` numbered from ``first_number``, offsets moved by ``offset``."""
    blocks = _blocks(doc.text, path)
    pieces = _pieces(doc.text, blocks, count_tokens, max_tokens)
    spans = _pack(pieces, blocks, max_tokens, overlap)
    page_starts = [span.start for span in doc.pages]
    chunks = []
    for n, (first, new, end) in enumerate(spans, start=first_number):
        start, stop = pieces[first].start, pieces[end - 1].end
        page_index = bisect.bisect_right(page_starts, start) - 1
        chunks.append(
            Chunk(
                chunk_id=f"{doc.doc_id}#{n}",
                doc_id=doc.doc_id,
                source=doc.source,
                title=doc.title,
                text=doc.text[start:stop],
                start=offset + start,
                end=offset + stop,
                page=doc.pages[page_index].page if page_index >= 0 else None,
                heading=blocks[pieces[new].block].heading,
                metadata=dict(doc.metadata),
            )
        )
    return chunks


def _blocks(text: str, path: list[tuple[int, str]]) -> list[_Block]:
    """Heading lines and blank-line separated paragraphs, each with its heading path.

    ``path`` is the ``(level, title)`` of the headings in force before ``text``; it is updated
    in place, so the next section of a long text starts under the right headings.
    """
    blocks: list[_Block] = []
    para: list[int] = []  # [start, end] of the paragraph being read
    in_fence = False

    def close_paragraph() -> None:
        if para:
            blocks.append(_Block(para[0], para[1], " > ".join(t for _, t in path), 0))
            para.clear()

    offset = 0
    for line in text.split("\n"):
        start, offset = offset, offset + len(line) + 1
        stripped = line.strip()
        if _FENCE.match(line):
            in_fence = not in_fence  # a "# comment" inside a code block is not a heading
        heading = None if in_fence else _HEADING.fullmatch(line.rstrip())
        if not stripped or heading:
            close_paragraph()
        if heading:
            level, title = len(heading.group(1)), " ".join(heading.group(2).split())
            while path and path[-1][0] >= level:
                path.pop()
            path.append((level, title))
            lead = len(line) - len(line.lstrip())
            end = start + len(line.rstrip())
            blocks.append(_Block(start + lead, end, " > ".join(t for _, t in path), level))
        elif stripped:
            end = start + len(line.rstrip())
            if para:
                para[1] = end
            else:
                para.extend([start + len(line) - len(line.lstrip()), end])
    close_paragraph()
    return blocks


def _pieces(
    text: str, blocks: list[_Block], count_tokens: TokenCounter, max_tokens: int
) -> list[_Piece]:
    """Each block's sentences (a heading is one), over-long ones cut to fit, with token counts."""
    gap_tokens: dict[str, int] = {}  # only a handful of distinct gaps: " ", "\n", "\n\n", ...
    pieces: list[_Piece] = []
    for index, block in enumerate(blocks):
        if block.level:
            sentences = [(block.start, block.end)]
        else:
            sentences = _sentences(text, block.start, block.end)
        for start, end in sentences:
            tokens = count_tokens(text[start:end])
            for s, e, t in _split_long(text, start, end, tokens, count_tokens, max_tokens):
                gap = text[pieces[-1].end : s] if pieces else ""
                if gap not in gap_tokens:
                    gap_tokens[gap] = count_tokens(gap)
                pieces.append(_Piece(s, e, t, gap_tokens[gap], index))
    return pieces


def _sentences(text: str, start: int, end: int) -> list[tuple[int, int]]:
    spans = []
    begin = start
    for match in _SENTENCE_END.finditer(text, start, end):
        stop = match.start()
        word_start = max(begin, text.rfind(" ", begin, stop) + 1, text.rfind("\n", begin, stop) + 1)
        word = text[word_start : stop + 1].lstrip("\"'“‘([")
        if text[stop] == "." and (word.lower() in _ABBREVIATIONS or _INITIALS.fullmatch(word)):
            continue
        spans.append((begin, match.end(1)))
        begin = match.end(2)
    spans.append((begin, end))
    return spans


def _split_long(
    text: str, start: int, end: int, tokens: int, count_tokens: TokenCounter, max_tokens: int
) -> list[tuple[int, int, int]]:
    """``(start, end, tokens)`` parts of a span, halved at a line break or space until each fits.

    Halving tokenises each character about log2(tokens / max_tokens) times; the parts are
    packed back together by :func:`_pack`.
    """
    if tokens <= max_tokens or end - start < 2:
        return [(start, end, tokens)]
    left_end, right_start = _middle_break(text, start, end)
    left = text[start:left_end]
    right = text[right_start:end]
    return [
        *_split_long(text, start, left_end, count_tokens(left), count_tokens, max_tokens),
        *_split_long(text, right_start, end, count_tokens(right), count_tokens, max_tokens),
    ]


def _middle_break(text: str, start: int, end: int) -> tuple[int, int]:
    """The line break nearest the middle of the span, else the space nearest, else the middle."""
    middle = (start + end) // 2
    for pattern in (_LINE_BREAK, _WHITESPACE):
        breaks = [
            m for m in pattern.finditer(text, start, end) if start < m.start() < m.end() < end
        ]
        if breaks:
            best = min(breaks, key=lambda m: abs(m.start() - middle))
            return best.start(), best.end()
    return middle, middle


def _pack(
    pieces: list[_Piece], blocks: list[_Block], max_tokens: int, overlap: int
) -> list[tuple[int, int, int]]:
    """``(first, new, end)`` piece ranges of the chunks: overlap is ``first:new``."""
    # total[k]: tokens of pieces[:k] with their gaps, so cost(a, b) is the chunk pieces[a:b].
    total = [0]
    block_end: dict[int, int] = {}
    for k, piece in enumerate(pieces):
        total.append(total[-1] + piece.gap + piece.tokens)
        block_end[piece.block] = k + 1

    def cost(a: int, b: int) -> int:
        return total[b] - total[a] - pieces[a].gap

    def block_start(k: int) -> bool:
        return k == 0 or pieces[k - 1].block != pieces[k].block

    def whole_block(k: int) -> int:
        """End of the block starting at ``k`` if it fits a chunk alone, else 0."""
        end = block_end[pieces[k].block]
        return end if block_start(k) and cost(k, end) <= max_tokens else 0

    spans: list[tuple[int, int, int]] = []
    new = 0
    while new < len(pieces):
        first = new
        if spans and not blocks[pieces[new].block].level:
            # Overlap: the last whole sentences of the previous chunk's own text, no headings.
            low = spans[-1][1]
            while (
                first > low
                and not blocks[pieces[first - 1].block].level
                and cost(first - 1, new) <= overlap
            ):
                first -= 1
        end = whole_block(new) or new + 1
        while first < new and cost(first, end) > max_tokens:
            first += 1  # the first block (or sentence) is worth more whole than the overlap
        while end < len(pieces):
            block_fit = whole_block(end)
            stop = block_fit or end + 1
            if cost(first, stop) > max_tokens:
                break
            top_section = bool(block_fit) and 0 < blocks[pieces[end].block].level <= 2
            if top_section and 2 * cost(first, end) >= max_tokens:
                break
            end = stop
        while end - 1 > new and blocks[pieces[end - 1].block].level:
            end -= 1  # a heading goes with the text under it, into the next chunk
        spans.append((first, new, end))
        new = end
    return spans
