"""The recommended arm as one GGUF file, for the laptop, edge box or phone it will run on.

The bakeoff measured an arm; the file is that arm, not a second approximation of it:

- a quantized arm's folder goes over with its codes unchanged (int4 as ``Q4_1``, int8 as
  ``Q8_0``; :mod:`mentor.quantize.export`), any adapter already merged by the quantizer. An
  int8 layer with SmoothQuant factors is the exception: llama.cpp has no per-channel input
  scaling, so the factors are folded into the weight and it is quantized again, and the
  sentence says so;
- a floating-point arm goes at f16, its LoRA adapter (trained here or an incumbent) merged in;
- an endpoint arm holds no weights here and is never exported.

``export: auto`` writes the file when the situation's hardware is a laptop, an edge box or a
phone, or when the chosen arm is quantized (the advisor's edge advice); ``always`` and
``never`` say what they mean. The file lands in ``out/export/ARM/`` with an Ollama
``Modelfile`` beside it, and a ``source.json`` that lets a resumed run keep a file written from
the same arm. A model llama.cpp has no architecture for is reported, not raised: the verdict
stands without its file.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from rich.console import Console

from mentor.bakeoff.results import Exported
from mentor.bakeoff.stages import Built
from mentor.utils.fs import atomic_write_text

EDGE_HARDWARE = ("laptop", "edge", "mobile")
GGUF_FOR = {"int4": "q4_1", "int8": "q8_0", None: "f16"}
"""The arm's quantization -> the GGUF type that carries it unchanged."""


def wanted(setting: str, hardware: str, methods: list[str]) -> bool:
    """Whether ``export: setting`` asks for a file for an arm of ``methods`` on ``hardware``."""
    if setting == "never" or "hosted" in methods:
        return False
    return setting == "always" or hardware in EDGE_HARDWARE or "quantization" in methods


@dataclass(frozen=True)
class Source:
    """What to write: a model folder, an adapter to merge into it, the GGUF type."""

    folder: Path
    merge: Path | None
    gguf_type: str
    quantized: str | None = None


def source_for(quantize: str | None, built: Built | None, base: str, quant_folder: Path) -> Source:
    """The folder the arm's model was loaded from (as :func:`~mentor.bakeoff.arms.load_arm_model`
    loads it), resolved to a path; a registry name is pulled already."""
    from mentor.models.loading import resolve_model_path

    if quantize is not None:
        return Source(quant_folder, None, GGUF_FOR[quantize], quantize)
    kind = built.kind if built is not None else None
    adapter = built.path if built is not None and kind in ("lora", "incumbent-lora") else None
    source = built.path if built is not None and kind == "full" else Path(base)
    model = built.base if built is not None and kind != "full" else str(source)
    return Source(resolve_model_path(model), adapter, GGUF_FOR[None])


def export_arm(
    arm: str,
    source: Source,
    folder: Path,
    fingerprint: str,
    *,
    retrieval: bool,
    console: Console,
) -> Exported:
    """Write ``arm`` to ``folder/NAME.TYPE.gguf`` (NAME: the folder's) and its Modelfile; an
    unchanged arm whose file is there already is kept."""
    from mentor.quantize.export import export_model, write_modelfile

    path = folder / f"{folder.name}.{source.gguf_type}.gguf"
    stamp = folder / "source.json"
    made_from = {
        "arm": fingerprint,
        "folder": str(source.folder),
        "merge": str(source.merge) if source.merge else None,
        "gguf_type": source.gguf_type,
    }
    if path.exists() and stamp.exists():
        kept = json.loads(stamp.read_text(encoding="utf-8"))
        if kept.get("made_from") == made_from:
            return Exported(**kept["exported"])
    try:
        with console.status(f"{arm}: writing {path} ({source.gguf_type})"):
            result = export_model(
                source.folder, path, source.gguf_type, name=arm, merge=source.merge
            )
            modelfile = write_modelfile(result, source.folder)
    except (ValueError, OSError) as exc:  # ExportError is a ValueError: name what stopped it
        console.print(f"[yellow]{arm}: no GGUF file: {exc}[/yellow]")
        return Exported(
            arm,
            None,
            source.gguf_type,
            quantized=source.quantized,
            retrieval=retrieval,
            error=str(exc),
        )
    exported = Exported(
        arm,
        str(path),
        source.gguf_type,
        size_mb=result.size_bytes / 2**20,
        modelfile=str(modelfile),
        quantized=source.quantized,
        exact=result.exact,
        retrieval=retrieval,
    )
    atomic_write_text(
        stamp, json.dumps({"made_from": made_from, "exported": exported.__dict__}, indent=1)
    )
    console.print(f"{arm}: wrote {path} ({exported.size_mb:.1f} MB, {source.gguf_type})")
    return exported
