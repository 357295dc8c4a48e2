"""Monitoring: the server's request log, and reports on it with query drift and alerts.

- ``log.py``: :class:`RequestLog` samples, scrubs and stores request records in SQLite (WAL);
- ``scrubbing.py``: :func:`scrub` removes secret-looking spans from text before it is stored;
- ``drift.py``: MMD^2 with a permutation test, mean-embedding shift, PCA for plots;
- ``figures.py`` / ``report.py``: the figures and the alerts; ``plots.py``: the plots;
- ``files.py``: the report folder (JSON, Markdown, plots);
- ``commands.py``: ``mentor monitor report`` and ``mentor monitor tail``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from mentor.utils.lazy import lazy_exports

if TYPE_CHECKING:
    from mentor.monitor.files import write_report
    from mentor.monitor.log import LogSettings, RequestLog, RequestRecord, read_records
    from mentor.monitor.report import (
        Alert,
        DriftSettings,
        MonitorReport,
        Thresholds,
        Windows,
        analyse,
    )
    from mentor.monitor.scrubbing import scrub

__all__ = [
    "Alert",
    "DriftSettings",
    "LogSettings",
    "MonitorReport",
    "RequestLog",
    "RequestRecord",
    "Thresholds",
    "Windows",
    "analyse",
    "read_records",
    "scrub",
    "write_report",
]

__getattr__ = lazy_exports(
    __name__,
    {
        "write_report": "mentor.monitor.files",
        "LogSettings": "mentor.monitor.log",
        "RequestLog": "mentor.monitor.log",
        "RequestRecord": "mentor.monitor.log",
        "read_records": "mentor.monitor.log",
        "Alert": "mentor.monitor.report",
        "DriftSettings": "mentor.monitor.report",
        "MonitorReport": "mentor.monitor.report",
        "Thresholds": "mentor.monitor.report",
        "Windows": "mentor.monitor.report",
        "analyse": "mentor.monitor.report",
        "scrub": "mentor.monitor.scrubbing",
    },
)
