"""The report folder: ``report.json``, ``report.md`` and the PNG plots of one analysis.

write_report(analyse(read_records(Path("requests.db")), embedder=None), Path("monitor-report"))
"""

from __future__ import annotations

import json
from pathlib import Path

from mentor.monitor.plots import write_plots
from mentor.monitor.report import Analysis, markdown
from mentor.utils.fs import atomic_write_text


def write_report(analysis: Analysis, out: Path) -> list[Path]:
    """Write ``report.json``, ``report.md`` and the plots into ``out``; return their paths."""
    out.mkdir(parents=True, exist_ok=True)
    plots = write_plots(analysis, out)
    report = analysis.report
    atomic_write_text(out / "report.json", json.dumps(report.to_dict(), indent=2) + "\n")
    atomic_write_text(out / "report.md", markdown(report, [p.name for p in plots]))
    return [out / "report.json", out / "report.md", *plots]
