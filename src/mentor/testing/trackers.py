"""``RecordingTracker``: a :class:`mentor.utils.tracking.Tracker` that keeps every call, so a test
can check what a run reported (and ``fail_on``, to check that a broken tracker stops no run).

    tracker = RecordingTracker()
    run(settings, resume=False, trackers=[("fake", tracker)])
    assert [step for step, _ in tracker.logs] == [1, 2, 3]
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mentor.utils.tracking import Status


@dataclass
class RecordingTracker:
    """Every call, in order; ``fail_on`` names methods that raise ``RuntimeError`` instead."""

    fail_on: tuple[str, ...] = ()
    config: dict[str, Any] | None = None
    logs: list[tuple[int, dict[str, float]]] = field(default_factory=list)
    artifacts: list[tuple[Path, str]] = field(default_factory=list)
    status: Status | None = None
    calls: list[str] = field(default_factory=list)

    def _called(self, what: str) -> None:
        self.calls.append(what)
        if what in self.fail_on:
            raise RuntimeError(f"{what} failed on purpose")

    def start(self, config: Mapping[str, Any]) -> None:
        self._called("start")
        self.config = dict(config)

    def log(self, metrics: Mapping[str, float], step: int) -> None:
        self._called("log")
        self.logs.append((step, dict(metrics)))

    def artifact(self, path: Path, kind: str) -> None:
        self._called("artifact")
        self.artifacts.append((path, kind))

    def finish(self, status: Status) -> None:
        self._called("finish")
        self.status = status
