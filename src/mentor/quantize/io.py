"""A quantized model on disk, and back: safetensors + a JSON manifest + config and tokenizer.

A folder holds:

- ``quantized.safetensors``: the state dict with each quantized layer's integer codes and
  scales under its own path (``model.layers.0.mlp.up_proj.qweight``, ``.scale`` / ``.scales``,
  ``.offsets``, ``.bias``), everything else under its usual name; a tensor tied to another (a
  head sharing the embedding matrix) is stored once;
- ``mentor_quantized.json``: the :class:`Manifest` (method, group size, every quantized layer
  and how, the base model and its weight fingerprint, the merged adapter if any, versions);
- ``config.json``, ``generation_config.json`` and the tokenizer files, as Hugging Face writes
  them, so ``AutoTokenizer`` and ``AutoConfig`` read the folder directly.

The weights file is deliberately not called ``model.safetensors``: ``from_pretrained`` on this
folder fails instead of filling the quantized layers with random weights. Use
:func:`load_quantized`. Folders are written atomically.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from safetensors.torch import load_file, save_file

from mentor import __version__
from mentor.models.backends import QUANTIZED_MANIFEST
from mentor.quantize.convert import (
    LayerPlan,
    QuantizeError,
    check_method,
    install_empty_layers,
    pack_for_device,
)
from mentor.utils.fs import atomic_dir, read_json_object

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

WEIGHTS_FILE = "quantized.safetensors"
MANIFEST_FILE = QUANTIZED_MANIFEST  # how the engines tell a folder vLLM cannot load
FORMAT_VERSION = 1


@dataclass(frozen=True)
class Manifest:
    """What a quantized folder holds and where it came from."""

    method: str
    """``int8`` or ``int4`` (an untied output head is int8 either way; see ``layers``)."""
    group_size: int | None
    """The int4 group size asked for; a layer may have fallen back to a smaller one."""
    layers: list[LayerPlan]
    base_model: str
    """The registry name or folder the base weights came from."""
    base_fingerprint: str
    """sha256 of the base weights before any adapter merge (``lora.base_fingerprint``)."""
    adapter: dict[str, Any] | None
    """The LoRA adapter merged before quantizing: its folder, rank, alpha and base; or None."""
    dtype: str
    """dtype of the parts left unquantized (embeddings, norms, a tied head)."""
    smooth_alpha: float | None = None
    """SmoothQuant strength the int8 layers were calibrated with; None: not smoothed."""
    calibration: str | None = None
    """The calibration text: a file path, or ``packaged`` (``quantize/calibration.txt``)."""
    tied: dict[str, str] = field(default_factory=dict)
    """State-dict key -> the key whose tensor it shares (stored once)."""
    torch_version: str = torch.__version__
    transformers_version: str = ""
    mentor_version: str = __version__
    created: str = ""
    format: int = FORMAT_VERSION

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["layers"] = [p.to_dict() for p in self.layers]
        return data

    @property
    def fallback_layers(self) -> list[LayerPlan]:
        """Int4 layers that took a smaller group size than asked."""
        return [
            p
            for p in self.layers
            if p.method == "int4" and self.group_size and p.group_size != self.group_size
        ]


def read_manifest(folder: Path) -> Manifest:
    """The manifest of a quantized folder; a missing or bad file is an error naming it."""
    path = Path(folder) / MANIFEST_FILE
    data = read_json_object(path, QuantizeError, f"not a quantized folder (no {MANIFEST_FILE})")
    if data.get("format", FORMAT_VERSION) > FORMAT_VERSION:
        raise QuantizeError(
            f"{path}: format {data['format']} is newer than this mentor reads ({FORMAT_VERSION})"
        )
    try:
        data["layers"] = [LayerPlan.from_dict(p) for p in data["layers"]]
        manifest = Manifest(**data)
    except (KeyError, TypeError) as exc:
        raise QuantizeError(f"{path}: missing or unexpected field ({exc})") from None
    check_method(manifest.method)
    return manifest


def _unique_state(model: torch.nn.Module) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """The state dict with each shared tensor kept once, and the keys that were dropped."""
    unique: dict[str, torch.Tensor] = {}
    tied: dict[str, str] = {}
    seen: dict[tuple[int, int, tuple[int, ...], torch.dtype], str] = {}
    for key, tensor in model.state_dict().items():
        ident = (
            tensor.untyped_storage().data_ptr(),
            tensor.storage_offset(),
            tuple(tensor.shape),
            tensor.dtype,
        )
        if ident in seen:
            tied[key] = seen[ident]
            continue
        seen[ident] = key
        unique[key] = tensor.detach().to("cpu").contiguous()
    return unique, tied


def new_manifest(
    *,
    method: str,
    group_size: int | None,
    layers: list[LayerPlan],
    base_model: str,
    base_fingerprint: str,
    adapter: dict[str, Any] | None,
    dtype: torch.dtype,
    smooth_alpha: float | None = None,
    calibration: str | None = None,
) -> Manifest:
    import transformers

    return Manifest(
        method=method,
        group_size=group_size if method == "int4" else None,
        layers=layers,
        base_model=base_model,
        base_fingerprint=base_fingerprint,
        adapter=adapter,
        dtype=str(dtype).removeprefix("torch."),
        smooth_alpha=smooth_alpha,
        calibration=calibration,
        transformers_version=transformers.__version__,
        created=time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    )


def save_quantized(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    folder: Path,
    manifest: Manifest,
) -> Manifest:
    """Write a quantized ``model`` (before :func:`pack_for_device`) and its tokenizer to ``folder``.

    Returns the manifest as written (with the tied keys filled in)."""
    state, tied = _unique_state(model)
    manifest = replace(manifest, tied=tied)
    with atomic_dir(Path(folder)) as tmp:
        save_file(state, str(tmp / WEIGHTS_FILE), metadata={"format": "pt", "mentor": "quantized"})
        model.config.save_pretrained(tmp)
        if getattr(model, "generation_config", None) is not None:
            model.generation_config.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        (tmp / MANIFEST_FILE).write_text(json.dumps(manifest.to_dict(), indent=2) + "\n")
    return manifest


@contextlib.contextmanager
def _skip_init() -> Iterator[None]:
    # Every weight is overwritten by the file: skip the random init (seconds for a 0.5B model).
    # The module constructors still run, so non-persistent buffers (rotary tables) are right.
    try:
        from transformers.initialization import no_init_weights
    except ImportError:  # an older transformers: initialise, which is only slower
        yield
        return
    with no_init_weights():
        yield


def compute_dtype(saved: str, device: torch.device) -> torch.dtype:
    """The dtype of the unquantized parts once loaded on ``device``: on CUDA the GPU kernels take
    bf16 activations (fp16 on a GPU without bf16), so everything else computes in it too rather
    than casting around every layer; elsewhere the dtype it was saved in."""
    if device.type == "cuda":
        from mentor.models.loading import preferred_dtype

        return preferred_dtype(device)
    dtype = getattr(torch, saved, None)
    if not isinstance(dtype, torch.dtype):
        raise QuantizeError(f"the manifest's dtype {saved!r} is not a torch dtype")
    return dtype


def load_quantized(
    folder: Path,
    *,
    device: str = "cpu",
    pack: bool = True,
    dtype: torch.dtype | None = None,
    kernels: Mapping[str, str] | None = None,
) -> PreTrainedModel:
    """The causal LM saved in ``folder`` by :func:`save_quantized`, in eval mode on ``device``
    (``auto``: CUDA where there is one).

    ``pack`` gives each quantized layer its device's kernel (:func:`.convert.pack_for_device`;
    ``kernels`` forces one per method, e.g. ``{"int8": "aten"}``): int4 about 60x faster on a
    CPU, and on CUDA both methods read fewer bytes than bf16; a packed int4 model can no longer
    be saved. ``dtype`` is that of the unquantized parts (default :func:`compute_dtype`). The
    tokenizer loads with ``AutoTokenizer.from_pretrained(folder)``.
    """
    from transformers import AutoConfig, AutoModelForCausalLM, GenerationConfig

    from mentor.models.loading import resolve_device

    folder = Path(folder)
    manifest = read_manifest(folder)
    target = resolve_device(device)
    config = AutoConfig.from_pretrained(str(folder))
    with _skip_init():
        model: PreTrainedModel = AutoModelForCausalLM.from_config(  # type: ignore[no-untyped-call]
            config, dtype=dtype or compute_dtype(manifest.dtype, target)
        )
    model.tie_weights()  # part of the init skipped above: a tied head shares the embeddings
    install_empty_layers(model, manifest.layers)
    try:
        state = load_file(str(folder / WEIGHTS_FILE))
    except FileNotFoundError:
        raise QuantizeError(f"{folder}: no {WEIGHTS_FILE}") from None
    except Exception as exc:  # safetensors raises its own error type for a damaged file
        raise QuantizeError(f"{folder / WEIGHTS_FILE}: not readable ({exc})") from None
    for alias, source in manifest.tied.items():
        if source in state:
            state[alias] = state[source]
    try:
        result = model.load_state_dict(state, strict=False)
    except RuntimeError as exc:  # a shape that differs from the manifest's
        raise QuantizeError(f"{folder / WEIGHTS_FILE}: does not fit its manifest: {exc}") from None
    if result.missing_keys or result.unexpected_keys:
        parts = [
            f"{len(keys)} {what} (e.g. {keys[0]})"
            for what, keys in (
                ("tensors missing", result.missing_keys),
                ("unexpected tensors", result.unexpected_keys),
            )
            if keys
        ]
        raise QuantizeError(
            f"{folder / WEIGHTS_FILE}: does not match its manifest: {'; '.join(parts)}"
        )
    if (folder / "generation_config.json").exists():
        model.generation_config = GenerationConfig.from_pretrained(str(folder))
    model.to(target)  # type: ignore[arg-type]
    model.eval()  # type: ignore[no-untyped-call]
    if pack:
        pack_for_device(model, kernels)
    return model
