"""Monitoring: the server's request log, and reports on it with query drift and alerts.

- ``log.py``: :class:`RequestLog` samples, scrubs and stores request records in SQLite (WAL);
- ``scrub.py``: :func:`scrub` removes secret-looking spans from text before it is stored;
- ``drift.py``: MMD^2 with a permutation test, mean-embedding shift, PCA for plots;
- ``figures.py`` / ``report.py`` / ``plots.py``: the figures, alerts, report files and plots;
- ``commands.py``: ``mentor monitor report`` and ``mentor monitor tail``.
"""

from mentor.monitor.log import LogSettings, RequestLog, RequestRecord, read_records
from mentor.monitor.report import (
    Alert,
    DriftSettings,
    MonitorReport,
    Thresholds,
    Windows,
    analyse,
    write_report,
)
from mentor.monitor.scrub import scrub

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
