"""``mentor quantize`` as one function: load, merge an adapter, measure, quantize, save, measure.

    base (fp32) ──► + adapter merged ──► measured ──► quantized in place ──► saved
                                                                               │
                           report.json / report.md ◄── measured ◄── loaded back (fresh)

The reference is the fp32 model after the merge, so the report shows what quantizing alone
changed; on CUDA, where the quantized model computes in bf16 (:func:`~.io.compute_dtype`), the
reference is measured as a bf16 copy, so that the speed ratio is about the kernels alone. The
quantized model is measured as :func:`~mentor.quantize.io.load_quantized` gives it back from the
folder, the artifact a server would use, not the object still in memory.
"""

from __future__ import annotations

import gc
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.console import Console

from mentor.quantize.convert import (
    METHODS,
    LayerPlan,
    QuantizeError,
    check_method,
    plan_layers,
    quantize_model,
)
from mentor.quantize.io import (
    WEIGHTS_FILE,
    Manifest,
    compute_dtype,
    load_quantized,
    new_manifest,
    save_quantized,
)
from mentor.quantize.report import (
    Measurement,
    Quality,
    QuantizeReport,
    compare_quality,
    fp32_file_bytes,
    measure,
)
from mentor.quantize.smooth import DEFAULT_ALPHA, calibration_sample, smoothing
from mentor.utils.fs import atomic_write_text
from mentor.utils.progress import progress_bar

if TYPE_CHECKING:
    import torch
    from torch import nn
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

    from mentor.evaluate.answers import EvalItem


@dataclass(frozen=True)
class QuantizeSettings:
    """One ``mentor quantize`` run."""

    model: str = field(metadata={"help": "Registry name (smollm2-135m-instruct) or model folder."})
    method: str = field(metadata={"help": f"Quantization level: {', '.join(METHODS)}."})
    group_size: int = field(
        default=128,
        metadata={"help": "int4: inputs per scale; 32, 64, 128 or 256 run the fast CPU kernel."},
    )
    adapter: Path | None = field(
        default=None, metadata={"help": "LoRA adapter folder merged into the base first."}
    )
    out: Path | None = field(
        default=None, metadata={"help": "Folder for the quantized model [runs/quantize/NAME-TO]."}
    )
    eval: Path | None = field(
        default=None, metadata={"help": "Held-out chat/qa JSONL: task metrics of both models."}
    )
    limit: int | None = field(
        default=None, metadata={"help": "Score at most this many held-out examples."}
    )
    text: Path | None = field(
        default=None,
        metadata={"help": "Held-out text for perplexity [the packaged general-English sample]."},
    )
    smooth: bool = field(
        default=True,
        metadata={"help": "Calibrate SmoothQuant factors for the int8 layers (see smooth.py)."},
    )
    alpha: float = field(
        default=DEFAULT_ALPHA,
        metadata={
            "help": "SmoothQuant strength: 0 keeps the outliers in "
            "the activations, 1 moves them all into the weights."
        },
    )
    calibration: Path | None = field(
        default=None,
        metadata={"help": "Calibration text file [the packaged calibration.txt]."},
    )
    device: str = field(default="cpu", metadata={"help": "Device to measure on: cpu, cuda..."})
    new_tokens: int = field(
        default=32, metadata={"help": "Tokens generated per prompt when timing."}
    )
    max_new_tokens: int = field(
        default=128, metadata={"help": "Longest answer to a held-out example."}
    )
    seq_len: int = field(default=512, metadata={"help": "Perplexity window, in tokens."})

    def __post_init__(self) -> None:
        check_method(self.method)
        if self.limit is not None and self.limit < 1:
            raise QuantizeError(f"--limit must be at least 1, got {self.limit}")
        if self.new_tokens < 1:
            raise QuantizeError(f"new_tokens must be at least 1, got {self.new_tokens}")
        if not 0.0 <= self.alpha <= 1.0:
            raise QuantizeError(f"--alpha must be in [0, 1], got {self.alpha}")
        for name in ("eval", "text", "adapter", "calibration"):
            path = getattr(self, name)
            if path is not None and not Path(path).exists():
                raise QuantizeError(f"{path}: no such {'folder' if name == 'adapter' else 'file'}")

    @property
    def out_dir(self) -> Path:
        return self.out or Path("runs/quantize") / f"{Path(self.model).name}-{self.method}"


@dataclass(frozen=True)
class QuantizeResult:
    folder: Path
    manifest: Manifest
    report: QuantizeReport


def merge_adapter(model: nn.Module, folder: Path) -> dict[str, Any]:
    """Fold the LoRA adapter in ``folder`` into ``model``'s weights; returns what the manifest
    records of it. The adapter must have been trained on this base (its fingerprint is checked)."""
    from mentor.train.adapters import load_adapter
    from mentor.train.lora import merge, unwrap

    info = load_adapter(model, folder, name="default")
    merge(model, "default", keep_original=False)
    unwrap(model)
    targets = info.config.targets
    return {
        "path": str(folder),
        "r": info.config.r,
        "alpha": info.config.alpha,
        "targets": list(targets) if isinstance(targets, tuple) else targets,
        "base_model": info.base_model,
        "base_fingerprint": info.base_fingerprint,
    }


def _fallback_note(manifest: Manifest) -> str | None:
    layers = manifest.fallback_layers
    if not layers:
        return None
    widths = sorted({(p.in_features, p.group_size) for p in layers})
    detail = ", ".join(f"in_features {w} -> group size {g}" for w, g in widths)
    return (
        f"{len(layers)} int4 layers took a smaller group size than {manifest.group_size}, which "
        f"does not divide their inputs ({detail})."
    )


def _eval_items(settings: QuantizeSettings) -> list[EvalItem]:
    from mentor.evaluate.answers import load_eval_items

    if settings.eval is None:
        return []
    items = load_eval_items(settings.eval)
    return items[: settings.limit] if settings.limit else items


def _calibrate(
    settings: QuantizeSettings,
    model: nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    plans: list[LayerPlan],
    console: Console,
) -> tuple[dict[str, torch.Tensor], str | None]:
    """SmoothQuant factors for the int8 layers (none when off or when no layer is int8), and
    the name of the calibration text for the manifest."""
    if not settings.smooth or not any(p.method == "int8" for p in plans):
        return {}, None
    source = str(settings.calibration) if settings.calibration else "packaged"
    console.print(f"calibrating SmoothQuant factors (alpha {settings.alpha}) on {source}")
    text = (
        settings.calibration.read_text(encoding="utf-8")
        if settings.calibration
        else calibration_sample()
    )
    return smoothing(model, tokenizer, plans, text, settings.alpha), source


def run_quantize(settings: QuantizeSettings, *, console: Console | None = None) -> QuantizeResult:
    """Run the whole pipeline (see the module doc); writes the folder and its report."""
    from mentor.evaluate.perplexity import general_sample
    from mentor.models.loading import load_causal_lm, load_tokenizer
    from mentor.train.lora import base_fingerprint

    console = console or Console(stderr=True)
    items = _eval_items(settings)
    text = settings.text.read_text(encoding="utf-8") if settings.text else general_sample()
    console.print(f"loading {settings.model} (fp32)")
    model = load_causal_lm(settings.model, dtype="float32", device=settings.device)
    tokenizer = load_tokenizer(settings.model)
    fingerprint = base_fingerprint(model)
    adapter = None
    if settings.adapter is not None:
        console.print(f"merging the adapter {settings.adapter}")
        adapter = merge_adapter(model, settings.adapter)
    plans = plan_layers(model, settings.method, settings.group_size)  # fail before measuring
    common: dict[str, Any] = {
        "text": text,
        "items": items,
        "new_tokens": settings.new_tokens,
        "max_new_tokens": settings.max_new_tokens,
        "seq_len": settings.seq_len,
    }
    reference, ref_quality = _measure_reference(model, tokenizer, common, console)
    manifest = _quantize_save(settings, model, tokenizer, plans, fingerprint, adapter, console)
    folder = settings.out_dir
    del model
    gc.collect()
    console.print(f"saved {folder}; measuring it as loaded back")
    quantized_model = load_quantized(folder, device=settings.device)
    quantized, q_quality = measure(
        settings.method,
        quantized_model,
        tokenizer,
        disk_bytes=(folder / WEIGHTS_FILE).stat().st_size,
        **common,
    )
    report = QuantizeReport(
        model=settings.model,
        method=settings.method,
        group_size=manifest.group_size,
        smooth_alpha=manifest.smooth_alpha,
        adapter=str(settings.adapter) if settings.adapter else None,
        layers=len(manifest.layers),
        fallback_note=_fallback_note(manifest),
        reference=reference,
        quantized=quantized,
        task_changes=compare_quality(ref_quality, q_quality),
        n_eval=len(items),
        new_tokens=settings.new_tokens,
        device=settings.device,
    )
    atomic_write_text(folder / "report.json", json.dumps(report.to_dict(), indent=2) + "\n")
    atomic_write_text(folder / "report.md", report.to_markdown())
    return QuantizeResult(folder, manifest, report)


def _measure_reference(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    common: dict[str, Any],
    console: Console,
) -> tuple[Measurement, Quality | None]:
    """The unquantized model measured in the dtype the quantized one will compute in (a copy
    when that is not fp32); its disk size is an fp32 file's either way."""
    import copy

    import torch

    dtype = compute_dtype("float32", model.device)
    label = str(dtype).removeprefix("torch.").replace("bfloat16", "bf16").replace("float", "fp")
    console.print(f"measuring the {label} reference")
    disk = fp32_file_bytes(model)
    if dtype == torch.float32:
        return measure(label, model, tokenizer, disk_bytes=disk, **common)
    reference = copy.deepcopy(model)
    reference.to(dtype)  # type: ignore[arg-type]
    try:
        return measure(label, reference, tokenizer, disk_bytes=disk, **common)
    finally:
        del reference
        gc.collect()


def _quantize_save(
    settings: QuantizeSettings,
    model: PreTrainedModel,
    tokenizer: Any,
    plans: Any,
    fingerprint: str,
    adapter: dict[str, Any] | None,
    console: Console,
) -> Manifest:
    """Calibrate, quantize ``model`` in place and write it to ``settings.out_dir``."""
    factors, calibration = _calibrate(settings, model, tokenizer, plans, console)
    with progress_bar(console) as bar:
        task = bar.add_task(f"quantizing to {settings.method}", total=None)
        plans = quantize_model(
            model,
            settings.method,
            settings.group_size,
            smooth=factors,
            on_layer=lambda done, total: bar.update(task, completed=done, total=total),
        )
    manifest = new_manifest(
        method=settings.method,
        group_size=settings.group_size,
        layers=plans,
        base_model=settings.model,
        base_fingerprint=fingerprint,
        adapter=adapter,
        dtype=next(model.parameters()).dtype,
        smooth_alpha=settings.alpha if factors else None,
        calibration=calibration,
    )
    return save_quantized(model, tokenizer, settings.out_dir, manifest)


def quantize_to_folder(settings: QuantizeSettings, *, console: Console | None = None) -> Manifest:
    """The quantized model in ``settings.out_dir``, without the before/after measurements of
    :func:`run_quantize` (for callers that measure the model themselves, like the bakeoff)."""
    from mentor.models.loading import load_causal_lm, load_tokenizer
    from mentor.train.lora import base_fingerprint

    console = console or Console(stderr=True)
    model = load_causal_lm(settings.model, dtype="float32", device=settings.device)
    tokenizer = load_tokenizer(settings.model)
    fingerprint = base_fingerprint(model)
    adapter = merge_adapter(model, settings.adapter) if settings.adapter is not None else None
    plans = plan_layers(model, settings.method, settings.group_size)
    manifest = _quantize_save(settings, model, tokenizer, plans, fingerprint, adapter, console)
    del model
    gc.collect()
    return manifest
