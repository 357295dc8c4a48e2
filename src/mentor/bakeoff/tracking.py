"""What ``mentor bakeoff --report-to ...`` hands the trackers. While it runs, each model it trains
reports its steps as they happen (``MODEL/loss``, ``MODEL/val_loss``: the training entry's name,
shared by the arms that use it). Once the arms are measured: the curves of models reused from an
earlier run (the same names, once each), every arm's scores as metrics (``score/ARM/METRIC``),
the scores table ``scores.csv``, the reports, and the recommended arm's GGUF file when the
verdict wrote one.

The table holds one row per arm: status, each quality metric, the paired gain over the base in
points, latency p50 in ms, peak memory in MB and the yearly cost in USD.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Set
from pathlib import Path

from mentor.bakeoff.results import ArmResult, BakeoffResult
from mentor.utils.fs import atomic_write_text
from mentor.utils.tracking import Tracker

SCORES_FILE = "scores.csv"


def scores_table(result: BakeoffResult) -> list[dict[str, str | float | None]]:
    """One row per arm, in report order."""
    return [_row(arm, result.metrics) for arm in result.arms]


def _row(arm: ArmResult, metrics: list[str]) -> dict[str, str | float | None]:
    row: dict[str, str | float | None] = {"arm": arm.name, "status": arm.status}
    for metric in metrics:
        estimate = arm.quality.get(metric)
        row[metric] = estimate.value if estimate else None
    row["vs_base_points"] = arm.vs_base.value if arm.vs_base else None
    row["latency_p50_ms"] = arm.latency_ms.get("p50")
    row["peak_memory_mb"] = arm.peak_memory_mb or None
    row["yearly_usd"] = arm.costs.yearly_usd if arm.costs else None
    return row


def write_scores(result: BakeoffResult, path: Path) -> Path:
    rows = scores_table(result)
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(rows[0]) if rows else ["arm"])
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(path, buffer.getvalue())
    return path


def report_bakeoff(
    tracker: Tracker, result: BakeoffResult, out: Path, *, logged: Set[str] = frozenset()
) -> None:
    """Curves (of the models not in ``logged``: those already reported step by step), scores,
    the table, the reports and the exported model of a finished bakeoff, to ``tracker``."""
    curves = {arm.model: arm.curve for arm in result.arms if arm.curve}
    for model, curve in curves.items():
        if model in logged:
            continue
        for point in curve:
            values = {f"{model}/{k}": v for k, v in point.items() if k != "step"}
            tracker.log(values, int(point["step"]))
    scores = {
        f"score/{row['arm']}/{key}": value
        for row in scores_table(result)
        for key, value in row.items()
        if isinstance(value, float | int) and not isinstance(value, bool)
    }
    if scores:
        tracker.log(scores, 0)
    tracker.artifact(write_scores(result, out / SCORES_FILE), "table")
    for name in ("report.json", "report.html"):
        tracker.artifact(out / name, "report")
    exported = result.verdict.export if result.verdict is not None else None
    if exported is not None and exported.path is not None:
        tracker.artifact(Path(exported.path), "model")
