"""Loaders: one item per file, every format's text and title, failures reported and skipped."""

from __future__ import annotations

import hashlib
import io
import json
from pathlib import Path

import docx
import pypdf
import pytest

from mentor.rag.chunking import chunk_document, whitespace_token_count
from mentor.rag.loaders import LoadItem, Skipped, TextStream, iter_documents, summarize
from mentor.rag.records import Document, LoadFailure


def make_pdf(pages: list[str], title: str | None = None) -> bytes:
    """A minimal valid PDF by hand: one Helvetica text line per line of each page's text."""
    kids = " ".join(f"{4 + 2 * i} 0 R" for i in range(len(pages)))
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        f"<< /Type /Pages /Kids [{kids}] /Count {len(pages)} >>".encode(),
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
    ]
    for i, text in enumerate(pages):
        lines = [line.replace("(", r"\(").replace(")", r"\)") for line in text.split("\n")]
        stream = "\n".join(["BT /F1 12 Tf 72 720 Td 14 TL", *(f"({x}) Tj T*" for x in lines), "ET"])
        objects.append(
            b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] "
            b"/Resources << /Font << /F1 3 0 R >> >> /Contents %d 0 R >>" % (5 + 2 * i)
        )
        body = stream.encode("latin-1")
        objects.append(b"<< /Length %d >>\nstream\n%s\nendstream" % (len(body), body))
    info = ""
    if title is not None:
        objects.append(f"<< /Title ({title}) >>".encode())
        info = f" /Info {len(objects)} 0 R"
    out = bytearray(b"%PDF-1.4\n")
    offsets = []
    for number, body in enumerate(objects, start=1):
        offsets.append(len(out))
        out += b"%d 0 obj\n%s\nendobj\n" % (number, body)
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    out += b"".join(b"%010d 00000 n \n" % offset for offset in offsets)
    out += f"trailer\n<< /Size {len(objects) + 1} /Root 1 0 R{info} >>\n".encode()
    out += b"startxref\n%d\n%%%%EOF\n" % xref
    return bytes(out)


def make_docx(path: Path, *, title: str = "") -> Path:
    document = docx.Document()
    document.core_properties.title = title
    document.add_heading("Quarterly report", level=1)
    document.add_paragraph("Revenue grew in every region.")
    document.add_heading("Details", level=2)
    document.add_paragraph("Costs stayed flat.")
    table = document.add_table(rows=1, cols=2)
    table.rows[0].cells[0].text = "north"
    table.rows[0].cells[1].text = "12"
    document.save(str(path))
    return path


HTML = """<!doctype html><html><head><title>Boards help</title>
<style>body { color: red }</style><script>var tracking = "noise";</script></head>
<body><nav><a href="/">Home</a> | <a href="/x">Menu noise</a></nav>
<h1>Archiving boards</h1><p>Archived boards are <b>read-only</b>.</p>
<div>Loose text in a div.<ul><li>First step</li><li>Second step</li></ul></div>
<h2>Restoring</h2><p>Open the menu<br>and choose Restore.</p><!-- a comment --></body></html>
"""

MARKDOWN = "# User guide\n\nIntro.\n\n## Install\n\nRun it.\n\n### Linux\n\nUse apt.\n"

CORPUS = [
    '{"_id": "d1", "title": "Aspirin", "text": "Aspirin thins blood.", "year": 2020}',
    '{"_id": "d2", "text": "No title here.", "metadata": {"source": "pubmed", "tags": ["x"]}}',
    '{"_id": "d3", "title": "Broken"',
    '{"_id": "d4", "title": "Empty", "text": "  "}',
]


def write(path: Path, content: str | bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content, encoding="utf-8")
    return path


@pytest.fixture
def mixed(tmp_path: Path) -> Path:
    """A folder of every kind of file the issue names, good and bad."""
    root = tmp_path / "docs"
    write(root / "notes.txt", "Plain notes.\nSecond line.")
    write(root / "guide.md", MARKDOWN)
    write(root / "page.html", HTML)
    write(root / "paper.pdf", make_pdf(["Page one text.", "Page two text."], title="A Paper"))
    write(root / "broken.pdf", make_pdf(["Lost"])[:150])
    make_docx(root / "report.docx")
    write(root / "blob.txt", b"\x7fELF\x02\x01\x01\x00\x00\x00\x00" * 20)
    write(root / "image.png", b"\x89PNG\r\n\x1a\n")
    write(root / "Makefile", "all:\n")
    write(root / ".hidden.txt", "secret")
    write(root / ".git" / "config.txt", "ignored")
    write(root / "sub" / "corpus.jsonl", "\n".join(CORPUS) + "\n")
    write(root / "sub" / "deeper" / "a.md", "Deep text.")
    return root


def kinds(items: list[LoadItem]) -> list[tuple[str, str]]:
    return [
        (type(item).__name__, item.doc_id if isinstance(item, Document) else item.path)
        for item in items
    ]


def test_mixed_folder_yields_one_item_per_file_in_sorted_order(mixed: Path) -> None:
    items = list(iter_documents([mixed]))
    d = str(mixed)
    assert kinds(items) == [
        ("Skipped", f"{d}/Makefile"),
        ("LoadFailure", f"{d}/blob.txt"),
        ("LoadFailure", f"{d}/broken.pdf"),
        ("Document", "guide.md"),
        ("Skipped", f"{d}/image.png"),
        ("Document", "notes.txt"),
        ("Document", "page.html"),
        ("Document", "paper.pdf"),
        ("Document", "report.docx"),
        ("LoadFailure", f"{d}/sub/corpus.jsonl:3"),
        ("LoadFailure", f"{d}/sub/corpus.jsonl:4"),
        ("Document", "d1"),
        ("Document", "d2"),
        ("Document", "sub/deeper/a.md"),
    ]
    assert list(iter_documents([mixed])) == items  # deterministic


def test_summary_counts_and_reasons_read_as_path_colon_why(mixed: Path) -> None:
    summary = summarize(iter_documents([mixed]))
    assert (len(summary.documents), len(summary.skipped), len(summary.failed)) == (8, 2, 4)
    assert str(summary) == "8 documents read, 2 skipped, 4 failed"
    messages = [str(item) for item in [*summary.skipped, *summary.failed]]
    d = str(mixed)
    assert messages[:2] == [
        f"{d}/Makefile: unsupported file type (no extension)",
        f"{d}/image.png: unsupported file type .png",
    ]
    assert messages[2] == f"{d}/blob.txt: binary content, not text (NUL byte at offset 7)"
    assert messages[3] == f"{d}/broken.pdf: not a valid PDF (EOF marker not found, truncated?)"
    assert messages[4].startswith(f"{d}/sub/corpus.jsonl:3: invalid JSON")
    assert messages[5] == f"{d}/sub/corpus.jsonl:4: field 'text': must not be empty"


def test_titles_and_text_of_each_format(mixed: Path) -> None:
    docs = {d.doc_id: d for d in summarize(iter_documents([mixed])).documents}
    assert {k: d.title for k, d in docs.items()} == {
        "guide.md": "User guide",
        "notes.txt": "notes",
        "page.html": "Boards help",
        "paper.pdf": "A Paper",
        "report.docx": "Quarterly report",
        "d1": "Aspirin",
        "d2": "",
        "sub/deeper/a.md": "a",
    }
    assert docs["guide.md"].text == MARKDOWN
    assert docs["notes.txt"].text == "Plain notes.\nSecond line."
    assert docs["report.docx"].text == (
        "# Quarterly report\n\nRevenue grew in every region.\n\n## Details\n\n"
        "Costs stayed flat.\n\nnorth | 12"
    )


def test_html_drops_scripts_and_nav_and_keeps_structure(tmp_path: Path) -> None:
    [doc] = _documents([write(tmp_path / "page.html", HTML)])
    assert doc.text == (
        "# Archiving boards\n\nArchived boards are read-only.\n\nLoose text in a div.\n\n"
        "- First step\n\n- Second step\n\n## Restoring\n\nOpen the menu\nand choose Restore."
    )


def test_html_title_falls_back_to_first_h1_then_file_name(tmp_path: Path) -> None:
    html = "<body><p>x</p><h1>The <i>heading</i></h1></body>"
    [doc] = _documents([write(tmp_path / "a.html", html)])
    assert doc.title == "The heading"
    [doc] = _documents([write(tmp_path / "plain.htm", "<p>Only a paragraph.</p>")])
    assert (doc.title, doc.text) == ("plain", "Only a paragraph.")


def test_pdf_pages_are_spans_of_the_joined_text(tmp_path: Path) -> None:
    path = write(tmp_path / "two.pdf", make_pdf(["First page.\nStill first.", "Second page."]))
    [doc] = list(iter_documents([path]))
    assert isinstance(doc, Document)
    assert doc.text == "First page.\nStill first.\n\nSecond page."
    assert [(p.page, doc.text[p.start : p.end]) for p in doc.pages] == [
        (1, "First page.\nStill first."),
        (2, "Second page."),
    ]
    assert doc.title == "First page."  # no metadata title: the first line


def test_chunks_of_a_loaded_pdf_carry_their_page(tmp_path: Path) -> None:
    pages = [" ".join(f"Page {p} sentence {n} goes here." for n in range(12)) for p in (1, 2, 3)]
    [doc] = _documents([write(tmp_path / "p.pdf", make_pdf(pages))])
    chunks = chunk_document(doc, whitespace_token_count, max_tokens=30, overlap=0)
    assert all(c.text.startswith(f"Page {c.page} ") for c in chunks)
    assert {c.page for c in chunks} == {1, 2, 3}


def test_pdf_empty_pages_leave_no_span_but_keep_numbers(tmp_path: Path) -> None:
    path = write(tmp_path / "gap.pdf", make_pdf(["One.", "", "Three."]))
    [doc] = list(iter_documents([path]))
    assert isinstance(doc, Document)
    assert [(p.page, doc.text[p.start : p.end]) for p in doc.pages] == [(1, "One."), (3, "Three.")]


def _encrypted_pdf(user_password: str) -> bytes:
    writer = pypdf.PdfWriter()
    writer.add_blank_page(612, 792)
    writer.encrypt(user_password, "owner", algorithm="RC4-128")
    out = io.BytesIO()
    writer.write(out)
    return out.getvalue()


@pytest.mark.parametrize(
    ("name", "content", "reason"),
    [
        ("locked.pdf", _encrypted_pdf("secret"), "encrypted PDF (needs a password)"),
        ("blank.pdf", _encrypted_pdf(""), "no text found"),  # opens, but has no text
        ("fake.pdf", b"just some text", "not a PDF (no %PDF header)"),
        ("cut.pdf", make_pdf(["Page one.", "Page two."])[:-60], "not a valid PDF (EOF marker"),
        ("fake.docx", b"PK not a zip", "not a valid DOCX ("),
        ("nul.txt", b"text\x00with a NUL", "binary content, not text"),
        ("controls.md", bytes(range(1, 32)) * 10, "binary content, not text"),
        ("empty.txt", b"", "no text found"),
        ("spaces.md", b" \n\n\t\n", "no text found"),
        ("empty.html", b"<html><script>x()</script></html>", "no text found"),
        ("nothing.jsonl", b"not json\n", "no JSON object on any line"),
    ],
)
def test_unreadable_files_fail_with_a_short_reason(
    tmp_path: Path, name: str, content: bytes, reason: str
) -> None:
    path = write(tmp_path / name, content)
    [item] = list(iter_documents([path]))
    assert isinstance(item, LoadFailure)
    assert item.path == str(path)
    assert item.reason.startswith(reason)


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        ("café ✓".encode(), "café ✓"),
        (b"\xef\xbb\xbfwith BOM\r\nnext", "with BOM\nnext"),
        ("caf\xe9 latin".encode("latin-1"), "café latin"),
        ("wide text".encode("utf-16"), "wide text"),
    ],
)
def test_text_encodings(tmp_path: Path, content: bytes, expected: str) -> None:
    [doc] = list(iter_documents([write(tmp_path / "t.txt", content)]))
    assert isinstance(doc, Document)
    assert doc.text == expected


def test_docx_title_from_core_properties(tmp_path: Path) -> None:
    [doc] = list(iter_documents([make_docx(tmp_path / "r.docx", title="Q3 numbers")]))
    assert isinstance(doc, Document)
    assert doc.title == "Q3 numbers"


def test_doc_ids_are_relative_to_the_root_with_forward_slashes(mixed: Path) -> None:
    deep = mixed / "sub" / "deeper"
    assert [d.doc_id for d in _documents([deep])] == ["a.md"]
    assert [d.doc_id for d in _documents([deep / "a.md"])] == ["a.md"]
    assert [d.doc_id for d in _documents([deep], root=mixed)] == ["sub/deeper/a.md"]
    assert [d.doc_id for d in _documents([deep / "a.md"], root=mixed.parent)] == [
        "docs/sub/deeper/a.md"
    ]
    # a root the file is not under changes nothing
    assert [d.doc_id for d in _documents([deep], root=mixed / "sub" / "x")] == ["a.md"]


def test_file_source_and_content_hash(mixed: Path) -> None:
    [doc] = _documents([mixed / "notes.txt"])
    assert doc.source == str((mixed / "notes.txt").resolve())
    raw = (mixed / "notes.txt").read_bytes()
    assert doc.content_hash == hashlib.sha256(raw).hexdigest()
    write(mixed / "notes.txt", "Changed.")
    [changed] = _documents([mixed / "notes.txt"])
    assert changed.content_hash != doc.content_hash


def test_corpus_records_become_documents(mixed: Path) -> None:
    path = mixed / "sub" / "corpus.jsonl"
    docs = _documents([path])
    assert [(d.doc_id, d.title, d.text) for d in docs] == [
        ("d1", "Aspirin", "Aspirin thins blood."),
        ("d2", "", "No title here."),
    ]
    assert docs[0].source == f"{path.resolve()}#d1"
    assert docs[0].metadata == {"year": "2020"}
    assert docs[1].metadata == {"source": "pubmed"}  # lists are not scalars
    canonical = json.dumps(json.loads(CORPUS[0]), sort_keys=True, separators=(",", ":"))
    assert docs[0].content_hash == hashlib.sha256(canonical.encode()).hexdigest()


def test_corpus_hash_ignores_key_order_and_spacing(tmp_path: Path) -> None:
    a = write(tmp_path / "a" / "corpus.jsonl", '{"_id": "x", "text": "T", "title": "A"}\n')
    b = write(tmp_path / "b" / "corpus.jsonl", '{"title":"A","text":"T","_id":"x"}\n')
    c = write(tmp_path / "c" / "corpus.jsonl", '{"title":"B","text":"T","_id":"x"}\n')
    [da], [db], [dc] = _documents([a]), _documents([b]), _documents([c])
    assert da.content_hash == db.content_hash != dc.content_hash


def test_jsonl_that_is_not_a_corpus_is_skipped(tmp_path: Path) -> None:
    chat = write(tmp_path / "train.jsonl", '{"messages": []}\n')
    queries = write(tmp_path / "queries.jsonl", '{"_id": "q1", "text": "what?"}\n')
    items = list(iter_documents([chat, queries]))
    assert items == [
        Skipped(str(chat), "JSON Lines file that is not a BEIR corpus (no _id and text)"),
        Skipped(str(queries), "BEIR queries file, not a corpus"),
    ]


def test_missing_path_and_duplicates(mixed: Path) -> None:
    items = list(iter_documents([mixed / "nope.txt", mixed / "sub" / "deeper", mixed / "sub"]))
    assert items[0] == LoadFailure(str(mixed / "nope.txt"), "no such file or directory")
    # a.md comes once, under the first argument that reached it
    assert [i.doc_id for i in items if isinstance(i, Document)] == ["a.md", "d1", "d2"]


def test_ids_are_not_deduplicated_across_arguments(tmp_path: Path) -> None:
    # Scoping ids per root is the indexer's call; the loader reports what each file is named.
    one, two = write(tmp_path / "a" / "x.md", "One."), write(tmp_path / "b" / "x.md", "Two.")
    assert [(d.doc_id, d.text) for d in _documents([one.parent, two.parent])] == [
        ("x.md", "One."),
        ("x.md", "Two."),
    ]


def test_hidden_file_given_directly_is_read(mixed: Path) -> None:
    assert [d.text for d in _documents([mixed / ".hidden.txt"])] == ["secret"]


def test_symlink_loop_is_walked_once(tmp_path: Path) -> None:
    write(tmp_path / "top" / "a.txt", "A.")
    (tmp_path / "top" / "loop").symlink_to(tmp_path / "top")
    assert [d.doc_id for d in _documents([tmp_path / "top"])] == ["a.txt"]


def test_nul_bytes_after_the_first_8_kb_still_mark_a_file_binary(tmp_path: Path) -> None:
    late = write(tmp_path / "docs" / "late.txt", b"plain words. " * 1000 + b"\x00tail")
    jsonl = write(tmp_path / "docs" / "corpus.jsonl", CORPUS[0].encode() + b"\n" * 9000 + b"\x00")
    write(tmp_path / "docs" / "fine.txt", "Still indexed.")
    nul = len(CORPUS[0]) + 9000
    items = list(iter_documents([tmp_path / "docs"]))
    assert [(type(i).__name__, str(i)) for i in items if not isinstance(i, Document)] == [
        ("LoadFailure", f"{jsonl}: binary content, not text (NUL byte at offset {nul:,})"),
        ("LoadFailure", f"{late}: binary content, not text (NUL byte at offset 13,000)"),
    ]
    assert [d.doc_id for d in items if isinstance(d, Document)] == ["fine.txt"]


def test_files_linking_to_each_other_are_reported_and_the_rest_is_read(tmp_path: Path) -> None:
    top = tmp_path / "top"
    write(top / "good.txt", "Good text.")
    (top / "a.txt").symlink_to(top / "b.txt")
    (top / "b.txt").symlink_to(top / "a.txt")
    (top / "self.md").symlink_to(top / "self.md")
    items = list(iter_documents([top]))
    loop = "symbolic link loop (links that point at each other)"
    assert [str(i) for i in items if isinstance(i, LoadFailure)] == [
        f"{top}/a.txt: {loop}",
        f"{top}/b.txt: {loop}",
        f"{top}/self.md: {loop}",
    ]
    assert [d.doc_id for d in items if isinstance(d, Document)] == ["good.txt"]
    [direct] = list(iter_documents([top / "a.txt"]))
    assert str(direct) == f"{top}/a.txt: symbolic link loop"


def _documents(paths: list[Path], root: Path | None = None) -> list[Document]:
    return [i for i in iter_documents(paths, root=root) if isinstance(i, Document)]


def test_a_large_text_file_streams_in_sections_with_the_same_text_and_hash(
    tmp_path: Path,
) -> None:
    paragraph = "Caf\u00e9 line one.\r\nLine two of the paragraph.\r\n\r\n"
    data = ("# Big\r\n\r\n" + paragraph * 400).encode()
    path = write(tmp_path / "big.md", data)
    [whole] = _documents([path])
    [stream] = list(iter_documents([path], stream_above=1000))
    assert isinstance(stream, TextStream)
    assert (stream.doc_id, stream.title, stream.content_hash) == (
        whole.doc_id, whole.title, whole.content_hash,
    )  # fmt: skip
    seen: list[int] = []
    sections = list(stream.sections(size=997, on_bytes=seen.append))  # cuts inside "\r\n" too
    assert "".join(sections) == whole.text and len(sections) > 5
    assert all(s.endswith("\n\n") for s in sections[:-1])
    assert seen[-1] == len(data) == stream.size
    assert list(iter_documents([path], stream_above=len(data))) == [whole]  # at the limit: whole


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        (
            b"words and words. " * 200 + b"\x00",
            "binary content, not text (NUL byte at offset 3,400)",
        ),
        (b" \n" * 2000, "no text found"),
    ],
)
def test_a_large_file_is_checked_like_a_small_one(
    tmp_path: Path, content: bytes, reason: str
) -> None:
    path = write(tmp_path / "big.txt", content)
    [item] = list(iter_documents([path], stream_above=100))
    assert isinstance(item, LoadFailure) and item.reason == reason


def test_a_large_latin1_file_streams_as_latin1(tmp_path: Path) -> None:
    path = write(tmp_path / "big.txt", "caf\xe9 au lait.\n\n".encode("latin-1") * 300)
    [stream] = list(iter_documents([path], stream_above=100))
    assert isinstance(stream, TextStream) and stream.encoding == "latin-1"
    assert "".join(stream.sections(size=256)) == "café au lait.\n\n" * 300


def test_a_corpus_line_with_a_duplicate_key_is_a_failure_naming_it(tmp_path: Path) -> None:
    path = write(
        tmp_path / "corpus.jsonl",
        CORPUS[0] + '\n{"_id": "d9", "text": "first", "text": "second"}\n',
    )
    items = list(iter_documents([path]))
    assert [str(i) for i in items if isinstance(i, LoadFailure)] == [
        f"{path}:2: duplicate key 'text'"
    ]
    assert [d.doc_id for d in items if isinstance(d, Document)] == ["d1"]
