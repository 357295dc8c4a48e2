"""Index builds: what gets indexed, idempotence, --sync, and surviving kill -9."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest

from mentor.rag.index import Manifest, build_index
from mentor.rag.retrieve import Retriever, SearchConfig
from mentor.rag.store import LanceStore
from mentor.testing import HashEmbedder


class CountingEmbedder(HashEmbedder):
    """A hash embedder that remembers every text it embedded."""

    def __init__(self) -> None:
        super().__init__(dim=64)
        self.seen: list[str] = []

    def embed(self, texts: Sequence[str], *, batch_size: int = 32) -> npt.NDArray[np.float32]:
        self.seen.extend(texts)
        return super().embed(texts, batch_size=batch_size)


def test_a_mixed_folder_indexes_and_reports_bad_files(docs: Path, tmp_path: Path) -> None:
    (docs / "broken.pdf").write_bytes(b"%PDF-1.4\n1 0 obj << /Type /Catalog >> endobj\n")
    (docs / "data.txt").write_bytes(b"\x00\x01\x02binary\x00" * 50)
    (docs / "picture.png").write_bytes(b"\x89PNG\r\n")
    (docs / "late-nul.txt").write_bytes(b"Words and more words. " * 500 + b"\x00")
    (docs / "loop-a.md").symlink_to(docs / "loop-b.md")  # a link loop used to stop the run
    (docs / "loop-b.md").symlink_to(docs / "loop-a.md")
    report = build_index(tmp_path / "idx", [docs], HashEmbedder(), sync=True)
    assert sorted(report.indexed) == sorted(
        f"docs/{n}" for n in ("billing.md", "export.md", "guests.md", "security.md")
    )
    failed = {Path(f.path).name: f.reason for f in report.failed}
    assert set(failed) == {"broken.pdf", "data.txt", "late-nul.txt", "loop-a.md", "loop-b.md"}
    assert "binary" in failed["data.txt"] and "binary" in failed["late-nul.txt"]
    assert failed["loop-a.md"].startswith("symbolic link loop")
    assert [Path(s.path).name for s in report.skipped] == ["picture.png"]
    manifest = Manifest.read(tmp_path / "idx")
    assert manifest.documents == 4 and manifest.chunks == report.chunks >= 4


def test_a_second_run_embeds_nothing_and_sync_follows_edits(docs: Path, tmp_path: Path) -> None:
    embedder = CountingEmbedder()
    build_index(tmp_path / "idx", [docs], embedder)
    embedder.seen.clear()
    again = build_index(tmp_path / "idx", [docs], embedder)
    assert again.indexed == [] and again.unchanged == 4 and embedder.seen == []

    (docs / "export.md").write_text("# Export\n\nExports now include comments as a JSON file.")
    (docs / "security.md").unlink()
    synced = build_index(tmp_path / "idx", [docs], embedder, sync=True)
    assert synced.indexed == ["docs/export.md"] and synced.removed == ["docs/security.md"]
    assert all("Exports now include comments" in text or "Export" in text for text in embedder.seen)
    retriever = Retriever(tmp_path / "idx", embedder)
    texts = " ".join(c.text for c in retriever.chunks)
    assert "JSON file" in texts and "AES-256" not in texts and "CSV export" not in texts


def test_without_sync_deleted_files_stay(docs: Path, tmp_path: Path) -> None:
    build_index(tmp_path / "idx", [docs], HashEmbedder())
    (docs / "billing.md").unlink()
    report = build_index(tmp_path / "idx", [docs], HashEmbedder())
    assert report.removed == [] and report.documents == 4


def test_kill_9_mid_build_keeps_the_old_index_and_a_rerun_completes(
    docs: Path, tmp_path: Path
) -> None:
    index = tmp_path / "idx"
    build_index(index, [docs], HashEmbedder())
    more = docs / "more"
    more.mkdir()
    for n in range(12):
        (more / f"note-{n:02d}.md").write_text(f"# Note {n}\n\nNote number {n} about topic {n}.")
    script = f"""
import sys, time
from pathlib import Path
from mentor.rag.index import build_index
from mentor.testing import HashEmbedder
class Slow(HashEmbedder):
    calls = 0
    def embed(self, texts, *, batch_size=32):
        Slow.calls += 1
        if Slow.calls == 3:
            print("two groups stored", flush=True)
            time.sleep(60)
        return super().embed(texts, batch_size=batch_size)
build_index(Path({str(index)!r}), [Path({str(docs)!r})], Slow(), group_chunks=4)
"""
    proc = subprocess.Popen(
        [sys.executable, "-c", script], stdout=subprocess.PIPE, text=True, env=os.environ.copy()
    )
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "two groups stored"
    proc.send_signal(signal.SIGKILL)
    proc.wait()

    # The committed index is what it was: 4 documents, searchable.
    retriever = Retriever(index, HashEmbedder())
    assert len({c.doc_id for c in retriever.chunks}) == 4
    assert retriever.search("refunds", SearchConfig(k=1)).hits[0].chunk.doc_id == "docs/billing.md"

    embedder = CountingEmbedder()
    report = build_index(index, [docs], embedder)
    assert report.documents == 16
    assert len(report.indexed) < 12  # the groups stored before the kill were not embedded again
    assert report.unchanged == 4 + (12 - len(report.indexed))


def test_a_changed_embedder_is_refused(docs: Path, tmp_path: Path) -> None:
    build_index(tmp_path / "idx", [docs], HashEmbedder(dim=64))
    with pytest.raises(ValueError, match="64-d"):
        Retriever(tmp_path / "idx", HashEmbedder(dim=32))


class DyingEmbedder(HashEmbedder):
    """Raises on its ``die_at``-th call, as a killed build would stop."""

    def __init__(self, die_at: int) -> None:
        super().__init__(dim=64)
        self.calls, self.die_at = 0, die_at

    def embed(self, texts: Sequence[str], *, batch_size: int = 32) -> npt.NDArray[np.float32]:
        self.calls += 1
        if self.calls == self.die_at:
            raise KeyboardInterrupt
        return super().embed(texts, batch_size=batch_size)


def _big_text() -> str:
    sentence = "Guests can comment on boards but cannot create them. "
    return "".join(f"# Part {p}\n\n" + (sentence * 6 + "\n\n") * 40 for p in range(30))


def test_a_large_file_is_indexed_in_sections_and_a_build_killed_inside_it_recovers(
    tmp_path: Path,
) -> None:
    docs = tmp_path / "docs"
    docs.mkdir()
    text = _big_text()
    (docs / "big.md").write_text(text)
    (docs / "a-small.md").write_text("# Small\n\nA small file.")  # stored first
    whole = build_index(tmp_path / "whole", [docs], HashEmbedder())  # read whole
    streaming = {"stream_above": 10_000, "section_chars": 4096}
    with pytest.raises(KeyboardInterrupt):  # killed between two sections of big.md
        build_index(tmp_path / "idx", [docs], DyingEmbedder(die_at=3), **streaming)
    steps: list[tuple[str, int, int]] = []
    report = build_index(
        tmp_path / "idx", [docs], HashEmbedder(), progress=lambda *a: steps.append(a), **streaming
    )
    assert sorted(report.indexed) == ["docs/big.md"] and report.unchanged == 1  # small was stored
    assert ("reading big.md (MB)", 0, 1) in steps
    big = [
        c for c in Retriever(tmp_path / "idx", HashEmbedder()).chunks if c.doc_id == "docs/big.md"
    ]
    assert [c.chunk_id for c in big] == [f"docs/big.md#{n}" for n in range(len(big))]
    assert all(text[c.start : c.end] == c.text for c in big)
    assert whole.chunks - 1 <= len(big) <= whole.chunks - 1 + len(text) // 4096
    states = LanceStore(tmp_path / "idx" / "lance", 64).documents()
    assert {h for s in states.values() for h in s.hashes} == {  # no rows of the killed build left
        state.hashes.pop()
        for state in LanceStore(tmp_path / "whole" / "lance", 64).documents().values()
    }
    again = build_index(tmp_path / "idx", [docs], HashEmbedder(), **streaming)
    assert again.indexed == [] and again.unchanged == 2


def test_bm25_is_rebuilt_in_batches_in_the_stores_row_order(
    docs: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import json

    import bm25s

    from mentor.rag import index as index_module
    from mentor.rag.bm25 import BM25Index, tokenize
    from mentor.rag.index import embed_input, open_store

    monkeypatch.setattr(index_module, "BM25_BATCH_ROWS", 1)  # a batch per row
    build_index(tmp_path / "idx", [docs], HashEmbedder())
    (docs / "billing.md").write_text("# Billing\n\nInvoices are sent monthly to the admin.\n")
    build_index(tmp_path / "idx", [docs], HashEmbedder(), sync=True)  # deletes rows, adds rows
    manifest = Manifest.read(tmp_path / "idx")
    chunks = open_store(tmp_path / "idx").chunks()
    assert len(chunks) >= 3 and manifest.chunks == len(chunks)
    assert manifest.documents == len({c.doc_id for c in chunks})
    folder = tmp_path / "idx" / manifest.bm25_dir
    assert json.loads((folder / "ids.json").read_text()) == [c.chunk_id for c in chunks]
    reference = bm25s.BM25()
    reference.index(tokenize([embed_input(c) for c in chunks]), show_progress=False)
    loaded = BM25Index.load(folder)
    for query in ("invoices admin", "billing", "encrypted"):
        rows, scores = reference.retrieve(
            tokenize([query]), k=len(chunks), show_progress=False, n_threads=1
        )
        want = {(int(r), round(float(s), 5)) for r, s in zip(rows[0], scores[0], strict=True)}
        assert {(r, round(s, 5)) for r, s in loaded.search(query, len(chunks))} == {
            w for w in want if w[1] > 0
        }
