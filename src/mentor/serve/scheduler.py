"""Worker threads run the requests; the rest wait their turn in a bounded queue.

The web handlers are async and must never block on a forward pass, so each request becomes a
:class:`Job` put on a queue. As many worker threads as the engine runs requests at once take jobs
from it: each job streams its pieces back to the handler's event loop as they are made, and its
generations join the engine's running batch (a continuously batching engine decodes them all in
one pass per token, :class:`~mentor.models.engine.HFEngine`), so a request no longer waits for
the previous one to finish. An engine that decodes one request at a time gets one worker.

A full queue refuses at once (the handler answers 503 with Retry-After) instead of letting
requests pile up without bound; a client that disconnects cancels its job, queued or running.
"""

from __future__ import annotations

import asyncio
import queue
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any


class QueueFullError(RuntimeError):
    """More requests are waiting than the server accepts."""


class _End:
    """Marks the end of a job's stream."""


_END = _End()


@dataclass
class Job:
    """One unit of work for the worker: ``work(job)`` yields the pieces to stream back."""

    work: Callable[[Job], Iterator[Any]]
    loop: asyncio.AbstractEventLoop
    events: asyncio.Queue[Any] = field(default_factory=asyncio.Queue)
    cancelled: threading.Event = field(default_factory=threading.Event)
    queued_at: float = field(default_factory=time.monotonic)
    started_at: float | None = None

    def _put(self, item: Any) -> None:
        self.loop.call_soon_threadsafe(self.events.put_nowait, item)

    def cancel(self) -> None:
        self.cancelled.set()

    async def stream(self) -> AsyncIterator[Any]:
        """The job's pieces as they come; the worker's exception, if any, is raised here."""
        while True:
            item = await self.events.get()
            if item is _END:
                return
            if isinstance(item, BaseException):
                raise item
            yield item

    async def result(self) -> list[Any]:
        return [item async for item in self.stream()]


class Scheduler:
    """Runs up to ``workers`` jobs at once, each on its own thread, the rest in order."""

    def __init__(self, max_queue: int = 256, workers: int = 1) -> None:
        if workers < 1:
            raise ValueError(f"workers must be at least 1, got {workers}")
        self.max_queue = max_queue
        self._queue: queue.Queue[Job | None] = queue.Queue()
        self._waiting = 0
        self._lock = threading.Lock()
        self.running: set[Job] = set()
        self._threads = [
            threading.Thread(target=self._run, name=f"mentor-serve-worker-{i}", daemon=True)
            for i in range(workers)
        ]
        for thread in self._threads:
            thread.start()

    @property
    def depth(self) -> int:
        """Jobs waiting, not counting the running ones."""
        return self._waiting

    def submit(self, work: Callable[[Job], Iterator[Any]], *, force: bool = False) -> Job:
        """Queue ``work``; raises :class:`QueueFullError` when ``max_queue`` jobs already wait
        (``force`` queues anyway: admin work is never refused)."""
        job = Job(work, asyncio.get_running_loop())
        with self._lock:
            if self._waiting >= self.max_queue and not force:
                raise QueueFullError(f"{self._waiting} requests are already waiting")
            self._waiting += 1
        self._queue.put(job)
        return job

    async def run(self, fn: Callable[[], Any]) -> Any:
        """Run ``fn`` on a worker (never refused: admin work) and return its result; what it
        changes in the model it changes through the engine, between two forward passes."""

        def work(_: Job) -> Iterator[Any]:
            yield fn()

        items = await self.submit(work, force=True).result()
        return items[0]

    def close(self) -> None:
        for _ in self._threads:
            self._queue.put(None)
        for thread in self._threads:
            thread.join(timeout=10)

    def _run(self) -> None:
        while True:
            job = self._queue.get()
            if job is None:
                return
            with self._lock:
                self._waiting -= 1
            if job.cancelled.is_set():
                job._put(_END)
                continue
            job.started_at = time.monotonic()
            with self._lock:
                self.running.add(job)
            try:
                for item in job.work(job):
                    job._put(item)
                    if job.cancelled.is_set():
                        break
                job._put(_END)
            except BaseException as exc:  # handed to the request's handler, the worker goes on
                job._put(exc)
            finally:
                with self._lock:
                    self.running.discard(job)
