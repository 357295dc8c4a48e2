"""The model cache: pull, verify, list and describe models under ``$MENTOR_HOME/models``.

Layout::

    $MENTOR_HOME/models/<name>            -> .store/<name>-<id>   (a symlink, swapped atomically)
    $MENTOR_HOME/models/.store/<name>-<id>/mentor.json            (manifest: sha256 of every file)
    $MENTOR_HOME/packages/<dist>-<version>/                        (PyPI packages, kept for repair)

A pull builds the new folder beside the old one and swaps the symlink in one rename, so a pull
killed at any moment leaves either the old model or the new one; the next pull finds the
packages already installed and finishes the work.
"""

from __future__ import annotations

import hashlib
import json
import re
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from filelock import FileLock

from mentor import __version__
from mentor.models.convert import materialize
from mentor.models.registry import REGISTRY, ModelKind, get_spec
from mentor.models.sources import (
    ChecksumError,
    HubRepo,
    LocalFolder,
    Progress,
    Source,
    SourceError,
    no_progress,
)
from mentor.utils.fs import (
    atomic_write_text,
    dir_size,
    make_temp_dir,
    mentor_home,
    remove_tree,
    replace_symlink,
    sha256_file,
)

MANIFEST = "mentor.json"
Log = Callable[[str], None]


class PullError(RuntimeError):
    """No source could deliver the model; the message lists what each source said."""


class NotPulledError(RuntimeError):
    """The model is not in the cache."""


def models_root() -> Path:
    return mentor_home() / "models"


def _store() -> Path:
    return models_root() / ".store"


def cache_name(name: str) -> str:
    """Folder-safe cache name: ``hf:Org/Model`` becomes ``Org--Model``."""
    name = name.removeprefix("hf:")
    return re.sub(r"[^A-Za-z0-9._-]+", "--", name).strip("-")


def model_dir(name: str) -> Path | None:
    """The cached folder of ``name``, or None when it was never pulled (or its link is dangling)."""
    link = models_root() / cache_name(name)
    if link.is_symlink() or link.is_dir():
        target = link.resolve()
        if (target / MANIFEST).is_file():
            return target
    return None


# --- manifests and verification ---------------------------------------------------------------


@dataclass
class Manifest:
    name: str
    kind: ModelKind
    provenance: dict[str, str]
    files: dict[str, dict[str, Any]]
    """Relative path -> {"sha256": ..., "size": ...} of every file of the folder."""
    created: str = ""
    mentor_version: str = __version__
    store_dtype: str = ""

    @classmethod
    def read(cls, folder: Path) -> Manifest:
        data = json.loads((folder / MANIFEST).read_text())
        return cls(**data)

    def write(self, folder: Path) -> None:
        atomic_write_text(folder / MANIFEST, json.dumps(self.__dict__, indent=2, sort_keys=True))


def pulled_gguf(folder: Path) -> Path | None:
    """The GGUF file a pulled folder was converted from (a packaged or local GGUF), if it is
    still on this machine: the folder's weights are that file's, dequantized."""
    from mentor.models.sources import Dist, ensure_dist

    provenance = _read_provenance(folder)
    if provenance.get("source") == "local" and provenance.get("path", "").endswith(".gguf"):
        path = Path(provenance["path"])
        return path if path.is_file() else None
    if provenance.get("source") == "pypi" and provenance.get("file", "").endswith(".gguf"):
        name, _, version = provenance.get("package", "").partition("==")
        try:
            path = ensure_dist(Dist(name, version)) / provenance["file"]
        except SourceError:
            return None
        return path if path.is_file() else None
    return None


def gguf_quantization(path: Path) -> str:
    """The ggml file type of a GGUF file as llama.cpp names it (``Q4_1``, ``Q8_0``, ``F16``), read
    from its header; the name's tag (``model.Q4_K_M.gguf``) when the header has none."""
    import gguf

    reader = gguf.GGUFReader(str(path))
    field_ = reader.get_field(gguf.Keys.General.FILE_TYPE)
    if field_ is not None:
        kind = gguf.LlamaFileType(int(field_.contents()))
        return kind.name.removeprefix("MOSTLY_")
    return _name_tag(path.name)


def _name_tag(name: str) -> str:
    tag = re.search(r"[.-]((?:[QI]Q?\d\w*)|F16|BF16|F32)\.gguf$", name, re.IGNORECASE)
    return tag.group(1).upper() if tag else "unknown"


def dequantized_from(folder: Path) -> dict[str, str] | None:
    """What a pulled folder's weights are when they are not an upstream checkpoint: the GGUF
    they were dequantized from (file, package or path, sha256 and its quantization); None for a
    folder pulled as safetensors (or not pulled by mentor)."""
    provenance = _read_provenance(folder)
    name = provenance.get("file") or provenance.get("path") or ""
    if not name.endswith(".gguf"):
        return None
    origin = {k: v for k, v in provenance.items() if k in ("source", "package", "file", "path")}
    if "sha256" in provenance:
        origin["sha256"] = provenance["sha256"]
    path = pulled_gguf(folder)
    origin["quantization"] = gguf_quantization(path) if path is not None else _name_tag(name)
    return origin


def _hash_folder(folder: Path) -> dict[str, dict[str, Any]]:
    return {
        str(p.relative_to(folder)): {"sha256": sha256_file(p), "size": p.stat().st_size}
        for p in sorted(folder.rglob("*"))
        if p.is_file() and p.name != MANIFEST
    }


def weights_fingerprint(folder: Path) -> str:
    """sha256 naming a model folder's weights, without loading them.

    From the manifest's file hashes when the folder has one (pulled models), else from the
    ``*.safetensors`` files themselves (a local folder: read once, a few seconds per GB)."""
    digest = hashlib.sha256()
    try:
        files = Manifest.read(folder).files
        weights = {
            rel: meta["sha256"] for rel, meta in files.items() if rel.endswith(".safetensors")
        }
    except (OSError, ValueError, TypeError, KeyError):
        weights = {}
    if not weights:
        weights = {
            str(p.relative_to(folder)): sha256_file(p)
            for p in sorted(folder.rglob("*.safetensors"))
        }
    if not weights:
        raise ValueError(f"{folder}: no safetensors weights to fingerprint")
    for rel in sorted(weights):
        digest.update(f"{rel}:{weights[rel]};".encode())
    return digest.hexdigest()


@dataclass
class VerifyResult:
    name: str
    ok: bool
    problems: list[str] = field(default_factory=list)
    """One line per damaged, missing or unexpected file, naming the file."""


def verify_folder(folder: Path, name: str, *, full: bool = True) -> VerifyResult:
    """Check every file against the manifest: sha256 when ``full``, sizes only otherwise."""
    try:
        manifest = Manifest.read(folder)
    except (OSError, ValueError, TypeError) as exc:
        return VerifyResult(name, False, [f"{folder / MANIFEST}: unreadable manifest ({exc})"])
    problems: list[str] = []
    for rel, meta in manifest.files.items():
        path = folder / rel
        if not path.is_file():
            problems.append(f"{path}: missing")
        elif path.stat().st_size != meta["size"]:
            problems.append(f"{path}: size {path.stat().st_size}, expected {meta['size']}")
        elif full and sha256_file(path) != meta["sha256"]:
            problems.append(f"{path}: sha256 differs from the manifest (the file was changed)")
    known = set(manifest.files) | {MANIFEST}
    for path in sorted(folder.rglob("*")):
        if path.is_file() and str(path.relative_to(folder)) not in known:
            problems.append(f"{path}: not part of the model")
    spec = REGISTRY.get(name)
    pinned = getattr(spec.packaged, "sha256", None) if spec else None
    from_pypi = manifest.provenance.get("source") == "pypi"
    if isinstance(pinned, str) and from_pypi and manifest.provenance.get("sha256") != pinned:
        problems.append(f"{folder}: built from a file the registry no longer pins; pull again")
    return VerifyResult(name, not problems, problems)


def verify(name: str) -> VerifyResult:
    folder = model_dir(name)
    if folder is None:
        return VerifyResult(name, False, [f"{name}: not pulled (run: mentor models pull {name})"])
    return verify_folder(folder, name)


# --- pulling ----------------------------------------------------------------------------------


@dataclass
class PullResult:
    name: str
    path: Path
    action: str
    """"pulled", "repaired" or "cached"."""
    source: str
    seconds: float


def _sources_for(name: str, source: Path | None) -> tuple[str, ModelKind | None, str, list[Source]]:
    """(cache name, kind if known, store dtype, sources in order) for a pull request."""
    if source is not None:
        return cache_name(name), None, "float32", [LocalFolder(source)]
    if name in REGISTRY:
        spec = get_spec(name)
        return name, spec.kind, spec.store_dtype, spec.sources()
    if name.startswith("hf:"):
        return cache_name(name), None, "float32", [HubRepo(name.removeprefix("hf:"))]
    cached = model_dir(name)
    if cached is None:
        get_spec(name)  # raises the helpful "unknown model" error
        raise AssertionError("unreachable")
    # A model pulled earlier from a folder or the hub is rebuilt from where it came from.
    provenance = _read_provenance(cached)
    again: list[Source] = []
    if provenance.get("source") == "local":
        again.append(LocalFolder(Path(provenance["path"])))
    elif provenance.get("source") == "hub":
        again.append(HubRepo(provenance["repo"], provenance.get("revision")))
    return cache_name(name), None, "float32", again


def _read_provenance(folder: Path) -> dict[str, str]:
    try:
        return Manifest.read(folder).provenance
    except (OSError, ValueError, TypeError):
        return {}


def _detect_kind(folder: Path) -> ModelKind:
    return "embedder" if (folder / "modules.json").exists() else "causal-lm"


def _clean_leftovers(name: str) -> None:
    """Remove work and staging folders that a killed pull of ``name`` left behind."""
    store = _store()
    if store.exists():
        for path in store.glob(f".*-{name}-*"):
            remove_tree(path)


def pull(
    name: str,
    *,
    source: Path | None = None,
    force: bool = False,
    log: Log = lambda _: None,
    progress: Progress = no_progress,
) -> PullResult:
    """Make ``name`` available in the cache, repairing it if a file was damaged.

    ``source`` pulls from a local folder or GGUF file under the given name instead of the
    registry's sources. A checksum mismatch is refused and leaves the cache as it was.
    """
    started = time.monotonic()
    key, kind, store_dtype, sources = _sources_for(name, source)
    _store().mkdir(parents=True, exist_ok=True)
    (models_root() / ".locks").mkdir(parents=True, exist_ok=True)
    with FileLock(str(models_root() / ".locks" / f"{key}.lock")):
        current = model_dir(key)
        action = "pulled"
        if current is not None and not force and source is None:
            check = verify_folder(current, key)
            if check.ok:
                return PullResult(key, current, "cached", "cache", time.monotonic() - started)
            log(f"{key}: the cached copy is damaged, repairing:\n  " + "\n  ".join(check.problems))
            action = "repaired"
        _clean_leftovers(key)
        failures: list[str] = []
        for src in sources:
            log(f"{key}: fetching from {src.describe()}")
            try:
                final = _build_from(src, key, kind, store_dtype, log, progress)
            except ChecksumError:
                raise
            except SourceError as exc:
                failures.append(f"- {src.describe()}: {exc}")
                continue
            replace_symlink(models_root() / key, final.relative_to(models_root()))
            if current is not None and current != final:
                remove_tree(current)
            return PullResult(key, final, action, src.describe(), time.monotonic() - started)
    if not failures:
        failures.append(f"- {name} has no source left to rebuild it from; use --from PATH")
    raise PullError(f"could not pull {name}:\n" + "\n".join(failures))


def _build_from(
    src: Source, key: str, kind: ModelKind | None, store_dtype: str, log: Log, progress: Progress
) -> Path:
    store = _store()
    work = make_temp_dir(store, f".work-{key}-")
    staging = make_temp_dir(store, f".staging-{key}-")
    try:
        fetched = src.fetch(work, progress)
        log(f"{key}: converting {fetched.format} into a safetensors folder")
        materialize(fetched, staging, store_dtype=store_dtype, workdir=work)
        manifest = Manifest(
            name=key,
            kind=kind or _detect_kind(staging),
            provenance=fetched.provenance,
            files=_hash_folder(staging),
            created=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            store_dtype=store_dtype if fetched.format == "gguf" else "as published",
        )
        manifest.write(staging)
        final = store / f"{key}-{uuid.uuid4().hex[:8]}"
        staging.rename(final)
        return final
    finally:
        remove_tree(work)
        remove_tree(staging)


# --- listing and describing -------------------------------------------------------------------


@dataclass
class ModelStatus:
    name: str
    kind: str
    status: str
    """"pulled", "not pulled" or "damaged" (size check only; ``verify`` hashes everything)."""
    size_bytes: int
    description: str
    in_registry: bool


def list_models() -> list[ModelStatus]:
    rows: list[ModelStatus] = []
    seen: set[str] = set()
    for name, spec in REGISTRY.items():
        rows.append(_status(name, spec.kind, spec.description, True))
        seen.add(name)
    root = models_root()
    if root.exists():
        for link in sorted(root.iterdir()):
            if link.name.startswith(".") or link.name in seen:
                continue
            folder = model_dir(link.name)
            kind = Manifest.read(folder).kind if folder else "?"
            rows.append(_status(link.name, kind, "pulled from a local folder or the hub", False))
    return rows


def _status(name: str, kind: str, description: str, in_registry: bool) -> ModelStatus:
    folder = model_dir(name)
    if folder is None:
        return ModelStatus(name, kind, "not pulled", 0, description, in_registry)
    ok = verify_folder(folder, name, full=False).ok
    return ModelStatus(
        name, kind, "pulled" if ok else "damaged", dir_size(folder), description, in_registry
    )
