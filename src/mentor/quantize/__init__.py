"""Quantization: int8 dynamic and int4 group-wise weights for causal LMs, saved as safetensors.

``mentor quantize MODEL --to int8|int4`` quantizes, saves and measures (:mod:`.recipe`); other
code loads the result with :func:`load_quantized`::

    from mentor.quantize import load_quantized
    model = load_quantized(Path("runs/quantize/smollm2-135m-instruct-int8"))

The methods live in :mod:`.int8` and :mod:`.int4` (pure math plus one ``nn.Module`` each), the
choice of layers in :mod:`.convert`, the folder format in :mod:`.io` and the measurement in
:mod:`.report`, and ``mentor export`` to GGUF in :mod:`.export`. Imports are lazy, so
``import mentor.quantize`` does not load torch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from mentor.utils.lazy import lazy_exports

if TYPE_CHECKING:
    from mentor.quantize.convert import METHODS, QuantizeError, quantize_model
    from mentor.quantize.export import GGUF_TYPES, ExportError, export_lora, export_model
    from mentor.quantize.io import Manifest, load_quantized, read_manifest, save_quantized
    from mentor.quantize.recipe import QuantizeSettings, run_quantize
    from mentor.quantize.report import QuantizeReport

__all__ = [
    "GGUF_TYPES",
    "METHODS",
    "ExportError",
    "Manifest",
    "QuantizeError",
    "QuantizeReport",
    "QuantizeSettings",
    "export_lora",
    "export_model",
    "load_quantized",
    "quantize_model",
    "read_manifest",
    "run_quantize",
    "save_quantized",
]

__getattr__ = lazy_exports(
    __name__,
    {
        "METHODS": "mentor.quantize.convert",
        "QuantizeError": "mentor.quantize.convert",
        "quantize_model": "mentor.quantize.convert",
        "GGUF_TYPES": "mentor.quantize.export",
        "ExportError": "mentor.quantize.export",
        "export_lora": "mentor.quantize.export",
        "export_model": "mentor.quantize.export",
        "Manifest": "mentor.quantize.io",
        "load_quantized": "mentor.quantize.io",
        "read_manifest": "mentor.quantize.io",
        "save_quantized": "mentor.quantize.io",
        "QuantizeSettings": "mentor.quantize.recipe",
        "run_quantize": "mentor.quantize.recipe",
        "QuantizeReport": "mentor.quantize.report",
    },
)
