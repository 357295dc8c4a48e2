"""A resumable cache of a hosted model's answers: one SQLite file, one row per request.

A generation run against a paid endpoint must never pay twice for the same answer, whether it
is run again or restarted after a crash. Every answer is committed the moment it arrives (WAL
journal, one transaction per answer), so a process killed with ``kill -9`` keeps every answer it
had received; a rerun finds them and sends only the requests that are missing.

The key is the sha256 of the exact request: the endpoint's base URL, the model, the messages and
the sampling settings sent (temperature, top_p, max_tokens, seed, stop). A sampled request
(temperature > 0) with no seed is cached too: its answer is one draw, and the cache keeps that
draw instead of paying for another. Change the seed to ask for a fresh one.

Each row also keeps the tokens the endpoint billed and how long it took, so a run can report
"N answers from cache, M requested, K tokens paid" and the endpoint's latency.

    cache = ResponseCache(mentor_home() / "remote-cache" / "responses.sqlite")
    key = request_key(base_url, model, messages, {"temperature": 0.0, "max_tokens": 64})
    cache.get(key) or cache.put(key, ..., StoredResponse("Paris.", 12, 2, 0.4))
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType

from mentor.models.protocols import ChatMessage
from mentor.utils.fs import mentor_home

_SCHEMA = """
CREATE TABLE IF NOT EXISTS responses (
    key TEXT PRIMARY KEY,
    base_url TEXT NOT NULL,
    model TEXT NOT NULL,
    request TEXT NOT NULL,
    text TEXT NOT NULL,
    prompt_tokens INTEGER,
    completion_tokens INTEGER,
    seconds REAL NOT NULL,
    created TEXT NOT NULL
)
"""


def default_cache_path() -> Path:
    """``$MENTOR_HOME/remote-cache/responses.sqlite``: shared by every run and command."""
    return mentor_home() / "remote-cache" / "responses.sqlite"


@dataclass(frozen=True)
class StoredResponse:
    """One answer as the endpoint gave it."""

    text: str
    prompt_tokens: int | None
    """Prompt tokens the endpoint billed (None when it did not say)."""
    completion_tokens: int | None
    """Generated tokens, counted by the endpoint's own tokenizer (None when it did not say)."""
    seconds: float
    """The endpoint's time for the request that produced the answer."""


def request_key(
    base_url: str,
    model: str,
    messages: Sequence[ChatMessage],
    sampling: Mapping[str, object],
) -> str:
    """Hex sha256 of the request: the same endpoint, model, messages and settings, the same key."""
    payload = {
        "base_url": base_url.rstrip("/"),
        "model": model,
        "messages": [{"role": m["role"], "content": m["content"]} for m in messages],
        "sampling": dict(sampling),
    }
    text = json.dumps(payload, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


class ResponseCache:
    """Answers by request key in the SQLite file at ``path``; safe to share between threads
    (one connection behind a lock) and between processes (SQLite's own locking)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        try:
            # isolation_level=None: every statement commits on its own, so each answer is
            # durable the moment put() returns.
            self._db = sqlite3.connect(
                str(path), timeout=30.0, check_same_thread=False, isolation_level=None
            )
            self._db.execute("PRAGMA journal_mode=WAL")
            # NORMAL in WAL mode: a killed process loses nothing committed; only a power cut
            # may drop the last few answers.
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.execute(_SCHEMA)
        except sqlite3.DatabaseError as exc:
            raise ValueError(
                f"{path}: not a usable response cache ({exc}); delete it to start afresh"
            ) from None

    def get(self, key: str) -> StoredResponse | None:
        with self._lock:
            row = self._db.execute(
                "SELECT text, prompt_tokens, completion_tokens, seconds FROM responses "
                "WHERE key = ?",
                (key,),
            ).fetchone()
        if row is None:
            return None
        return StoredResponse(str(row[0]), row[1], row[2], float(row[3]))

    def put(
        self,
        key: str,
        *,
        base_url: str,
        model: str,
        request: Mapping[str, object],
        response: StoredResponse,
    ) -> None:
        """Commit one answer. A key already there keeps its first answer (two threads that
        asked the same question at once both paid, but the cache stays consistent)."""
        row = (
            key,
            base_url.rstrip("/"),
            model,
            json.dumps(request, ensure_ascii=False, sort_keys=True),
            response.text,
            response.prompt_tokens,
            response.completion_tokens,
            response.seconds,
            datetime.now(UTC).isoformat(timespec="seconds"),
        )
        with self._lock:
            self._db.execute(
                "INSERT OR IGNORE INTO responses VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)", row
            )

    def __len__(self) -> int:
        with self._lock:
            return int(self._db.execute("SELECT COUNT(*) FROM responses").fetchone()[0])

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def __enter__(self) -> ResponseCache:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()
