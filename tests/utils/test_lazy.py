"""Lazy package exports: imported on first read, cached, unknown names refused."""

from __future__ import annotations

import subprocess
import sys

import pytest

import mentor.monitor


def test_exports_load_on_first_read_and_stay() -> None:
    from mentor.monitor.report import analyse
    from mentor.monitor.scrubbing import scrub

    assert mentor.monitor.analyse is analyse
    assert "analyse" in vars(mentor.monitor)  # cached: the hook is not called again
    assert mentor.monitor.scrub is scrub  # the function (its module is scrubbing.py)
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        mentor.monitor.nope  # noqa: B018


def test_the_cli_does_not_load_the_advisor_or_monitor_modules() -> None:
    code = (
        "import sys, mentor.cli; "
        "print(sorted(m for m in sys.modules if m in ('mentor.advisor.costs', "
        "'mentor.monitor.report', 'mentor.quantize.recipe')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
