"""A persistent RAG index: build it from files, keep it in sync, open it for search.

Layout of an index folder::

    index.json     the manifest; written last and atomically: the commit point
    lance/         LanceDB table of chunks, vectors and metadata (versioned); the manifest's
                   ``lance_dir`` names it (``lance-<tag>/`` once the embedder was fine-tuned)
    bm25-<v>/      the BM25 index and the chunk ids of its rows, for table version v
    embedder-<tag>/  only where ``mentor rag tune`` kept a fine-tuned embedder (a relative
                   ``IndexConfig.embedder``, so the folder can be moved)

A build appends whole documents to the table in groups, then rebuilds BM25, then writes the
manifest. Readers open the table at the manifest's version, so a build killed at any moment
leaves the previous index fully usable; run again, it finds the documents already stored with
the right content hash and goes on from there.

Run: ``mentor rag index ./docs --index idx`` (``--sync`` to follow edits and deletions).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

from mentor.models.protocols import Embedder
from mentor.rag.bm25 import Analyzer, BM25Index
from mentor.rag.chunking import chunk_document, chunk_sections
from mentor.rag.loaders import STREAM_BYTES, Skipped, TextStream, iter_documents
from mentor.rag.records import Chunk, Document, LoadFailure
from mentor.rag.store import ANN_THRESHOLD, DocState, LanceStore
from mentor.utils.fs import atomic_write_text, remove_tree

MANIFEST = "index.json"
HEADING_ROOM = 16
"""Tokens reserved for the section headings embedded in front of a chunk."""
FORMAT = 1
BM25_BATCH_ROWS = 4096
"""Rows read per batch when BM25 is rebuilt: memory holds one batch of texts."""
Progress = Callable[[str, int, int], None]


def _quiet(what: str, done: int, total: int) -> None:
    """Default progress callback: silent."""


@dataclass
class IndexConfig:
    """How an index is built; stored in its manifest so every later run builds the same way."""

    embedder: str = "minilm-l6"
    """Registry name or folder of the sentence embedder; a relative folder that exists inside
    the index (a fine-tuned one, :mod:`mentor.rag.embed_tune`) is read from there."""
    chunk_tokens: int = 384
    """Target chunk size in the embedder's tokens (capped at what the embedder reads)."""
    chunk_overlap: int = 64
    """Tokens of trailing sentences repeated at the start of the next chunk."""
    bm25_k1: float = 1.5
    """BM25 term-frequency saturation (Lucene's default; ``mentor rag tune`` may set it)."""
    bm25_b: float = 0.75
    """BM25 length normalisation (Lucene's default; ``mentor rag tune`` may set it)."""
    bm25_language: str | None = "english"
    """Language of BM25's stop words and stemmer; None: neither (see mentor.rag.lexical)."""
    bm25_stem: bool = True
    """Stem BM25 terms with the language's Snowball stemmer."""
    bm25_stopwords: bool = True
    """Drop the language's stop words from BM25 terms."""
    bm25_heading_weight: int = 1
    """Times the title > heading line is repeated in a chunk's BM25 text (0: left out), a
    cheap stand-in for a weighted title field (BM25F)."""

    @property
    def analyzer(self) -> Analyzer:
        return Analyzer(self.bm25_language, self.bm25_stem, self.bm25_stopwords)


@dataclass
class Manifest:
    config: IndexConfig
    dim: int
    lance_version: int
    bm25_dir: str
    documents: int
    chunks: int
    updated: str
    format: int = FORMAT
    lance_dir: str = "lance"
    """The folder of the LanceDB table: a new one replaces the table whole (a re-embedding, a
    re-chunked index swapped in) by one manifest write, so a reader sees the old table or the
    new, never half of each."""
    sources: list[str] = field(default_factory=list)
    """The files and folders indexed (resolved), so the index can be rebuilt at another chunk
    size from the same documents."""

    @classmethod
    def read(cls, folder: Path) -> Manifest:
        data = json.loads((folder / MANIFEST).read_text())
        if data.get("format") != FORMAT:
            raise ValueError(
                f"{folder / MANIFEST}: index format {data.get('format')}, "
                f"this mentor reads {FORMAT}; rebuild the index"
            )
        data["config"] = IndexConfig(**data["config"])
        return cls(**data)

    def write(self, folder: Path) -> None:
        atomic_write_text(folder / MANIFEST, json.dumps(asdict(self), indent=2))


def embedder_location(folder: Path, config: IndexConfig) -> str:
    """What to load as the index's embedder: a relative folder inside the index (where the
    embedder tuner keeps a fine-tuned one) as a path there, else the name as configured."""
    name = config.embedder
    local = folder / name
    if not Path(name).is_absolute() and name not in ("", ".") and local.is_dir():
        return str(local)
    return name


def open_store(folder: Path, manifest: Manifest | None = None) -> LanceStore:
    """The index's LanceDB table at the version its manifest names: what a reader searches."""
    manifest = manifest or Manifest.read(folder)
    store = LanceStore(folder / manifest.lance_dir, manifest.dim)
    store.checkout(manifest.lance_version)
    return store


@dataclass
class BuildReport:
    """What an index run did."""

    indexed: list[str] = field(default_factory=list)
    """Documents embedded in this run (new or changed)."""
    unchanged: int = 0
    removed: list[str] = field(default_factory=list)
    skipped: list[Skipped] = field(default_factory=list)
    failed: list[LoadFailure] = field(default_factory=list)
    chunks_added: int = 0
    embed_seconds: float = 0.0
    """Time spent inside the embedder alone."""
    seconds: float = 0.0
    """Wall time of the whole run."""
    documents: int = 0
    chunks: int = 0


def chunk_limit(embedder: Embedder, wanted: int) -> int:
    """The chunk size to use: what was asked, within what the embedder reads (less 2 specials)."""
    reads = getattr(embedder, "max_tokens", None)
    return min(wanted, int(reads) - 2) if isinstance(reads, int) and reads > 2 else wanted


def _token_counter(embedder: Embedder) -> Callable[[str], int]:
    counter = getattr(embedder, "count_tokens", None)
    if callable(counter):
        return counter  # type: ignore[no-any-return]
    from mentor.rag.chunking import whitespace_token_count

    return whitespace_token_count


def embed_input(chunk: Chunk) -> str:
    """What is embedded and BM25-indexed for a chunk: title and headings give it context."""
    return _with_heading(chunk.title, chunk.heading, chunk.text)


def _with_heading(title: str, heading: str, text: str, times: int = 1) -> str:
    head = " > ".join(part for part in (title, heading) if part)
    return f"{head}\n" * times + text if head else text


def bm25_texts(
    store: LanceStore, heading_weight: int, chunk_ids: list[str], doc_ids: list[str]
) -> Iterator[list[str]]:
    """The BM25 texts of the table's rows, a batch at a time (the title > heading line repeated
    ``heading_weight`` times in front); each row's chunk and document id are appended to
    ``chunk_ids`` and ``doc_ids`` as it is read."""
    columns = ("chunk_id", "doc_id", "title", "heading", "text")
    for batch in store.column_batches(columns, BM25_BATCH_ROWS):
        chunk_ids.extend(batch["chunk_id"])
        doc_ids.extend(batch["doc_id"])
        parts = zip(batch["title"], batch["heading"], batch["text"], strict=True)
        yield [_with_heading(*row, times=heading_weight) for row in parts]


def write_bm25(folder: Path, store: LanceStore, config: IndexConfig, name: str) -> tuple[int, int]:
    """Build the BM25 of the table's rows as ``config`` says into ``folder/name``: written in a
    temporary folder, then renamed. (documents, chunks) indexed."""
    tmp = folder / f".{name}.tmp"
    remove_tree(tmp)
    tmp.mkdir()
    # Text columns only, a batch at a time: a large table never sits in memory as chunks.
    chunk_ids: list[str] = []
    doc_ids: list[str] = []
    texts = bm25_texts(store, config.bm25_heading_weight, chunk_ids, doc_ids)
    BM25Index.build_batches(
        texts, k1=config.bm25_k1, b=config.bm25_b, analyzer=config.analyzer
    ).save(tmp)
    (tmp / "ids.json").write_text(json.dumps(chunk_ids))
    remove_tree(folder / name)
    tmp.rename(folder / name)
    return len(set(doc_ids)), len(chunk_ids)


Source = Document | TextStream
"""A document to index: read whole, or (a large text file) read in sections."""
_PARTIAL = "partial:"
"""Prefix of the hash a streamed document's rows carry until its last section is stored."""


def _scoped_id(doc: Source, roots: Sequence[Path]) -> Source:
    """Prefix file ids with their root folder's name so two indexed folders never collide."""
    if "#" in doc.source:  # corpus records keep their own ids (qrels refer to them)
        return doc
    for root in roots:
        if root.is_dir() and Path(doc.source).is_relative_to(root.resolve()):
            return replace(doc, doc_id=f"{root.resolve().name}/{doc.doc_id}")
    return doc


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def build_index(
    folder: Path,
    paths: Sequence[Path],
    embedder: Embedder,
    *,
    config: IndexConfig | None = None,
    sync: bool = False,
    group_chunks: int = 512,
    progress: Progress = _quiet,
    on_problem: Callable[[str], None] = lambda _: None,
    stream_above: int = STREAM_BYTES,
    section_chars: int = 1 << 20,
) -> BuildReport:
    """Add the documents under ``paths`` to the index at ``folder`` (created if missing).

    Unchanged documents (same content hash) are not embedded again; changed ones are replaced;
    with ``sync`` the documents of ``paths`` that no longer exist are removed too. A text file
    larger than ``stream_above`` bytes is read, chunked, embedded and stored ``section_chars``
    characters at a time (progress in MB read), so its size does not set the memory it takes.
    """
    started = time.perf_counter()
    folder.mkdir(parents=True, exist_ok=True)
    lance_dir = "lance"
    if (folder / MANIFEST).exists():
        existing = Manifest.read(folder)
        config, lance_dir = existing.config, existing.lance_dir
        _check_embedder(folder, config, embedder)
    config = config or IndexConfig()
    dim = embedder.dim
    store = LanceStore(folder / lance_dir, dim)
    store.latest()  # writers continue from the newest version, including an interrupted build
    report = BuildReport()

    documents: list[Source] = []
    seen: dict[str, str] = {}
    for item in iter_documents(paths, stream_above=stream_above):
        if isinstance(item, Skipped):
            report.skipped.append(item)
        elif isinstance(item, LoadFailure):
            report.failed.append(item)
            on_problem(str(item))
        else:
            doc = _scoped_id(item, paths)
            if doc.doc_id in seen:
                failure = LoadFailure(doc.source, f"same document id as {seen[doc.doc_id]}")
                report.failed.append(failure)
                on_problem(str(failure))
                continue
            seen[doc.doc_id] = doc.source
            documents.append(doc)

    present = store.documents()
    todo: list[Source] = []
    stale: list[Source] = []
    for doc in documents:
        hashes = present[doc.doc_id].hashes if doc.doc_id in present else set()
        if hashes == {doc.content_hash}:
            report.unchanged += 1
        elif doc.content_hash in hashes:
            stale.append(doc)  # a killed update left old rows beside the new ones
        else:
            todo.append(doc)
    for doc in stale:
        store.delete_where(f"doc_id = {_q(doc.doc_id)} AND doc_hash != {_q(doc.content_hash)}")
        report.unchanged += 1

    limit = chunk_limit(embedder, config.chunk_tokens)
    count = _token_counter(embedder)
    total = len(todo)
    progress("embedding", 0, total)
    pending: list[tuple[Document, list[Chunk]]] = []
    pending_chunks = 0
    done = 0

    def flush() -> None:
        nonlocal pending, pending_chunks, done
        chunks = [c for _, cs in pending for c in cs]
        if chunks:
            t0 = time.perf_counter()
            vectors = embedder.embed([embed_input(c) for c in chunks], batch_size=64)
            report.embed_seconds += time.perf_counter() - t0
            store.add(chunks, vectors, {d.doc_id: d.content_hash for d, _ in pending})
            report.chunks_added += len(chunks)
        replaced = [d for d, _ in pending if d.doc_id in present]
        for doc in replaced:  # old rows go only after the new ones are stored
            store.delete_where(f"doc_id = {_q(doc.doc_id)} AND doc_hash != {_q(doc.content_hash)}")
        report.indexed.extend(d.doc_id for d, _ in pending)
        done += len(pending)
        progress("embedding", done, total)
        pending, pending_chunks = [], 0

    def stream(doc: TextStream, budget: int) -> None:
        """Embed and store a large file section by section; memory stays at one group."""
        partial = _PARTIAL + doc.content_hash
        # rows of a build killed half way through this file: they were never complete
        store.delete_where(f"doc_id = {_q(doc.doc_id)} AND doc_hash = {_q(partial)}")
        megabytes = max(1, doc.size >> 20)
        what = f"reading {Path(doc.source).name} (MB)"
        sections = doc.sections(section_chars, lambda n: progress(what, n >> 20, megabytes))
        added = 0
        for chunks in chunk_sections(
            doc.document(), sections, count, max_tokens=budget, overlap=config.chunk_overlap
        ):
            t0 = time.perf_counter()
            vectors = embedder.embed([embed_input(c) for c in chunks], batch_size=64)
            report.embed_seconds += time.perf_counter() - t0
            store.add(chunks, vectors, {doc.doc_id: partial})
            added += len(chunks)
        if not added:
            report.failed.append(LoadFailure(doc.source, "no text to index"))
            return
        # Complete only now: the rows take the file's hash, then the old version's rows go.
        store.set_hash(doc.doc_id, partial, doc.content_hash)
        store.delete_where(f"doc_id = {_q(doc.doc_id)} AND doc_hash != {_q(doc.content_hash)}")
        report.chunks_added += added
        report.indexed.append(doc.doc_id)

    for doc in todo:
        # The title and headings are embedded in front of each chunk: leave room for them.
        budget = max(32, limit - count(doc.title) - HEADING_ROOM)
        if isinstance(doc, TextStream):
            flush()
            stream(doc, budget)
            done += 1
            progress("embedding", done, total)
            continue
        chunks = chunk_document(doc, count, max_tokens=budget, overlap=config.chunk_overlap)
        if not chunks:
            report.failed.append(LoadFailure(doc.source, "no text to index"))
            continue
        pending.append((doc, chunks))
        pending_chunks += len(chunks)
        if pending_chunks >= group_chunks:
            flush()
    flush()

    if sync:
        report.removed = _gone(present, seen, documents, paths)
        if report.removed:
            store.delete_docs(report.removed)

    progress("building BM25", 0, 1)
    commit(folder, store, config, sources=[str(p.resolve()) for p in paths])
    progress("building BM25", 1, 1)
    manifest = Manifest.read(folder)
    report.documents, report.chunks = manifest.documents, manifest.chunks
    report.seconds = time.perf_counter() - started
    return report


def _check_embedder(folder: Path, config: IndexConfig, embedder: Embedder) -> None:
    """An index with a fine-tuned embedder inside it takes new documents only from that one:
    vectors of another model would not be comparable with the stored ones."""
    local = embedder_location(folder, config)
    given = getattr(embedder, "folder", None)
    if (
        local != config.embedder
        and isinstance(given, Path)
        and given.resolve() != Path(local).resolve()
    ):
        raise ValueError(
            f"{folder}: the index embeds with its fine-tuned embedder {local}; "
            f"{given} was given (load the index's own, as `mentor rag index` does)"
        )


def _gone(
    present: dict[str, DocState],
    seen: dict[str, str],
    documents: list[Source],
    paths: Sequence[Path],
) -> list[str]:
    """Stored documents under ``paths`` whose file was deleted (or record dropped from a corpus).

    A file that still exists but failed to load this time keeps its chunks: nothing is lost.
    """
    roots = [p.resolve() for p in paths]
    loaded_files = {d.source.split("#")[0] for d in documents}
    gone = []
    for doc_id, state in present.items():
        file = Path(state.source.split("#")[0])
        if doc_id in seen or not any(file == r or file.is_relative_to(r) for r in roots):
            continue
        if not file.exists() or ("#" in state.source and str(file) in loaded_files):
            gone.append(doc_id)
    return gone


def _q(value: str) -> str:
    from mentor.rag.store import sql_quote

    return sql_quote(value)


def commit(
    folder: Path, store: LanceStore, config: IndexConfig, sources: Sequence[str] = ()
) -> None:
    """Rebuild BM25 for the table's newest version, then point the manifest at both.

    ``sources`` (the paths just indexed) join those the manifest already names."""
    store.latest()
    if len(store) >= ANN_THRESHOLD:
        store.create_ann_index()
    version = store.version
    bm25_dir = f"bm25-{version}"
    old = Manifest.read(folder) if (folder / MANIFEST).exists() else None
    if old is not None and old.bm25_dir == bm25_dir:
        bm25_dir = f"{bm25_dir}-{int(time.time() * 1000)}"  # never overwrite what readers use
    documents, chunks = write_bm25(folder, store, config, bm25_dir)
    Manifest(
        config=config,
        dim=store.dim,
        lance_version=version,
        bm25_dir=bm25_dir,
        documents=documents,
        chunks=chunks,
        updated=_now(),
        lance_dir=store.path.name,
        sources=list(dict.fromkeys([*(old.sources if old is not None else []), *sources])),
    ).write(folder)
    # Only now may what the old manifest pointed at go.
    if old is not None and old.bm25_dir != bm25_dir:
        remove_tree(folder / old.bm25_dir)
    store.compact(keep=version)


def remove_unnamed(folder: Path) -> list[str]:
    """Remove the table, BM25 and embedder folders of the index at ``folder`` that its manifest
    does not name: what a swap killed before its manifest write (a re-chunked or re-embedded
    index, a rebuilt BM25) left behind. Returns the names removed."""
    manifest = Manifest.read(folder)
    named = {manifest.lance_dir, manifest.bm25_dir, manifest.config.embedder}
    removed = []
    for path in sorted(folder.iterdir()):
        ours = path.name.startswith(("lance", "bm25-", "embedder-"))
        if path.is_dir() and ours and path.name not in named:
            remove_tree(path)
            removed.append(path.name)
    return removed


def set_bm25(folder: Path, config: IndexConfig) -> Manifest:
    """Rebuild the index's BM25 with ``config``'s BM25 settings (same table version, same
    chunks) and commit it: the new folder is complete before the manifest points at it, and the
    old one goes only after. A reader never sees a half-written BM25."""
    manifest = Manifest.read(folder)
    store = open_store(folder, manifest)
    name = f"bm25-{manifest.lance_version}-{int(time.time() * 1000)}"
    documents, chunks = write_bm25(folder, store, config, name)
    updated = replace(
        manifest, config=config, bm25_dir=name, documents=documents, chunks=chunks, updated=_now()
    )
    updated.write(folder)
    remove_tree(folder / manifest.bm25_dir)
    return updated
