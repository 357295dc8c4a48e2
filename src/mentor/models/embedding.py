"""Sentence-transformers embedders behind mentor's :class:`~mentor.models.protocols.Embedder`."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import numpy.typing as npt


class SentenceEmbedder:
    """A sentence-transformers model; rows come back L2-normalised, float32."""

    def __init__(self, folder: Path, *, name: str, device: str = "cpu") -> None:
        from sentence_transformers import SentenceTransformer

        self.name = name
        self.folder = folder
        self.model = SentenceTransformer(str(folder), device=device, local_files_only=True)
        # sentence-transformers 6 renamed the method; 5.x has only the old name.
        getter = getattr(self.model, "get_embedding_dimension", None)
        dim = getter() if getter else self.model.get_sentence_embedding_dimension()
        if dim is None:
            raise ValueError(f"{folder}: the model does not say its embedding dimension")
        self.dim: int = dim

    @property
    def max_tokens(self) -> int:
        return int(self.model.max_seq_length or self.model.tokenizer.model_max_length)

    def count_tokens(self, text: str) -> int:
        tokenizer = self.model.tokenizer
        backend = getattr(tokenizer, "backend_tokenizer", None)
        if backend is not None:  # the Rust tokenizer directly: half the cost per call
            return len(backend.encode(text, add_special_tokens=False).ids)
        return len(tokenizer(text, add_special_tokens=False)["input_ids"])

    def embed(
        self, texts: Sequence[str], *, batch_size: int = 32, progress: bool = False
    ) -> npt.NDArray[np.float32]:
        vectors = self.model.encode(
            list(texts),
            batch_size=batch_size,
            normalize_embeddings=True,
            convert_to_numpy=True,
            show_progress_bar=progress,
        )
        return np.asarray(vectors, dtype=np.float32).reshape(len(texts), self.dim)
