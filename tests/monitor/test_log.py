"""The request log: storage round trip, scrubbing, sampling, threads and concurrent readers."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import threading
import time
from dataclasses import replace
from pathlib import Path

import pytest

from mentor.monitor.log import (
    SCHEMA_VERSION,
    LogSettings,
    RequestLog,
    RequestRecord,
    read_records,
)


def _record(i: int = 0, status: int = 200, **fields: object) -> RequestRecord:
    base = RequestRecord(
        time=1_700_000_000.0 + i,
        endpoint="/v1/chat/completions",
        model="base",
        status=status,
        latency_s=0.5,
        prompt_tokens=i,
    )
    return replace(base, **fields)  # type: ignore[arg-type]


def test_round_trip_keeps_every_field(tmp_path: Path) -> None:
    record = RequestRecord(
        time=1_700_000_123.25,
        endpoint="/v1/chat/completions",
        model="base:support",
        status=200,
        latency_s=1.5,
        prompt_tokens=321,
        completion_tokens=45,
        stream=True,
        query="How do I export?",
        answer="Use the board menu [1].",
        retrieval_scores=(0.8, 0.5, 0.25),
        refused=False,
    )
    with RequestLog(LogSettings(path=tmp_path / "log.db")) as log:
        assert log.record(record)
        assert log.record(_record(200, status=503, error="overloaded", refused=None))
        stored = log.read()
    assert stored[0] == record
    assert stored[1].error == "overloaded" and stored[1].refused is None
    assert read_records(tmp_path / "log.db") == stored  # a fresh reader sees the same


def test_read_filters_by_time(tmp_path: Path) -> None:
    with RequestLog(LogSettings(path=tmp_path / "log.db")) as log:
        for i in range(10):
            log.record(_record(i))
        window = log.read(since=1_700_000_003.0, until=1_700_000_006.0)
    assert [r.prompt_tokens for r in window] == [3, 4, 5]


def test_text_is_scrubbed_truncated_or_dropped(tmp_path: Path) -> None:
    secret = "my key is sk-abcdefghijklmnopqrstuvwx, mail bob@example.com"
    settings = LogSettings(path=tmp_path / "a.db", max_text_chars=30)
    with RequestLog(settings) as log:
        log.record(
            _record(
                query=secret,
                answer="x" * 100,
                error=f"failed with {secret}",
                endpoint="/v1/retrieve?api_key=hunter2",
            )
        )
        stored = log.read()[0]
    assert stored.query == "my key is [API_KEY], mail [EMA"  # scrubbed, then cut to 30
    assert stored.answer == "x" * 30
    assert stored.error is not None and "sk-" not in stored.error
    assert stored.endpoint == "/v1/retrieve"
    raw = (tmp_path / "a.db").read_bytes()
    assert b"hunter2" not in raw and b"sk-abc" not in raw

    with RequestLog(LogSettings(path=tmp_path / "b.db", log_text=False)) as log:
        log.record(_record(query="hello", answer="hi", refused=False))
        stored = log.read()[0]
    assert stored.query is None and stored.answer is None and stored.refused is False


def test_sampling_rate_is_honoured_and_seeded(tmp_path: Path) -> None:
    n, rate = 4000, 0.3

    def run(name: str, seed: int) -> list[bool]:
        with RequestLog(LogSettings(path=tmp_path / name, sample_rate=rate, seed=seed)) as log:
            kept = [log.record(_record(i)) for i in range(n)]
            assert len(log.read()) == sum(kept)
            assert {r.keep_probability for r in log.read()} == {rate}
        return kept

    first = run("a.db", seed=7)
    # Binomial(4000, 0.3): sd = 29; 5 sd either side fails by chance about once in 3.5 million.
    assert abs(sum(first) - n * rate) < 5 * (n * rate * (1 - rate)) ** 0.5
    assert run("b.db", seed=7) == first
    assert run("c.db", seed=8) != first


def test_errors_are_always_kept_unless_told_otherwise(tmp_path: Path) -> None:
    with RequestLog(LogSettings(path=tmp_path / "a.db", sample_rate=0.0)) as log:
        kept = [log.record(_record(i, status=500 if i % 2 else 200)) for i in range(100)]
        stored = log.read()
    assert sum(kept) == 50 and all(r.status == 500 and r.keep_probability == 1.0 for r in stored)
    settings = LogSettings(path=tmp_path / "b.db", sample_rate=0.0, always_log_errors=False)
    with RequestLog(settings) as log:
        assert not log.record(_record(status=500))
        assert not log.record(_record(error="boom"))
        assert log.read() == []


def test_many_threads_record_at_once(tmp_path: Path) -> None:
    threads, each = 8, 400
    with RequestLog(LogSettings(path=tmp_path / "log.db")) as log:

        def work(t: int) -> None:
            for i in range(each):
                assert log.record(_record(t * each + i))

        workers = [threading.Thread(target=work, args=(t,)) for t in range(threads)]
        for w in workers:
            w.start()
        for w in workers:
            w.join()
        stored = log.read()
        assert log.dropped == 0
    assert sorted(r.prompt_tokens for r in stored) == list(range(threads * each))


def test_record_is_cheap(tmp_path: Path) -> None:
    with RequestLog(LogSettings(path=tmp_path / "log.db")) as log:
        record = _record(query="How do I export a board? " * 40, answer="Like so. " * 100)
        start = time.perf_counter()
        for _ in range(2000):
            log.record(record)
        per_call = (time.perf_counter() - start) / 2000
    # The server's thread only samples and enqueues; scrubbing and SQLite happen elsewhere.
    assert per_call < 500e-6, f"record() took {per_call * 1e6:.0f} us"


def test_reader_while_writing(tmp_path: Path) -> None:
    path = tmp_path / "log.db"
    total = 3000
    with RequestLog(LogSettings(path=path)) as log:
        seen: list[int] = []
        errors: list[BaseException] = []
        stop = threading.Event()

        def reader() -> None:
            try:
                while not stop.is_set():
                    seen.append(len(read_records(path)))
            except BaseException as exc:  # surfaced below
                errors.append(exc)

        thread = threading.Thread(target=reader)
        thread.start()
        for i in range(total):
            log.record(_record(i))
            if i % 100 == 0:
                time.sleep(0.002)
        log.flush()
        # Another process reads the file too while this one keeps writing.
        script = (
            "import sys; from pathlib import Path; from mentor.monitor.log import read_records; "
            "print(len(read_records(Path(sys.argv[1]))))"
        )
        child = subprocess.Popen(
            [sys.executable, "-c", script, str(path)], stdout=subprocess.PIPE, text=True
        )
        for i in range(total, total + 500):
            log.record(_record(i))
        out, _ = child.communicate(timeout=60)
        stop.set()
        thread.join()
    assert not errors, errors
    assert seen == sorted(seen) and len(seen) > 1
    assert total <= int(out) <= total + 500
    assert len(read_records(path)) == total + 500


def test_recording_after_close_is_refused(tmp_path: Path) -> None:
    log = RequestLog(LogSettings(path=tmp_path / "log.db"))
    log.record(_record(0))
    log.close()
    log.close()  # idempotent
    assert not log.record(_record(1))
    assert len(log.read()) == 1


def test_full_queue_drops_instead_of_blocking(tmp_path: Path) -> None:
    log = RequestLog(LogSettings(path=tmp_path / "log.db", queue_size=1))
    gate = threading.Lock()
    gate.acquire()
    original = log._write

    def slow_write(records: list[RequestRecord]) -> None:
        with gate:  # hold the writer until the test lets it go
            original(records)

    log._write = slow_write  # type: ignore[method-assign]
    results = [log.record(_record(i)) for i in range(50)]
    gate.release()
    log.close()
    assert not all(results) and log.dropped == results.count(False)
    assert len(read_records(tmp_path / "log.db")) == results.count(True)


def test_bad_files_give_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="no request log"):
        read_records(tmp_path / "missing.db")
    junk = tmp_path / "junk.db"
    junk.write_text("not a database at all, just text " * 100)
    with pytest.raises(ValueError, match=r"junk\.db: not a request log"):
        RequestLog(LogSettings(path=junk))
    with pytest.raises(ValueError, match="not a request log"):
        read_records(junk)
    newer = tmp_path / "newer.db"
    RequestLog(LogSettings(path=newer)).close()
    with sqlite3.connect(newer) as conn:
        conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    with pytest.raises(ValueError, match="schema version 2"):
        read_records(newer)
    with pytest.raises(ValueError, match="sample_rate"):
        LogSettings(path=newer, sample_rate=1.5)


def test_database_is_wal_and_versioned(tmp_path: Path) -> None:
    RequestLog(LogSettings(path=tmp_path / "sub" / "log.db")).close()
    with sqlite3.connect(tmp_path / "sub" / "log.db") as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
