"""Fixtures shared by the dataset-layer tests: writing small JSONL/CSV files into tmp_path."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pytest

Content = str | bytes | Sequence[dict[str, Any] | str]
Writer = Callable[[str, Content], Path]


@pytest.fixture
def write(tmp_path: Path) -> Writer:
    """Write a file under tmp_path: text, bytes, or JSONL rows (a str row is written as is)."""

    def _write(name: str, content: Content) -> Path:
        path = tmp_path / name
        if isinstance(content, bytes):
            path.write_bytes(content)
        elif isinstance(content, str):
            path.write_text(content, encoding="utf-8")
        else:
            lines = [r if isinstance(r, str) else json.dumps(r) for r in content]
            path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
        return path

    return _write
