"""Monitoring: the server's request log, and reports on it with query drift and alerts.

- ``log.py``: :class:`RequestLog` samples, scrubs and stores request records in SQLite (WAL);
- ``scrub.py``: :func:`scrub` removes secret-looking spans from text before it is stored;
- ``drift.py``: MMD^2 with a permutation test, mean-embedding shift, PCA for plots;
- ``figures.py`` / ``report.py``: the figures and the alerts; ``plots.py``: the plots;
- ``files.py``: the report folder (JSON, Markdown, plots);
- ``commands.py``: ``mentor monitor report`` and ``mentor monitor tail``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

# The log is light (sqlite3) and the server imports it; ``scrub`` must be bound eagerly, or
# importing the submodule of the same name would put the module here instead of the function.
from mentor.monitor.log import LogSettings, RequestLog, RequestRecord, read_records
from mentor.monitor.scrub import scrub
from mentor.utils.lazy import lazy_exports

if TYPE_CHECKING:
    from mentor.monitor.files import write_report
    from mentor.monitor.report import (
        Alert,
        DriftSettings,
        MonitorReport,
        Thresholds,
        Windows,
        analyse,
    )

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
        "Alert": "mentor.monitor.report",
        "DriftSettings": "mentor.monitor.report",
        "MonitorReport": "mentor.monitor.report",
        "Thresholds": "mentor.monitor.report",
        "Windows": "mentor.monitor.report",
        "analyse": "mentor.monitor.report",
        "write_report": "mentor.monitor.files",
    },
)
