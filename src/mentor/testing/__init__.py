"""Test kit: tiny real models and tokenizers, and deterministic fakes of the pluggable parts.

Everything here runs offline in seconds on a CPU, so every mentor command can be tested end to
end: ``tiny_llama``/``tiny_qwen2``/``tiny_bert`` are random Hugging Face models with tokenizers
trained in code, and the ``save_*`` writers put them on disk as real model folders.

The fakes (:mod:`mentor.testing.fakes`), one per protocol:

========================  =================================================================
``HashEmbedder``          :class:`mentor.models.protocols.Embedder` (feature hashing)
``ScriptedGenerator``     :class:`mentor.models.protocols.Generator` (canned replies)
``MemoryStore``           :class:`mentor.rag.store.VectorStore` (numpy, exact cosine search);
                          pass it as ``Retriever(index, embedder, store=...)``
``KeywordReranker``       :class:`mentor.rag.retrieve.Reranker` (shared words)
========================  =================================================================

The fakes need only numpy; the tokenizers and models load transformers (and torch) on first use,
so ``from mentor.testing import HashEmbedder`` stays fast.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from mentor.testing.fakes import (
    HashEmbedder,
    KeywordReranker,
    MemoryStore,
    RerankCall,
    ScriptedCall,
    ScriptedGenerator,
)

if TYPE_CHECKING:
    from mentor.testing.tiny_models import (
        save_model_folder,
        save_tiny_llama,
        tiny_bert,
        tiny_llama,
        tiny_qwen2,
        tiny_sentence_transformer_folder,
    )
    from mentor.testing.tokenizers import (
        CHATML_TEMPLATE,
        tiny_chat_tokenizer,
        tiny_corpus,
        tiny_wordpiece_tokenizer,
    )

__all__ = [
    "CHATML_TEMPLATE",
    "HashEmbedder",
    "KeywordReranker",
    "MemoryStore",
    "RerankCall",
    "ScriptedCall",
    "ScriptedGenerator",
    "save_model_folder",
    "save_tiny_llama",
    "tiny_bert",
    "tiny_chat_tokenizer",
    "tiny_corpus",
    "tiny_llama",
    "tiny_qwen2",
    "tiny_sentence_transformer_folder",
    "tiny_wordpiece_tokenizer",
]

_LAZY = {
    **dict.fromkeys(
        ["CHATML_TEMPLATE", "tiny_chat_tokenizer", "tiny_corpus", "tiny_wordpiece_tokenizer"],
        "mentor.testing.tokenizers",
    ),
    **dict.fromkeys(
        [
            "save_model_folder",
            "save_tiny_llama",
            "tiny_bert",
            "tiny_llama",
            "tiny_qwen2",
            "tiny_sentence_transformer_folder",
        ],
        "mentor.testing.tiny_models",
    ),
}


def __getattr__(name: str) -> object:
    # PEP 562: import transformers-backed helpers only when first asked for.
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value
