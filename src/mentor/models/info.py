"""Describe a cached model without loading it: parameters, dtype, vocabulary, context, size.

Parameter counts and dtypes come from the safetensors headers, so ``mentor models info`` is
instant even for models of several GB.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from safetensors import safe_open

from mentor.models.hub import Manifest, NotPulledError, model_dir
from mentor.models.registry import REGISTRY
from mentor.utils.fs import dir_size


@dataclass
class ModelInfo:
    name: str
    kind: str
    path: Path
    params: int
    dtype: str
    """The dtype holding most parameters."""
    vocab_size: int | None
    context_length: int | None
    hidden_size: int | None
    layers: int | None
    architecture: str
    size_bytes: int
    license: str
    upstream: str
    provenance: dict[str, str]


def tensor_stats(folder: Path) -> tuple[int, str]:
    """(parameter count, dominant dtype) over every ``*.safetensors`` file of ``folder``."""
    total = 0
    by_dtype: Counter[str] = Counter()
    for path in sorted(folder.rglob("*.safetensors")):
        with safe_open(str(path), framework="pt") as fh:
            for key in fh.keys():  # noqa: SIM118 (safe_open is not a mapping)
                piece = fh.get_slice(key)
                count = 1
                for dim in piece.get_shape():
                    count *= dim
                total += count
                by_dtype[str(piece.get_dtype())] += count
    dtype = by_dtype.most_common(1)[0][0] if by_dtype else "?"
    return total, dtype


def _config(folder: Path) -> dict[str, object]:
    path = folder / "config.json"
    return json.loads(path.read_text()) if path.exists() else {}


def _int(value: object) -> int | None:
    return value if isinstance(value, int) else None


def info(name: str) -> ModelInfo:
    folder = model_dir(name)
    if folder is None:
        raise NotPulledError(f"{name} is not pulled; run: mentor models pull {name}")
    manifest = Manifest.read(folder)
    config = _config(folder)
    params, dtype = tensor_stats(folder)
    spec = REGISTRY.get(name)
    context = _int(config.get("max_position_embeddings"))
    st_config = folder / "sentence_bert_config.json"
    if st_config.exists():  # an embedder truncates at its own max_seq_length
        context = _int(json.loads(st_config.read_text()).get("max_seq_length")) or context
    architectures = config.get("architectures")
    arch = architectures[0] if isinstance(architectures, list) and architectures else "?"
    return ModelInfo(
        name=name,
        kind=manifest.kind,
        path=folder,
        params=params,
        dtype=dtype,
        vocab_size=_int(config.get("vocab_size")),
        context_length=context,
        hidden_size=_int(config.get("hidden_size")),
        layers=_int(config.get("num_hidden_layers")),
        architecture=str(arch),
        size_bytes=dir_size(folder),
        license=spec.license if spec else "see the model's own files",
        upstream=spec.upstream if spec else manifest.provenance.get("repo", "?"),
        provenance=manifest.provenance,
    )
