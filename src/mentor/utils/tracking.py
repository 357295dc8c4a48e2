"""Reporting a run to the experiment trackers teams use: one small Protocol, and the plumbing that
makes trackers safe to add to a training run.

    with tracking(["mlflow", "tensorboard"], run_dir=out, name="finetune-out",
                  config=settings.model_dump(mode="json"), console=err) as tracker:
        train(..., tracker=tracker)                     # tracker.log(metrics, step) every step
        tracker.artifact(out / "report.json", "report") # then the report and the adapter

Three rules hold whatever the backend (:mod:`mentor.utils.trackers` has the four: trackio,
wandb, mlflow, tensorboard):

- a missing backend package is a clear error *before* anything is trained, naming the extra to
  install (``pip install 'mentor[mlflow]'``);
- a tracker that fails while the run goes on (a server down, a full disk, a bad value) is warned
  about once and then left out: a training run is never killed by its reporting;
- under torchrun only process 0 (``RANK`` 0) reports; the others get a tracker that does nothing.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any, Literal, Protocol

from pydantic import BeforeValidator
from rich.console import Console

Status = Literal["finished", "failed"]

TRACKER_NAMES: tuple[str, ...] = ("trackio", "wandb", "mlflow", "tensorboard")
"""What ``--report-to`` accepts; :data:`mentor.utils.trackers.BACKENDS` has one entry each."""

REPORT_TO_HELP = (
    "Report the run's config, per-step metrics, report and adapter/model to trackers: trackio, "
    "wandb, mlflow, tensorboard (repeat the flag or separate with commas; each needs its extra, "
    "e.g. pip install 'mentor[mlflow]'). Offline by default where the tool allows: WANDB_MODE, "
    "MLFLOW_TRACKING_URI (else a SQLite store in the run folder), TensorBoard event files in the "
    "run folder, trackio's local store."
)


class Tracker(Protocol):
    """One experiment tracker, as a run sees it. Process 0 calls ``start`` once, ``log`` after
    every optimizer step, ``artifact`` for each file or folder worth keeping, ``finish`` once."""

    def start(self, config: Mapping[str, Any]) -> None: ...

    def log(self, metrics: Mapping[str, float], step: int) -> None: ...

    def artifact(self, path: Path, kind: str) -> None:
        """``path``: a file or a folder; ``kind``: what it is (report, adapter, model, table)."""

    def finish(self, status: Status) -> None: ...


def parse_report_to(values: Iterable[str] | str | None) -> list[str]:
    """``["mlflow,wandb", "tensorboard"]`` -> ``["mlflow", "wandb", "tensorboard"]``, checked,
    in order, without repeats."""
    if values is None:
        return []
    items = [values] if isinstance(values, str) else list(values)
    names: list[str] = []
    for item in items:
        for raw in str(item).split(","):
            name = raw.strip().lower()
            if not name or name == "none":
                continue
            if name not in TRACKER_NAMES:
                raise ValueError(
                    f"report_to: unknown tracker {raw.strip()!r}; choose from "
                    f"{', '.join(TRACKER_NAMES)}"
                )
            if name not in names:
                names.append(name)
    return names


ReportTo = Annotated[list[str], BeforeValidator(parse_report_to)]
"""The ``report_to`` field of a run config: a list, or one comma-separated string, of names."""


def run_name(command: str, out: Path) -> str:
    """``finetune-myrun-20260105-101500``: the command, the run folder, when (trackers keep runs
    of the same folder apart)."""
    return f"{command}-{out.resolve().name}-{datetime.now():%Y%m%d-%H%M%S}"


class Guarded:
    """A tracker whose failures are warned about once and then stop it, not the run."""

    def __init__(self, name: str, inner: Tracker, console: Console) -> None:
        self.name, self.inner, self.console = name, inner, console
        self.failed: str | None = None

    def _call(self, what: str, *args: Any) -> None:
        if self.failed is not None:
            return
        try:
            getattr(self.inner, what)(*args)
        except Exception as exc:  # any failure of a reporting tool; training goes on
            self.failed = f"{type(exc).__name__}: {exc}"
            self.console.print(
                f"[yellow]warning:[/yellow] tracker {self.name} failed in {what} "
                f"({self.failed}); the run goes on without it",
                highlight=False,
                soft_wrap=True,
            )

    def start(self, config: Mapping[str, Any]) -> None:
        self._call("start", config)

    def log(self, metrics: Mapping[str, float], step: int) -> None:
        self._call("log", metrics, step)

    def artifact(self, path: Path, kind: str) -> None:
        self._call("artifact", path, kind)

    def finish(self, status: Status) -> None:
        self._call("finish", status)


class Fanout:
    """Several trackers as one; with none, a tracker that does nothing."""

    def __init__(self, trackers: Sequence[Tracker] = ()) -> None:
        self.trackers = list(trackers)

    def start(self, config: Mapping[str, Any]) -> None:
        for t in self.trackers:
            t.start(config)

    def log(self, metrics: Mapping[str, float], step: int) -> None:
        for t in self.trackers:
            t.log(metrics, step)

    def artifact(self, path: Path, kind: str) -> None:
        if not path.exists():
            return  # an optional output the run did not write (no eval set, no plot)
        for t in self.trackers:
            t.artifact(path, kind)

    def finish(self, status: Status) -> None:
        for t in self.trackers:
            t.finish(status)


class Prefixed:
    """One part of a run reporting into the run's trackers: its metrics named ``PREFIX/NAME``
    (a bakeoff's ``lora/loss`` beside ``distilled/loss``), the run started and finished by its
    owner, not by the part."""

    def __init__(self, inner: Tracker, prefix: str) -> None:
        self.inner, self.prefix = inner, prefix.rstrip("/") + "/"
        self.steps = 0
        """Steps logged through this part (0: nothing reached the trackers from it)."""

    def start(self, config: Mapping[str, Any]) -> None:
        del config  # the run's own config was given when it started

    def log(self, metrics: Mapping[str, float], step: int) -> None:
        self.inner.log({f"{self.prefix}{k}": v for k, v in metrics.items()}, step)
        self.steps += 1

    def artifact(self, path: Path, kind: str) -> None:
        self.inner.artifact(path, kind)

    def finish(self, status: Status) -> None:
        del status


def is_main_process() -> bool:
    """Process 0 of a torchrun/accelerate launch, or a lone process."""
    return int(os.environ.get("RANK", "0")) == 0


def open_backends(names: Sequence[str], run_dir: Path, run_name: str) -> list[tuple[str, Tracker]]:
    """Build each named backend (importing its package now, so a missing one fails before any
    training); :class:`~mentor.utils.trackers.TrackerUnavailableError` names the extra."""
    from mentor.utils.trackers import BACKENDS

    return [(name, BACKENDS[name](run_dir, run_name)) for name in parse_report_to(names)]


@contextmanager
def tracking(
    names: Sequence[str],
    *,
    run_dir: Path,
    name: str,
    config: Mapping[str, Any],
    console: Console,
    trackers: Sequence[tuple[str, Tracker]] | None = None,
) -> Iterator[Tracker]:
    """The trackers ``names`` (or the given ``trackers``, as ``(name, tracker)``) started with
    ``config``; finished ``finished``, or ``failed`` when the block raises. Off process 0, and
    with no names, a tracker that does nothing."""
    if not is_main_process():
        yield Fanout()
        return
    opened = open_backends(names, run_dir, name) if trackers is None else list(trackers)
    tracker = Fanout([Guarded(n, t, console) for n, t in opened])
    tracker.start(config)
    try:
        yield tracker
    except BaseException:
        tracker.finish("failed")
        raise
    tracker.finish("finished")


def flatten(config: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"train": {"lr": 1e-4}}`` -> ``{"train.lr": 1e-4}``: the flat parameters that MLflow and
    TensorBoard's hparams take."""
    flat: dict[str, Any] = {}
    for key, value in config.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flatten(value, dotted + "."))
        else:
            flat[dotted] = value
    return flat


RUN_OUTPUTS = ("report.json", "report.md", "metrics.jsonl", "loss_curve.png")
"""The files a training run leaves in its folder that trackers get as its report."""


def report_outputs(tracker: Tracker, out: Path, saved: Path) -> None:
    """Hand a finished training run's report files and its adapter or model folder to
    ``tracker`` (files the run did not write are skipped)."""
    for name in RUN_OUTPUTS:
        tracker.artifact(out / name, "report")
    tracker.artifact(saved, "adapter" if (saved / "adapter_config.json").exists() else "model")
