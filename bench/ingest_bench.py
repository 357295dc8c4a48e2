"""Ingest benchmark: time and peak memory of ``mentor rag index`` on one large plain-text file.

For each size (30 MB and 300 MB by default) a file of generated prose (sentences, paragraphs,
a ``#`` heading every 200 paragraphs) is written under ``--workdir`` once and reused, then a
fresh child process builds an index of it with the hash embedder (``mentor.testing``; the real
MiniLM embeds about 1 MB a minute on 2 cores, so it would measure the embedder, not the ingest)
and reports its wall time, its peak resident memory (``ru_maxrss``) and the chunks it made. Each
size runs in its own process so one peak does not hide another.

Run: ``python bench/ingest_bench.py [--sizes 30,300] [--workdir /tmp/mentor-ingest-bench]``.
``--src DIR`` measures another checkout's ``src`` (e.g. the code before a change) the same way.
The generated files are large: they stay in ``--workdir``, never in the repository.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
from pathlib import Path

from rich.console import Console
from rich.table import Table

_WORDS = [
    "board",
    "guest",
    "export",
    "member",
    "invite",
    "plan",
    "price",
    "storage",
    "sync",
    "team",
    "project",
    "file",
    "comment",
    "archive",
    "admin",
    "billing",
    "seat",
    "workspace",
    "folder",
    "search",
    "label",
    "report",
    "reminder",
    "calendar",
    "the",
    "a",
    "of",
    "to",
    "and",
    "in",
    "is",
    "that",
    "for",
    "with",
    "on",
    "as",
    "it",
    "by",
    "this",
    "be",
    "are",
    "from",
    "at",
    "or",
    "an",
]

_CHILD = """
import json, resource, sys, time
from pathlib import Path
from mentor.rag.index import build_index
from mentor.testing import HashEmbedder
marks = []
def progress(what, done, total):
    marks.append(what)
started = time.perf_counter()
report = build_index(Path(sys.argv[1]), [Path(sys.argv[2])], HashEmbedder(dim=64),
                     progress=progress)
seconds = time.perf_counter() - started
rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(json.dumps({"seconds": seconds, "rss_mb": rss_mb, "chunks": report.chunks,
                  "documents": report.documents, "progress_calls": len(marks),
                  "failed": [str(f) for f in report.failed]}))
"""


def write_text(path: Path, megabytes: int, seed: int = 0) -> None:
    """Write about ``megabytes`` MB of prose-like text to ``path`` (a no-op when it exists)."""
    if path.exists() and path.stat().st_size >= megabytes * 1_000_000:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    target = megabytes * 1_000_000
    written = 0
    paragraph = 0
    with path.open("w", encoding="utf-8") as fh:
        while written < target:
            if paragraph % 200 == 0:
                block = f"# Section {paragraph // 200 + 1}\n\n"
            else:
                sentences = []
                for _ in range(rng.randint(2, 7)):
                    words = rng.choices(_WORDS, k=rng.randint(6, 20))
                    sentences.append(" ".join(words).capitalize() + ".")
                block = " ".join(sentences) + "\n\n"
            fh.write(block)
            written += len(block)
            paragraph += 1


def measure(src: Path, folder: Path) -> dict[str, object]:
    """Index ``folder`` into a fresh index in a child process running the code under ``src``."""
    env = {**os.environ, "PYTHONPATH": str(src)}
    with tempfile.TemporaryDirectory(prefix="ingest-index-") as index:
        done = subprocess.run(
            [sys.executable, "-c", _CHILD, index, str(folder)],
            env=env,
            capture_output=True,
            text=True,
            check=False,
        )
    if done.returncode != 0:
        tail = done.stderr.strip().splitlines()[-1:] or [f"exit status {done.returncode}"]
        return {"error": tail[0]}
    result: dict[str, object] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="30,300", help="File sizes in MB, comma-separated.")
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/mentor-ingest-bench"))
    parser.add_argument(
        "--src", type=Path, default=Path(__file__).resolve().parents[1] / "src", help="Code to run."
    )
    args = parser.parse_args()
    table = Table(title=f"Ingest of one plain-text file, hash embedder ({args.src})")
    for column in ("file", "time (s)", "peak RSS (MB)", "chunks", "progress updates", "note"):
        table.add_column(column)
    for size in (int(s) for s in args.sizes.split(",")):
        folder = args.workdir / f"text-{size}mb"
        write_text(folder / "big.txt", size)
        result = measure(args.src, folder)
        if "error" in result:
            table.add_row(f"{size} MB", "-", "-", "-", "-", str(result["error"]))
            continue
        table.add_row(
            f"{size} MB",
            f"{result['seconds']:.1f}",
            f"{result['rss_mb']:,.0f}",
            f"{result['chunks']:,}",
            str(result["progress_calls"]),
            "; ".join(map(str, result["failed"])) or "ok",  # type: ignore[call-overload]
        )
    Console().print(table)


if __name__ == "__main__":
    main()
