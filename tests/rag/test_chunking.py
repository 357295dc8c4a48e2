"""Chunking: exact offsets, every chunk within budget of a real tokenizer, structure kept."""

from __future__ import annotations

import itertools
import random
import re
import time
from dataclasses import replace

import pytest

from mentor.rag.chunking import (
    TokenCounter,
    chunk_document,
    chunk_sections,
    whitespace_token_count,
)
from mentor.rag.records import Chunk, Document, PageSpan
from mentor.testing import tiny_wordpiece_tokenizer

WORDS = [
    *("the", "model", "reads", "every", "document", "and", "learns", "which", "passages"),
    *("answer", "a", "question", "about", "aspirin", "blood", "pressure", "trials"),
    *("results", "patients", "dose", "risk", "clinical", "evidence", "study"),
]


@pytest.fixture(scope="module")
def count() -> TokenCounter:
    tokenizer = tiny_wordpiece_tokenizer()

    def count_tokens(text: str) -> int:
        return len(tokenizer(text, add_special_tokens=False)["input_ids"])

    return count_tokens


def sentences(n: int, seed: int = 0, words: tuple[int, int] = (5, 15)) -> list[str]:
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        body = " ".join(rng.choice(WORDS) for _ in range(rng.randint(*words)))
        out.append(body[0].upper() + body[1:] + rng.choice(".!?"))
    return out


def make_doc(text: str, pages: tuple[PageSpan, ...] = (), **metadata: str) -> Document:
    return Document("guide.md", "/abs/guide.md", "Guide", text, "hash", pages, dict(metadata))


ARTICLE = "\n\n".join(
    [
        "# Aspirin handbook",
        " ".join(sentences(4, seed=1)),
        "## Dosing",
        " ".join(sentences(30, seed=2)),
        "### Children",
        " ".join(sentences(3, seed=3)),
        "## Risks",
        "- " + "\n- ".join(sentences(6, seed=4)),
        " ".join(sentences(12, seed=5)),
    ]
)


def assert_valid(doc: Document, chunks: list[Chunk], count: TokenCounter, max_tokens: int) -> None:
    """Exact slices, within budget, in order, and every non-space character in some chunk."""
    assert [c.chunk_id for c in chunks] == [f"{doc.doc_id}#{n}" for n in range(len(chunks))]
    covered: set[int] = set()
    for before, chunk in zip([None, *chunks], chunks, strict=False):
        assert doc.text[chunk.start : chunk.end] == chunk.text
        assert chunk.text == chunk.text.strip()
        assert count(chunk.text) <= max_tokens
        if before is not None:
            assert before.start < chunk.start and before.end < chunk.end
        covered.update(range(chunk.start, chunk.end))
    assert all(i in covered for i, ch in enumerate(doc.text) if not ch.isspace())


@pytest.mark.parametrize(("max_tokens", "overlap"), [(384, 64), (128, 32), (48, 16), (20, 0)])
def test_chunks_are_exact_slices_within_the_real_token_budget(
    count: TokenCounter, max_tokens: int, overlap: int
) -> None:
    doc = make_doc(ARTICLE)
    chunks = chunk_document(doc, count, max_tokens=max_tokens, overlap=overlap)
    assert len(chunks) >= (1 if max_tokens == 384 else 3)
    assert_valid(doc, chunks, count, max_tokens)


def test_chunk_fields_come_from_the_document(count: TokenCounter) -> None:
    doc = make_doc(ARTICLE, topic="medicine")
    chunks = chunk_document(doc, count, max_tokens=64, overlap=16)
    for chunk in chunks:
        assert (chunk.doc_id, chunk.source, chunk.title) == ("guide.md", "/abs/guide.md", "Guide")
        assert chunk.metadata == {"topic": "medicine"}
        assert chunk.metadata is not doc.metadata
        assert chunk.page is None


def test_blank_documents_have_no_chunks(count: TokenCounter) -> None:
    assert chunk_document(make_doc(""), count) == []
    assert chunk_document(make_doc(" \n\n\t "), count) == []


def test_heading_paths(count: TokenCounter) -> None:
    chunks = chunk_document(make_doc(ARTICLE), count, max_tokens=64, overlap=0)
    headings = [c.heading for c in chunks]
    assert headings[0] == "Aspirin handbook"
    assert {"Aspirin handbook > Dosing", "Aspirin handbook > Risks"} <= set(headings)
    assert headings == sorted(headings, key=[*dict.fromkeys(headings)].index)  # in order
    children = next(c for c in chunks if "### Children" in c.text)
    assert children.text.startswith("### Children")
    assert children.heading == "Aspirin handbook > Dosing > Children"


def test_whole_sentences_when_they_fit(count: TokenCounter) -> None:
    parts = sentences(40, seed=7, words=(3, 8))
    assert max(map(count, parts)) <= 60
    doc = make_doc(" ".join(parts[:25]) + "\n\n" + " ".join(parts[25:]))
    chunks = chunk_document(doc, count, max_tokens=60, overlap=0)
    assert len(chunks) > 5
    offset = 0
    for sentence in parts:
        start = doc.text.index(sentence, offset)
        offset = start + len(sentence)
        assert any(c.start <= start and offset <= c.end for c in chunks), sentence


def test_paragraph_that_fits_is_not_split(count: TokenCounter) -> None:
    first, second = " ".join(sentences(5, seed=8)), " ".join(sentences(5, seed=9))
    doc = make_doc(f"{first}\n\n{second}")
    budget = max(count(first), count(second)) + 5
    assert count(doc.text) > budget
    chunks = chunk_document(doc, count, max_tokens=budget, overlap=0)
    assert [c.text for c in chunks] == [first, second]


def test_abbreviations_do_not_end_sentences() -> None:
    first = "See e.g. Fig. 2 and J. Smith et al. 2020 for the dose i.e. one pill daily."
    doc = make_doc(f"{first} Next comes another sentence here.")
    chunks = chunk_document(doc, whitespace_token_count, max_tokens=18, overlap=0)
    assert [c.text for c in chunks] == [first, "Next comes another sentence here."]


def test_overlap_is_whole_trailing_sentences_within_budget(count: TokenCounter) -> None:
    parts = sentences(60, seed=11, words=(3, 6))
    doc = make_doc(" ".join(parts))
    chunks = chunk_document(doc, count, max_tokens=80, overlap=24)
    assert_valid(doc, chunks, count, 80)
    starts = {doc.text.index(s) for s in parts}
    for before, after in itertools.pairwise(chunks):
        assert after.start < before.end, "consecutive chunks of one paragraph overlap"
        shared = doc.text[after.start : before.end]
        assert after.start in starts and before.end - len(shared) in starts
        assert 0 < count(shared) <= 24


def test_no_overlap_when_sentences_exceed_it_or_it_is_zero(count: TokenCounter) -> None:
    doc = make_doc(" ".join(sentences(40, seed=12, words=(8, 12))))
    for overlap in (0, 3):
        chunks = chunk_document(doc, count, max_tokens=60, overlap=overlap)
        assert len(chunks) > 2
        assert all(a.end < b.start for a, b in itertools.pairwise(chunks))


def test_no_overlap_into_a_new_section() -> None:
    section = " ".join(sentences(3, seed=13, words=(8, 10)))  # 24 to 30 words
    text = f"# A\n\n{section}\n\n## B\n\n{section}"
    chunks = chunk_document(make_doc(text), whitespace_token_count, max_tokens=40, overlap=10)
    assert [c.text for c in chunks] == [f"# A\n\n{section}", f"## B\n\n{section}"]
    assert [c.heading for c in chunks] == ["A", "A > B"]


def test_top_level_section_starts_a_new_chunk_once_half_full() -> None:
    words = " ".join(["word"] * 30) + "."
    full = f"# A\n\n{words}\n\n## B\n\nTail text."  # 32 tokens before "## B": half of 64
    chunks = chunk_document(make_doc(full), whitespace_token_count, max_tokens=64, overlap=8)
    assert [c.heading for c in chunks] == ["A", "A > B"]
    assert chunks[1].text == "## B\n\nTail text."
    short = f"# A\n\n{' '.join(['word'] * 10)}.\n\n## B\n\nTail text."
    [chunk] = chunk_document(make_doc(short), whitespace_token_count, max_tokens=64, overlap=8)
    assert chunk.text == short


def test_a_heading_never_ends_a_chunk() -> None:
    text = f"# A\n\n{' '.join(['alpha'] * 20)}.\n\n### C\n\n{' '.join(['gamma'] * 45)}."
    chunks = chunk_document(make_doc(text), whitespace_token_count, max_tokens=64, overlap=0)
    assert [c.text.split("\n")[0] for c in chunks] == ["# A", "### C"]
    assert chunks[1].heading == "A > C"


def test_hash_lines_in_code_blocks_are_not_headings() -> None:
    text = "# Title\n\n```bash\n# install it\npip install x\n```\n\nAfter the code."
    chunks = chunk_document(make_doc(text), whitespace_token_count, max_tokens=8, overlap=0)
    assert chunks[-1].text == "After the code."
    assert chunks[-1].heading == "Title"


def test_long_sentence_is_split_between_words(count: TokenCounter) -> None:
    words = [random.Random(3).choice(WORDS) for _ in range(400)]
    doc = make_doc(" ".join(words) + ".")
    chunks = chunk_document(doc, count, max_tokens=50, overlap=0)
    assert len(chunks) > 5
    assert_valid(doc, chunks, count, 50)
    assert [w for c in chunks for w in c.text.split()] == doc.text.split()  # no word cut


def test_long_list_is_split_at_line_breaks_first() -> None:
    items = [f"- item {n} " + " ".join(["x"] * 6) for n in range(30)]
    doc = make_doc("\n".join(items))
    chunks = chunk_document(doc, whitespace_token_count, max_tokens=40, overlap=0)
    assert len(chunks) > 1
    assert all(c.text.startswith("- item") and c.text.endswith("x") for c in chunks)


def test_a_word_longer_than_the_budget_is_cut_by_characters() -> None:
    doc = make_doc("x" * 500)
    chunks = chunk_document(doc, len, max_tokens=64, overlap=0)
    assert len(chunks) > 7
    assert all(len(c.text) <= 64 for c in chunks)
    assert "".join(c.text for c in chunks) == doc.text


def test_pages_come_from_the_page_spans() -> None:
    page1, page2 = " ".join(sentences(20, seed=21)), " ".join(sentences(20, seed=22))
    text = f"{page1}\n\n{page2}"
    pages = (PageSpan(1, 0, len(page1)), PageSpan(2, len(page1) + 2, len(text)))
    chunks = chunk_document(make_doc(text, pages), whitespace_token_count, max_tokens=60, overlap=8)
    for chunk in chunks:
        assert chunk.page == (1 if chunk.start < len(page1) else 2)
    assert {c.page for c in chunks} == {1, 2}


@pytest.mark.parametrize(("max_tokens", "overlap"), [(0, 0), (10, -1)])
def test_bad_budgets_are_refused(max_tokens: int, overlap: int) -> None:
    with pytest.raises(ValueError, match="max_tokens"):
        chunk_document(make_doc("Text."), len, max_tokens=max_tokens, overlap=overlap)


def test_overlap_is_capped_at_half_the_budget() -> None:
    doc = make_doc(" ".join(["Two words."] * 40))
    chunks = chunk_document(doc, whitespace_token_count, max_tokens=20, overlap=64)
    assert len(chunks) > 3
    for before, after in itertools.pairwise(chunks):
        assert whitespace_token_count(doc.text[after.start : before.end]) == 10


def test_whitespace_token_count() -> None:
    assert whitespace_token_count("  two words\n") == 2
    assert whitespace_token_count("") == 0


def test_chunking_a_scifact_sized_corpus_is_fast() -> None:
    rng = random.Random(0)
    docs = []
    for n in range(2000):
        words = [rng.choice(WORDS) for _ in range(250)]
        for i in range(0, 250, rng.randint(10, 20)):
            words[i] = words[i].capitalize()
            if i:
                words[i - 1] += "."
        docs.append(Document(f"d{n}", "s", "t", " ".join(words) + ".", "h"))
    started = time.perf_counter()
    chunks = [c for d in docs for c in chunk_document(d, whitespace_token_count, max_tokens=128)]
    elapsed = time.perf_counter() - started
    assert elapsed < 5, f"{elapsed:.1f}s"
    assert len(chunks) >= 4000
    assert all(re.fullmatch(r"d\d+#\d", c.chunk_id) for c in chunks)


def _long_text(paragraphs: int, seed: int = 0) -> str:
    rng = random.Random(seed)
    words = [
        "board",
        "guest",
        "export",
        "member",
        "plan",
        "price",
        "sync",
        "team",
        "file",
        "comment",
        "archive",
    ]
    blocks = []
    for i in range(paragraphs):
        if i % 40 == 0:
            blocks.append(f"{'#' * (1 + i // 40 % 2)} Part {i // 40}")
        sentences = [" ".join(rng.choices(words, k=rng.randint(4, 15))).capitalize() + "."]
        sentences += [" ".join(rng.choices(words, k=9)).capitalize() + "." for _ in range(3)]
        blocks.append(" ".join(sentences))
    return "\n\n".join(blocks) + "\n"


def test_one_section_chunks_exactly_like_the_whole_document() -> None:
    doc = Document("d", "/d.md", "D", _long_text(60), "h")
    whole = chunk_document(doc, whitespace_token_count, max_tokens=60, overlap=12)
    [streamed] = chunk_sections(doc, [doc.text], whitespace_token_count, max_tokens=60, overlap=12)
    assert streamed == whole


def test_sections_chunk_as_slices_of_the_whole_text_with_headings_carried() -> None:
    text = _long_text(200)
    cuts = [m.end() for m in re.finditer("\n\n", text)][::37]
    sections = [text[a:b] for a, b in itertools.pairwise([0, *cuts, len(text)])]
    assert "".join(sections) == text and len(sections) > 3
    doc = Document("d", "/d.md", "D", "", "h")
    groups = list(chunk_sections(doc, sections, whitespace_token_count, max_tokens=60))
    chunks = [c for group in groups for c in group]
    assert [c.chunk_id for c in chunks] == [f"d#{n}" for n in range(len(chunks))]
    assert all(text[c.start : c.end] == c.text for c in chunks)
    assert all(whitespace_token_count(c.text) <= 60 for c in chunks)
    whole = chunk_document(replace(doc, text=text), whitespace_token_count, max_tokens=60)
    assert {c.heading for c in chunks} == {c.heading for c in whole}
    # Every sentence of the text is in some chunk; chunks differ only next to a seam.
    covered = "".join(text[c.start : c.end] for c in chunks)
    assert all(s in covered for s in re.split(r"(?<=\.) |\n+", text) if s)
    assert len(chunks) <= len(whole) + len(sections)
