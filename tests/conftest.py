"""Shared test setup: no network, and a private MENTOR_HOME per test.

Tests marked ``packaged`` use the real models that ship inside PyPI packages; they share one
cache (``$MENTOR_TEST_HOME``, else the user's ``~/.cache/mentor``) so each model is pulled once
per machine, not once per test.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def _packaged_home() -> Path:
    explicit = os.environ.get("MENTOR_TEST_HOME") or os.environ.get("MENTOR_HOME")
    return Path(explicit) if explicit else Path.home() / ".cache" / "mentor"


_PACKAGED_HOME = _packaged_home()


@pytest.fixture(autouse=True)
def _mentor_home(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Path]:
    packaged = request.node.get_closest_marker("packaged") is not None
    home = _PACKAGED_HOME if packaged else tmp_path_factory.mktemp("mentor-home")
    old = os.environ.get("MENTOR_HOME")
    os.environ["MENTOR_HOME"] = str(home)
    yield home
    if old is None:
        os.environ.pop("MENTOR_HOME", None)
    else:
        os.environ["MENTOR_HOME"] = old
