"""Read the files `mentor rag index PATH...` is given into :class:`Document` records.

Folders are walked recursively in sorted order, hidden files and folders (``.name``) left out.
Every file yields exactly one item, and nothing raises for one bad file:

* a :class:`Document` for text it could read (``.txt``, ``.md``, ``.html``, ``.pdf``, ``.docx``);
* a :class:`LoadFailure` (``path: why``) for a supported file it could not read - a corrupt PDF,
  binary bytes in a ``.txt``, a document with no text;
* a :class:`Skipped` for a file of a kind it does not read (``.png``, no extension).

A plain-text file larger than ``stream_above`` bytes (when given; ``mentor rag index`` gives
:data:`STREAM_BYTES`) comes as a :class:`TextStream`: checked and hashed in one pass, then read
in sections by the index build, never whole. A link loop (``a.md -> b.md -> a.md``) is a
LoadFailure, and so is a file with a NUL byte anywhere (binary, however clean its first page).

A BEIR ``corpus.jsonl`` is the exception: one Document per good line and one LoadFailure per bad
line (``corpus.jsonl:7: why``). Markdown is kept as it is, and HTML, PDF and DOCX come out as
markdown-like text (``#`` headings, blank lines between paragraphs) so the chunker sees the
structure. Typical use::

    items = list(iter_documents([Path("docs")]))
    summary = summarize(items)
    for problem in [*summary.failed, *summary.skipped]:
        print(problem)                      # docs/broken.pdf: not a valid PDF (...)
"""

from __future__ import annotations

import codecs
import errno
import hashlib
import io
import json
import re
import unicodedata
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import docx
import pypdf
from bs4 import BeautifulSoup
from bs4.element import NavigableString, Tag
from docx.table import Table
from pypdf.errors import PdfReadError

from mentor.data import CorpusRecord, read_records
from mentor.rag.records import Document, LoadFailure, PageSpan

TEXT_SUFFIXES = frozenset({".txt", ".md", ".markdown"})
SUPPORTED_SUFFIXES = TEXT_SUFFIXES | {".html", ".htm", ".pdf", ".docx", ".jsonl"}

STREAM_BYTES = 16 << 20
"""Plain-text files larger than this are read in sections (:class:`TextStream`), not whole."""
_SNIFF_BYTES = 8192
_MAX_CONTROL_SHARE = 0.1  # real text has next to no control characters; random bytes have ~25%
_MAX_TITLE_CHARS = 200
_MD_TITLE = re.compile(r"#[ \t]+(.+?)[ \t#]*$")
_HTML_DROP = frozenset({"script", "style", "nav", "noscript", "template", "svg", "iframe", "head"})
_HTML_HEADINGS = {f"h{n}": n for n in range(1, 7)}
_HTML_BLOCKS = frozenset(
    {
        *("address", "article", "aside", "blockquote", "body", "caption", "dd", "details", "div"),
        *("dl", "dt", "fieldset", "figcaption", "figure", "footer", "form", "header", "hr"),
        *("html", "li", "main", "ol", "p", "section", "summary", "table", "tbody", "td"),
        *("tfoot", "th", "thead", "tr", "ul"),
    }
)


@dataclass(frozen=True)
class Skipped:
    """A file of a kind the loaders do not read; counted apart from failures."""

    path: str
    reason: str

    def __str__(self) -> str:
        return f"{self.path}: {self.reason}"


@dataclass(frozen=True)
class TextStream:
    """A plain-text file larger than :data:`STREAM_BYTES`: read in sections, never whole.

    Checked like any text file (NUL bytes, control characters, encoding, no text) in one pass
    that also hashes it; :meth:`sections` then yields its text a megabyte or so at a time, each
    piece ending at a paragraph break, for :func:`mentor.rag.chunking.chunk_sections`.
    """

    doc_id: str
    source: str
    title: str
    content_hash: str
    path: Path
    encoding: str
    size: int
    """Bytes in the file, for progress."""
    metadata: dict[str, str] = field(default_factory=dict)

    def document(self) -> Document:
        """A Document with the same id, source and hash (and no text) for the chunker."""
        return Document(self.doc_id, self.source, self.title, "", self.content_hash)

    def sections(
        self, size: int = 1 << 20, on_bytes: Callable[[int], None] = lambda _: None
    ) -> Iterator[str]:
        """The text, newlines as ``\\n``, in pieces of about ``size`` characters cut at ``\\n\\n``.

        ``on_bytes`` is told the bytes read so far after each block (for a progress display).
        """
        decoder = codecs.getincrementaldecoder(self.encoding)()
        carry = ""  # decoded, not yet yielded
        done = 0
        with self.path.open("rb") as fh:
            while block := fh.read(size):
                done += len(block)
                on_bytes(done)
                carry += decoder.decode(block)
                # A "\r" at the end may be the first half of "\r\n": it waits for the next block.
                tail = "\r" if carry.endswith("\r") else ""
                body = _newlines(carry[: len(carry) - len(tail)])
                if len(body) >= size:
                    cut = body.rfind("\n\n") + 2
                    if cut < 2 and len(body) >= 4 * size:  # no paragraph break: a line break
                        cut = body.rfind("\n") + 1
                    if cut > 1:
                        yield body[:cut]
                        body = body[cut:]
                carry = body + tail
            carry += decoder.decode(b"", final=True)
        if carry:
            yield _newlines(carry)


LoadItem = Document | TextStream | LoadFailure | Skipped


@dataclass
class LoadSummary:
    """What a walk found, for the summary line of ``mentor rag index``."""

    documents: list[Document] = field(default_factory=list)
    skipped: list[Skipped] = field(default_factory=list)
    failed: list[LoadFailure] = field(default_factory=list)
    streamed: list[TextStream] = field(default_factory=list)

    def __str__(self) -> str:
        streamed = f" ({len(self.streamed)} large, in sections)" if self.streamed else ""
        return (
            f"{len(self.documents) + len(self.streamed)} documents read{streamed}, "
            f"{len(self.skipped)} skipped, {len(self.failed)} failed"
        )


def summarize(items: Iterable[LoadItem]) -> LoadSummary:
    summary = LoadSummary()
    for item in items:
        if isinstance(item, Document):
            summary.documents.append(item)
        elif isinstance(item, TextStream):
            summary.streamed.append(item)
        elif isinstance(item, Skipped):
            summary.skipped.append(item)
        else:
            summary.failed.append(item)
    return summary


class _UnreadableError(Exception):
    """A supported file whose content cannot be used; the message is the reason shown."""


def iter_documents(
    paths: Sequence[Path], *, root: Path | None = None, stream_above: int | None = None
) -> Iterator[LoadItem]:
    """One item per file under ``paths`` (per line for a BEIR corpus), in a stable order.

    With ``stream_above`` (bytes; :data:`STREAM_BYTES` is what ``mentor rag index`` uses), a
    plain-text file larger than that comes as a :class:`TextStream`, checked and hashed but
    not read into memory.

    ``doc_id`` is the file's path relative to ``root`` when given and the file lies under it,
    else relative to the folder argument it was found under; a file given directly is named by
    its file name. A file reached twice (a folder and a file inside it) is read once. Ids are
    not checked for clashes here: the caller decides how to scope them (two folders given may
    both hold a ``README.md``).
    """
    base = root.resolve() if root is not None else None
    seen: set[Path] = set()
    for path in paths:
        if not path.exists():
            why = "symbolic link loop" if _link_loop(path) else "no such file or directory"
            yield LoadFailure(str(path), why)
            continue
        is_dir = path.is_dir()
        top = path.resolve() if is_dir else path.resolve().parent
        for file in _walk(path, set()):
            if isinstance(file, LoadFailure):
                yield file
                continue
            try:
                resolved = file.resolve()
            except (RuntimeError, OSError):  # Python 3.11 raises RuntimeError("Symlink loop")
                yield LoadFailure(str(file), "symbolic link loop (links that point at each other)")
                continue
            if resolved in seen:
                continue
            seen.add(resolved)
            # From the walked path, not the resolved one: a link may point out of the folder.
            relative = file.relative_to(path) if is_dir else Path(path.name)
            if base is not None and (top / relative).is_relative_to(base):
                relative = (top / relative).relative_to(base)
            yield from _load_file(file, relative.as_posix(), stream_above)


def _link_loop(path: Path) -> bool:
    try:
        path.resolve(strict=True)
    except (RuntimeError, OSError) as exc:
        return isinstance(exc, RuntimeError) or getattr(exc, "errno", None) == errno.ELOOP
    return False


def _walk(path: Path, visited: set[Path]) -> Iterator[Path | LoadFailure]:
    """Files under ``path`` depth-first in name order; ``visited`` guards against link loops."""
    if not path.is_dir():
        yield path
        return
    real = path.resolve()
    if real in visited:
        return
    visited.add(real)
    try:
        children = sorted(path.iterdir(), key=lambda p: p.name)
    except OSError as exc:
        yield LoadFailure(str(path), exc.strerror or str(exc))
        return
    for child in children:
        if not child.name.startswith("."):
            yield from _walk(child, visited)


def _load_file(path: Path, doc_id: str, stream_above: int | None = None) -> Iterator[LoadItem]:
    suffix = path.suffix.lower()
    shown = str(path)
    if suffix not in SUPPORTED_SUFFIXES:
        yield Skipped(shown, f"unsupported file type {suffix or '(no extension)'}")
        return
    if not path.is_file():
        yield Skipped(shown, "not a regular file")
        return
    try:
        large = stream_above is not None and path.stat().st_size > stream_above
        if suffix in TEXT_SUFFIXES and large:
            yield _text_stream(path, doc_id, suffix)
            return
        data = path.read_bytes()
        if suffix == ".jsonl":
            yield from _load_jsonl(path, data)
            return
        title, text, pages = _read(suffix, data)
    except _UnreadableError as exc:
        yield LoadFailure(shown, str(exc))
        return
    except OSError as exc:
        yield LoadFailure(shown, exc.strerror or str(exc))
        return
    except Exception as exc:  # parsers raise anything on bad input; one file must not stop all
        yield LoadFailure(shown, f"cannot read: {type(exc).__name__}: {exc}")
        return
    if not text.strip():
        yield LoadFailure(shown, "no text found")
        return
    yield Document(
        doc_id=doc_id,
        source=str(path.resolve()),
        title=title or path.stem,
        text=text,
        content_hash=hashlib.sha256(data).hexdigest(),
        pages=pages,
    )


def _read(suffix: str, data: bytes) -> tuple[str, str, tuple[PageSpan, ...]]:
    """``(title, text, pages)`` of one file; an empty title means "use the file name"."""
    if suffix == ".pdf":
        return _read_pdf(data)
    if suffix == ".docx":
        return _read_docx(data)
    text = _decode(data)
    if suffix in (".html", ".htm"):
        return _read_html(text)
    title = ""
    if suffix != ".txt":
        first = text.lstrip().split("\n", 1)[0]
        match = _MD_TITLE.match(first)
        title = match.group(1) if match else ""
    return title, text, ()


# --- plain text ---------------------------------------------------------------------------------


def _decode(data: bytes) -> str:
    """UTF-8 (BOM or not) else Latin-1, newlines as ``\\n``; binary content is refused."""
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        text = data.decode("utf-16")  # the one common text encoding that is full of NUL bytes
    elif (nul := data.find(b"\0")) >= 0:
        # Anywhere, not just in a sniffed head: NUL bytes are never text, and indexing them
        # after a clean first page would put binary garbage into chunks.
        raise _UnreadableError(f"binary content, not text (NUL byte at offset {nul:,})")
    else:
        try:
            text = data.decode("utf-8-sig")
        except UnicodeDecodeError:
            text = data.decode("latin-1")
    sample = text[:_SNIFF_BYTES]
    controls = sum(1 for c in sample if unicodedata.category(c) == "Cc" and c not in "\t\n\r\f\v")
    if sample and controls / len(sample) > _MAX_CONTROL_SHARE:
        raise _UnreadableError("binary content, not text")
    return _newlines(text)


def _newlines(text: str) -> str:
    return text.replace("\r\n", "\n").replace("\r", "\n")


def _text_stream(path: Path, doc_id: str, suffix: str) -> TextStream:
    """Check and hash a large text file block by block, as :func:`_decode` checks a small one."""
    digest = hashlib.sha256()
    utf8 = codecs.getincrementaldecoder("utf-8")()
    head = b""
    size = 0
    encoding = "utf-8-sig"
    has_text = False
    with path.open("rb") as fh:
        while block := fh.read(1 << 20):
            if not size:
                head = block[:_SNIFF_BYTES]
                if head.startswith((b"\xff\xfe", b"\xfe\xff")):
                    encoding = "utf-16"
            digest.update(block)
            nul = block.find(b"\0")
            if nul >= 0 and encoding != "utf-16":
                raise _UnreadableError(
                    f"binary content, not text (NUL byte at offset {size + nul:,})"
                )
            if encoding == "utf-8-sig":
                try:
                    utf8.decode(block)
                except UnicodeDecodeError:
                    encoding = "latin-1"
            has_text = has_text or bool(block.strip())
            size += len(block)
    if encoding == "utf-8-sig":
        try:
            utf8.decode(b"", final=True)
        except UnicodeDecodeError:
            encoding = "latin-1"
    sample = head.decode(encoding, errors="ignore")
    controls = sum(1 for c in sample if unicodedata.category(c) == "Cc" and c not in "\t\n\r\f\v")
    if sample and controls / len(sample) > _MAX_CONTROL_SHARE:
        raise _UnreadableError("binary content, not text")
    if not has_text:
        raise _UnreadableError("no text found")
    title = ""
    if suffix != ".txt":
        match = _MD_TITLE.match(_newlines(sample).lstrip().split("\n", 1)[0])
        title = match.group(1) if match else ""
    return TextStream(
        doc_id=doc_id,
        source=str(path.resolve()),
        title=title or path.stem,
        content_hash=digest.hexdigest(),
        path=path,
        encoding=encoding,
        size=size,
    )


# --- HTML -------------------------------------------------------------------------------------


def _read_html(markup: str) -> tuple[str, str, tuple[PageSpan, ...]]:
    soup = BeautifulSoup(markup, "html.parser")
    title = soup.title.get_text(" ", strip=True) if soup.title else ""
    h1 = soup.find("h1")
    if not title and h1 is not None:
        title = h1.get_text(" ", strip=True)
    blocks: list[str] = []
    _html_blocks(soup.body or soup, blocks)
    return title, "\n\n".join(blocks), ()


def _html_blocks(node: Tag, out: list[str]) -> None:
    """Append the blocks under ``node``: headings as ``#`` lines, each paragraph or item apart."""
    inline: list[str] = []

    def flush() -> None:
        lines = (" ".join(line.split()) for line in "".join(inline).split("\n"))
        text = "\n".join(line for line in lines if line)
        inline.clear()
        if text:
            out.append(text)

    for child in node.children:
        if isinstance(child, NavigableString):
            if type(child) is NavigableString:  # not a comment, doctype or CDATA
                inline.append(str(child))
            continue
        if not isinstance(child, Tag) or child.name in _HTML_DROP:
            continue
        if child.name == "br":
            inline.append("\n")
        elif child.name in _HTML_HEADINGS:
            flush()
            text = child.get_text(" ", strip=True)
            if text:
                out.append("#" * _HTML_HEADINGS[child.name] + " " + " ".join(text.split()))
        elif child.name == "pre":
            flush()
            text = child.get_text().strip("\n")
            if text.strip():
                out.append(text)
        elif child.name in _HTML_BLOCKS:
            flush()
            inner: list[str] = []
            _html_blocks(child, inner)
            if child.name == "li" and inner:
                inner[0] = "- " + inner[0]
            out.extend(inner)
        else:
            inline.append(child.get_text())
    flush()


# --- PDF --------------------------------------------------------------------------------------


def _read_pdf(data: bytes) -> tuple[str, str, tuple[PageSpan, ...]]:
    """Pages' text joined by blank lines, each page's span kept; empty pages leave no span."""
    if b"%PDF-" not in data[:1024]:
        raise _UnreadableError("not a PDF (no %PDF header)")
    try:
        reader = pypdf.PdfReader(io.BytesIO(data))
    except PdfReadError as exc:
        # pypdf's own error for a truncated file ("stream has ended") hides the likely cause.
        why = str(exc) if b"%%EOF" in data[-1024:] else "EOF marker not found, truncated?"
        raise _UnreadableError(f"not a valid PDF ({why})") from None
    if reader.is_encrypted:
        try:
            opened = reader.decrypt("")  # many PDFs are encrypted with an empty user password
        except Exception as exc:  # pypdf raises several kinds for unsupported encryption
            raise _UnreadableError(f"encrypted PDF that cannot be opened ({exc})") from None
        if not opened:
            raise _UnreadableError("encrypted PDF (needs a password)")
    parts: list[str] = []
    pages: list[PageSpan] = []
    offset = 0
    for number, page in enumerate(reader.pages, start=1):
        text = page.extract_text().replace("\r\n", "\n").strip()
        if not text:
            continue
        if parts:
            offset += 2  # the "\n\n" between pages
        parts.append(text)
        pages.append(PageSpan(number, offset, offset + len(text)))
        offset += len(text)
    joined = "\n\n".join(parts)
    meta_title = reader.metadata.title if reader.metadata else None
    title = str(meta_title).strip() if meta_title else _first_line(joined)
    return title, joined, tuple(pages)


def _first_line(text: str) -> str:
    return text.lstrip().split("\n", 1)[0].strip()[:_MAX_TITLE_CHARS]


# --- DOCX -------------------------------------------------------------------------------------


def _read_docx(data: bytes) -> tuple[str, str, tuple[PageSpan, ...]]:
    """Paragraphs and tables in order; Title and Heading N styles become ``#`` lines."""
    try:
        document = docx.Document(io.BytesIO(data))
    except Exception as exc:  # a bad zip or a missing part: both mean "not a DOCX"
        raise _UnreadableError(f"not a valid DOCX ({exc})") from None
    blocks: list[str] = []
    first_heading = ""
    for item in document.iter_inner_content():
        if isinstance(item, Table):
            rows = (" | ".join(cell.text.strip() for cell in row.cells) for row in item.rows)
            blocks.append("\n".join(row for row in rows if row.strip(" |")))
            continue
        text = item.text.strip()
        if not text:
            continue
        level = _heading_level(item.style.name if item.style is not None else None)
        if level:
            first_heading = first_heading or text
            text = "#" * level + " " + " ".join(text.split())
        blocks.append(text)
    title = (document.core_properties.title or "").strip() or first_heading
    return title, "\n\n".join(block for block in blocks if block), ()


def _heading_level(style: str | None) -> int:
    if style == "Title":
        return 1
    match = re.fullmatch(r"Heading ([1-9])", style or "")
    return min(int(match.group(1)), 6) if match else 0


# --- BEIR corpus.jsonl ------------------------------------------------------------------------


def _load_jsonl(path: Path, data: bytes) -> Iterator[LoadItem]:
    """A BEIR corpus: one Document per good record, one LoadFailure per bad line."""
    shown = str(path)
    if (nul := data.find(b"\0")) >= 0:
        raise _UnreadableError(f"binary content, not text (NUL byte at offset {nul:,})")
    if path.stem == "queries":
        # BEIR keeps queries next to the corpus, with the same keys; they are not documents.
        yield Skipped(shown, "BEIR queries file, not a corpus")
        return
    lines = data.removeprefix(b"\xef\xbb\xbf").split(b"\n")
    first = next((obj for obj in map(_json_object, lines) if obj is not None), None)
    if first is None:
        raise _UnreadableError("no JSON object on any line")
    if not {"_id", "text"} <= first.keys():
        yield Skipped(shown, "JSON Lines file that is not a BEIR corpus (no _id and text)")
        return
    result = read_records(path, "corpus")
    for problem in result.errors:
        where = f"{shown}:{problem.line}" if problem.line else shown
        yield LoadFailure(where, problem.message)
    source = str(path.resolve())
    for record in result.records:
        assert isinstance(record.data, CorpusRecord)  # read_records validated against "corpus"
        canonical = json.dumps(
            _json_object(lines[record.line - 1]),
            sort_keys=True,
            ensure_ascii=False,
            separators=(",", ":"),
        )
        yield Document(
            doc_id=record.data.id,
            source=f"{source}#{record.data.id}",
            title=record.data.title,
            text=record.data.text.replace("\r\n", "\n"),
            content_hash=hashlib.sha256(canonical.encode()).hexdigest(),
            metadata=_scalar_fields(record.data),
        )


def _json_object(line: bytes) -> dict[str, object] | None:
    try:
        obj = json.loads(line)
    except ValueError:  # bad JSON and bad UTF-8 alike
        return None
    return obj if isinstance(obj, dict) else None


def _scalar_fields(record: CorpusRecord) -> dict[str, str]:
    """Extra top-level fields and ``metadata`` entries that are scalars, as strings."""
    fields = {**(record.model_extra or {}), **(record.metadata or {})}
    return {
        key: value if isinstance(value, str) else json.dumps(value)
        for key, value in fields.items()
        if isinstance(value, str | int | float | bool)
    }
