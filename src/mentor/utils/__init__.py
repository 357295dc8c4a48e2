"""Small shared helpers: atomic file writes, hashing, the cache location, lazy package exports
and the one error exit of the command line.

- ``fs.py``: atomic writes and folders, sha256, sizes, :func:`mentor_home`;
- ``cli.py``: :func:`fail`; ``lazy.py``: :func:`lazy_exports`, which every ``__init__`` uses;
- ``config.py``: the YAML reader of every config; ``progress.py``: rich progress bars;
  ``logs.py``: quiet third-party logging;
- ``tracking.py``: the :class:`Tracker` protocol and ``tracking()`` (``--report-to``);
  ``trackers.py``: its four backends (trackio, wandb, mlflow, tensorboard).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from mentor.utils.lazy import lazy_exports

if TYPE_CHECKING:
    from mentor.utils.cli import fail
    from mentor.utils.fs import (
        atomic_dir,
        atomic_write_bytes,
        atomic_write_text,
        human_bytes,
        mentor_home,
        sha256_file,
    )
    from mentor.utils.lazy import lazy_exports
    from mentor.utils.tracking import Tracker

__all__ = [
    "Tracker",
    "atomic_dir",
    "atomic_write_bytes",
    "atomic_write_text",
    "fail",
    "human_bytes",
    "lazy_exports",
    "mentor_home",
    "sha256_file",
]

__getattr__ = lazy_exports(
    __name__,
    {
        "fail": "mentor.utils.cli",
        "atomic_dir": "mentor.utils.fs",
        "atomic_write_bytes": "mentor.utils.fs",
        "atomic_write_text": "mentor.utils.fs",
        "human_bytes": "mentor.utils.fs",
        "mentor_home": "mentor.utils.fs",
        "sha256_file": "mentor.utils.fs",
        "lazy_exports": "mentor.utils.lazy",
        "Tracker": "mentor.utils.tracking",
    },
)
