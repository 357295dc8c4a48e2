"""Test kit: tiny real models and tokenizers, and deterministic fakes of the pluggable parts.

Everything here runs offline in seconds on a CPU, so every mentor command can be tested end to
end: ``tiny_llama``/``tiny_qwen2``/``tiny_bert`` are random Hugging Face models with tokenizers
trained in code, and the ``save_*`` writers put them on disk as real model folders.

The fakes, one per protocol:

========================  =================================================================
``HashEmbedder``          :class:`mentor.models.protocols.Embedder` (feature hashing)
``ScriptedGenerator``     :class:`mentor.models.protocols.Generator` (canned replies)
``ScriptedEngine``        :class:`mentor.models.engine.TextEngine` (canned replies to real
                          prompts; the server runs on it as ``Engine(ScriptedEngine(...))``)
``FakeVLLM``              :mod:`mentor.models.vllm` (records what ``open_vllm`` was given;
                          serves a ``ScriptedEngine``)
``MemoryStore``           :class:`mentor.rag.store.VectorStore` (numpy, exact cosine search);
                          pass it as ``Retriever(index, embedder, store=...)``
``KeywordReranker``       :class:`mentor.rag.retrieve.Reranker` (shared words)
``RecordingTracker``      :class:`mentor.utils.tracking.Tracker` (keeps every call; can fail
                          on purpose)
``fake_cuda``             a CUDA device on a CPU (:mod:`mentor.testing.devices`): a tensor
                          left on the CPU next to a "GPU" model fails as on a real GPU
========================  =================================================================

The fakes (:mod:`mentor.testing.fakes`, :mod:`mentor.testing.engines`) need only numpy; the
tokenizers and models load transformers (and torch) on first use. Every name is imported when
first used, so ``from mentor.testing import HashEmbedder`` stays fast.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from mentor.utils.lazy import lazy_exports

if TYPE_CHECKING:
    from mentor.testing.devices import fake_cuda, on_fake_cuda
    from mentor.testing.engines import FakeVLLM, ScriptedEngine
    from mentor.testing.fakes import (
        HashEmbedder,
        KeywordReranker,
        MemoryStore,
        RerankCall,
        ScriptedCall,
        ScriptedGenerator,
    )
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
    from mentor.testing.trackers import RecordingTracker

__all__ = [
    "CHATML_TEMPLATE",
    "FakeVLLM",
    "HashEmbedder",
    "KeywordReranker",
    "MemoryStore",
    "RecordingTracker",
    "RerankCall",
    "ScriptedCall",
    "ScriptedEngine",
    "ScriptedGenerator",
    "fake_cuda",
    "on_fake_cuda",
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

__getattr__ = lazy_exports(
    __name__,
    {
        "FakeVLLM": "mentor.testing.engines",
        "ScriptedEngine": "mentor.testing.engines",
        "HashEmbedder": "mentor.testing.fakes",
        "KeywordReranker": "mentor.testing.fakes",
        "MemoryStore": "mentor.testing.fakes",
        "RerankCall": "mentor.testing.fakes",
        "ScriptedCall": "mentor.testing.fakes",
        "ScriptedGenerator": "mentor.testing.fakes",
        "RecordingTracker": "mentor.testing.trackers",
        "fake_cuda": "mentor.testing.devices",
        "on_fake_cuda": "mentor.testing.devices",
        "save_model_folder": "mentor.testing.tiny_models",
        "save_tiny_llama": "mentor.testing.tiny_models",
        "tiny_bert": "mentor.testing.tiny_models",
        "tiny_llama": "mentor.testing.tiny_models",
        "tiny_qwen2": "mentor.testing.tiny_models",
        "tiny_sentence_transformer_folder": "mentor.testing.tiny_models",
        "CHATML_TEMPLATE": "mentor.testing.tokenizers",
        "tiny_chat_tokenizer": "mentor.testing.tokenizers",
        "tiny_corpus": "mentor.testing.tokenizers",
        "tiny_wordpiece_tokenizer": "mentor.testing.tokenizers",
    },
)
