"""The request log: what the server did, request by request, in an embedded SQLite file.

The server builds one :class:`RequestLog` and calls :meth:`RequestLog.record` once per request.
``record`` only decides whether to keep the request (sampling) and puts it on a queue; a
background thread scrubs the text of secrets (:func:`mentor.monitor.scrubbing.scrub`), truncates it
and writes whatever has queued up in one short transaction, so logging costs a request a few
microseconds and never waits on the disk. If the disk falls behind and the queue fills, new
records are dropped and counted (``RequestLog.dropped``) rather than slowing requests down.

The file is SQLite in WAL mode: ``mentor monitor report`` (:func:`read_records`) reads it while
the server writes, and several server processes may share one file. No header, key or client
address is ever stored. ``PRAGMA user_version`` holds the schema version.

Sampling: each request is kept with probability ``sample_rate`` (from a seeded generator when
``seed`` is set); errors (status >= 400 or an error message) are always kept while
``always_log_errors`` is on. Every stored row carries the probability it was kept with, so the
report weights it by the inverse and its rates stay unbiased when errors are over-sampled.
"""

from __future__ import annotations

import json
import logging
import queue
import random
import sqlite3
import threading
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from mentor.monitor.scrubbing import scrub

__all__ = ["SCHEMA_VERSION", "LogSettings", "RequestLog", "RequestRecord", "read_records"]

SCHEMA_VERSION = 1
_BATCH = 256  # most records the writer puts in one transaction
_log = logging.getLogger(__name__)

_SCHEMA = (
    """CREATE TABLE IF NOT EXISTS requests (
    id INTEGER PRIMARY KEY,
    time REAL NOT NULL,
    endpoint TEXT NOT NULL,
    model TEXT NOT NULL,
    status INTEGER NOT NULL,
    latency_s REAL NOT NULL,
    prompt_tokens INTEGER NOT NULL,
    completion_tokens INTEGER NOT NULL,
    stream INTEGER NOT NULL,
    query TEXT,
    answer TEXT,
    retrieval_scores TEXT NOT NULL,
    refused INTEGER,
    error TEXT,
    keep_probability REAL NOT NULL
    )""",
    "CREATE INDEX IF NOT EXISTS requests_time ON requests (time)",
)
_COLUMNS = (
    "time, endpoint, model, status, latency_s, prompt_tokens, completion_tokens, stream, query, "
    "answer, retrieval_scores, refused, error, keep_probability"
)


@dataclass(frozen=True)
class RequestRecord:
    """One request the server answered (or failed to)."""

    time: float
    """Unix seconds when the request arrived."""
    endpoint: str
    """The route, e.g. ``/v1/chat/completions`` or ``/v1/retrieve`` (a query string is dropped)."""
    model: str
    """The model that served it: ``base`` or ``base:adapter``."""
    status: int
    """HTTP status code."""
    latency_s: float
    """Seconds from arrival to the last byte."""
    prompt_tokens: int = 0
    """Tokens in the prompt, as the model counts them."""
    completion_tokens: int = 0
    """Tokens generated."""
    stream: bool = False
    """Whether the reply was streamed."""
    query: str | None = None
    """The last user message or the retrieval query (scrubbed); None when text logging is off."""
    answer: str | None = None
    """The reply text (scrubbed); None when text logging is off."""
    retrieval_scores: tuple[float, ...] = ()
    """Scores of the retrieved hits, best first, when retrieval ran."""
    refused: bool | None = None
    """Whether the reply says it cannot answer from the documents; None when not a generation."""
    error: str | None = None
    """What went wrong, for a failed request (scrubbed)."""
    keep_probability: float = 1.0
    """Set by the log: the chance this request had of being stored (1 for errors kept always).
    Reports weight each row by its inverse to estimate totals and rates."""


@dataclass(frozen=True)
class LogSettings:
    """Where and how much the server logs."""

    path: Path
    """SQLite file to write (its folder is created); a report can read it while the server runs."""
    sample_rate: float = 1.0
    """Share of requests stored, in [0, 1]; each request is drawn independently."""
    log_text: bool = True
    """Store the (scrubbed, truncated) query and answer text; off stores numbers only."""
    always_log_errors: bool = True
    """Store every failed request (status >= 400 or an error) whatever the sample rate."""
    seed: int | None = None
    """Seed for the sampling draws, for reproducible runs; None draws from the OS."""
    max_text_chars: int = 2000
    """Longest query, answer or error text stored; the rest is cut off."""
    scrub_emails: bool = True
    """Also replace e-mail addresses in stored text with [EMAIL]."""
    queue_size: int = 10_000
    """Records that may wait for the writer thread; beyond it new ones are dropped and counted."""

    def __post_init__(self) -> None:
        if not 0.0 <= self.sample_rate <= 1.0:
            raise ValueError(f"sample_rate must be in [0, 1], got {self.sample_rate}")
        if self.max_text_chars < 1:
            raise ValueError(f"max_text_chars must be positive, got {self.max_text_chars}")
        if self.queue_size < 1:
            raise ValueError(f"queue_size must be positive, got {self.queue_size}")


def _connect(path: Path) -> sqlite3.Connection:
    # check_same_thread=False: the writer connection is opened here and handed to the writer
    # thread, which is then its only user; readers open their own.
    conn = sqlite3.connect(path, timeout=30.0, check_same_thread=False, isolation_level=None)
    conn.execute("PRAGMA busy_timeout = 30000")
    return conn


def _check_version(conn: sqlite3.Connection, path: Path) -> int:
    version = int(conn.execute("PRAGMA user_version").fetchone()[0])
    if version > SCHEMA_VERSION:
        raise ValueError(
            f"{path}: request log schema version {version}, this mentor reads up to "
            f"{SCHEMA_VERSION}; upgrade mentor"
        )
    return version


def _open_for_writing(path: Path) -> sqlite3.Connection:
    path.parent.mkdir(parents=True, exist_ok=True)
    conn = _connect(path)
    try:
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute("PRAGMA synchronous = NORMAL")  # WAL stays consistent; a crash loses <1 s
        conn.execute("BEGIN IMMEDIATE")  # two servers starting at once create the schema once
        if _check_version(conn, path) == 0:
            for statement in _SCHEMA:
                conn.execute(statement)
            conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        conn.execute("COMMIT")
    except sqlite3.DatabaseError as exc:
        conn.close()
        raise ValueError(f"{path}: not a request log ({exc})") from None
    except BaseException:
        conn.close()
        raise
    return conn


def _clip(text: str | None, limit: int, emails: bool) -> str | None:
    if text is None:
        return None
    # Scrub a little past the limit so a secret that straddles the cut is still recognised.
    return scrub(text[: limit + 200], emails=emails)[:limit]


def _row(record: RequestRecord, settings: LogSettings) -> tuple[Any, ...]:
    emails, limit = settings.scrub_emails, settings.max_text_chars
    text = settings.log_text
    return (
        float(record.time),
        record.endpoint.split("?", 1)[0],
        record.model,
        int(record.status),
        float(record.latency_s),
        int(record.prompt_tokens),
        int(record.completion_tokens),
        int(bool(record.stream)),
        _clip(record.query, limit, emails) if text else None,
        _clip(record.answer, limit, emails) if text else None,
        json.dumps([float(s) for s in record.retrieval_scores]),
        None if record.refused is None else int(record.refused),
        _clip(record.error, limit, emails),
        float(record.keep_probability),
    )


def _record(row: sqlite3.Row) -> RequestRecord:
    return RequestRecord(
        time=row["time"],
        endpoint=row["endpoint"],
        model=row["model"],
        status=row["status"],
        latency_s=row["latency_s"],
        prompt_tokens=row["prompt_tokens"],
        completion_tokens=row["completion_tokens"],
        stream=bool(row["stream"]),
        query=row["query"],
        answer=row["answer"],
        retrieval_scores=tuple(json.loads(row["retrieval_scores"])),
        refused=None if row["refused"] is None else bool(row["refused"]),
        error=row["error"],
        keep_probability=row["keep_probability"],
    )


def read_records(
    path: Path, since: float | None = None, until: float | None = None
) -> list[RequestRecord]:
    """The stored requests with ``since <= time < until`` (either bound optional), oldest first.

    Safe while a server is writing the file: the read sees every transaction committed before
    it began."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"{path}: no request log here (the server writes one when run with request logging on)"
        )
    conn = _connect(path)
    try:
        conn.row_factory = sqlite3.Row
        try:
            if _check_version(conn, path) == 0:
                raise ValueError(f"{path}: not a mentor request log (no schema version)")
            rows = conn.execute(
                f"SELECT {_COLUMNS} FROM requests WHERE time >= ? AND time < ? ORDER BY time, id",
                (
                    float("-inf") if since is None else since,
                    float("inf") if until is None else until,
                ),
            ).fetchall()
        except sqlite3.DatabaseError as exc:
            raise ValueError(f"{path}: not a request log ({exc})") from None
        return [_record(row) for row in rows]
    finally:
        conn.close()


class RequestLog:
    """Samples, scrubs and stores request records from any number of threads."""

    def __init__(self, settings: LogSettings) -> None:
        self.settings = settings
        self.dropped = 0
        """Records sampled in but lost: the queue was full, the log closed, or a write failed."""
        self._rng = random.Random(settings.seed)
        self._lock = threading.Lock()
        self._queue: queue.Queue[RequestRecord | None] = queue.Queue(settings.queue_size)
        self._closed = False
        self._conn = _open_for_writing(Path(settings.path))
        self._writer = threading.Thread(target=self._write_loop, name="mentor-request-log")
        self._writer.daemon = True  # close() flushes; a daemon never blocks interpreter exit
        self._writer.start()

    def record(self, record: RequestRecord) -> bool:
        """Queue ``record`` for storage if the sampling keeps it; return whether it was kept.

        Thread-safe and non-blocking: the scrubbing and the disk write happen on the writer
        thread."""
        probability = self._keep_probability(record)
        stored = replace(record, keep_probability=probability)
        # One short lock: the draw order stays reproducible under a seed, and close() cannot
        # slip its end-of-queue marker between the closed check and the put.
        with self._lock:
            if self._closed:
                return False
            if probability < 1.0 and self._rng.random() >= probability:
                return False
            try:
                self._queue.put_nowait(stored)
            except queue.Full:
                self.dropped += 1
                return False
        return True

    def _keep_probability(self, record: RequestRecord) -> float:
        failed = record.status >= 400 or record.error is not None
        if failed and self.settings.always_log_errors:
            return 1.0
        return self.settings.sample_rate

    def flush(self) -> None:
        """Wait until the queue is empty: every record queued before the call is on disk."""
        self._queue.join()

    def read(self, since: float | None = None, until: float | None = None) -> list[RequestRecord]:
        """The stored requests in ``[since, until)``, oldest first, including any still queued."""
        if not self._closed:
            self.flush()
        return read_records(Path(self.settings.path), since, until)

    def close(self) -> None:
        """Write what is queued, stop the writer thread and close the file. Idempotent."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        self._queue.put(None)
        self._writer.join()
        self._conn.close()

    def __enter__(self) -> RequestLog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _write_loop(self) -> None:
        done = False
        while not done:
            batch = [self._queue.get()]
            while len(batch) < _BATCH:
                try:
                    batch.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            records = [r for r in batch if r is not None]
            done = len(records) < len(batch)
            try:
                self._write(records)
            except Exception:  # a full disk must not kill the server; say so and go on
                _log.exception("request log: could not write %d records", len(records))
                with self._lock:
                    self.dropped += len(records)
            finally:
                for _ in batch:
                    self._queue.task_done()

    def _write(self, records: list[RequestRecord]) -> None:
        if not records:
            return
        rows = [_row(r, self.settings) for r in records]
        placeholders = ", ".join("?" * len(rows[0]))
        self._conn.execute("BEGIN")
        try:
            self._conn.executemany(
                f"INSERT INTO requests ({_COLUMNS}) VALUES ({placeholders})", rows
            )
            self._conn.execute("COMMIT")
        except BaseException:
            self._conn.execute("ROLLBACK")
            raise
