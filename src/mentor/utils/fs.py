"""Atomic writes, hashing and the mentor cache folder.

Every file mentor writes that a user may rely on later (cached models, manifests, checkpoints,
indexes) goes through these helpers, so that a process killed at any moment leaves either the
old file or the new one, never half of one.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

_CHUNK = 1 << 20


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_FILE_MODE = 0o666 & ~_umask()
_DIR_MODE = 0o777 & ~_umask()


def mentor_home() -> Path:
    """The cache root: ``$MENTOR_HOME``, or ``~/.cache/mentor``."""
    env = os.environ.get("MENTOR_HOME")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "mentor"


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while block := fh.read(_CHUNK):
            digest.update(block)
    return digest.hexdigest()


def _fsync_dir(path: Path) -> None:
    with contextlib.suppress(OSError):  # not every filesystem lets a directory be opened
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


@contextlib.contextmanager
def atomic_path(target: Path) -> Iterator[Path]:
    """Yield a temporary path beside ``target``; move it into place only if the block succeeds."""
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    tmp.chmod(_FILE_MODE)  # mkstemp makes it owner-only; a cache is often shared
    try:
        yield tmp
        with tmp.open("rb+") as fh:
            os.fsync(fh.fileno())
        tmp.replace(target)
        _fsync_dir(target.parent)
    finally:
        tmp.unlink(missing_ok=True)


def atomic_write_bytes(target: Path, data: bytes) -> None:
    with atomic_path(target) as tmp:
        tmp.write_bytes(data)


def atomic_write_text(target: Path, text: str) -> None:
    atomic_write_bytes(target, text.encode("utf-8"))


@contextlib.contextmanager
def atomic_dir(target: Path) -> Iterator[Path]:
    """Yield an empty folder beside ``target``; if the block succeeds it replaces ``target``.

    A failure (or a kill) part way leaves ``target`` as it was; the old copy is swapped out by
    two renames and removed only once the new one is in place."""
    tmp = make_temp_dir(target.parent, f".{target.name}.")
    try:
        yield tmp
        for path in tmp.rglob("*"):
            if path.is_file():
                with path.open("rb") as fh:
                    os.fsync(fh.fileno())
        old = target.with_name(f".{target.name}.old-{os.getpid()}")
        if target.exists():
            target.replace(old)
        tmp.replace(target)
        _fsync_dir(target.parent)
        remove_tree(old)
    finally:
        remove_tree(tmp)


def replace_symlink(link: Path, target: Path) -> None:
    """Point ``link`` at ``target`` in one atomic step (a rename over the old link)."""
    link.parent.mkdir(parents=True, exist_ok=True)
    tmp = link.with_name(f".{link.name}.{os.getpid()}.lnk")
    tmp.unlink(missing_ok=True)
    tmp.symlink_to(target)
    tmp.replace(link)
    _fsync_dir(link.parent)


def make_temp_dir(parent: Path, prefix: str) -> Path:
    """A fresh folder under ``parent`` with ordinary permissions (mkdtemp's are owner-only)."""
    parent.mkdir(parents=True, exist_ok=True)
    path = Path(tempfile.mkdtemp(prefix=prefix, dir=parent))
    path.chmod(_DIR_MODE)
    return path


def dir_size(path: Path) -> int:
    """Bytes used by the regular files under ``path`` (symlinks are not followed)."""
    if not path.exists():
        return 0
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file() and not p.is_symlink())


def remove_tree(path: Path) -> None:
    """Delete a file or folder if present; a link is removed, never followed."""
    if path.is_symlink() or path.is_file():
        path.unlink(missing_ok=True)
    elif path.exists():
        shutil.rmtree(path, ignore_errors=True)


def human_bytes(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if abs(n) < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    raise AssertionError("unreachable")


def read_json_object(path: Path, error: type[Exception], missing: str) -> dict[str, Any]:
    """The JSON object in ``path``; ``error`` naming the file (and line) when it is absent
    (``f"{path.parent}: {missing}"``), not JSON, or not an object."""
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise error(f"{path.parent}: {missing}") from None
    except json.JSONDecodeError as exc:
        raise error(f"{path}: invalid JSON ({exc.msg}, line {exc.lineno})") from None
    if not isinstance(data, dict):
        raise error(f"{path}: expected a JSON object")
    return data
