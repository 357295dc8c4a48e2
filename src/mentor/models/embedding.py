"""Sentence-transformers embedders behind mentor's :class:`~mentor.models.protocols.Embedder`."""

from __future__ import annotations

import copy
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import numpy.typing as npt
import torch


class SentenceEmbedder:
    """A sentence-transformers model; rows come back L2-normalised, float32."""

    def __init__(
        self, folder: Path, *, name: str, device: str = "cpu", dtype: torch.dtype = torch.float32
    ) -> None:
        from sentence_transformers import SentenceTransformer

        from mentor.models.loading import NO_HUB_KERNELS

        self.name = name
        self.folder = folder
        self.model = SentenceTransformer(
            str(folder),
            device=device,
            local_files_only=True,
            model_kwargs={"dtype": dtype, **NO_HUB_KERNELS},
        )
        # sentence-transformers 6 renamed the method; 5.x has only the old name.
        getter = getattr(self.model, "get_embedding_dimension", None)
        dim = getter() if getter else self.model.get_sentence_embedding_dimension()
        if dim is None:
            raise ValueError(f"{folder}: the model does not say its embedding dimension")
        self.dim: int = dim
        # The Rust tokenizer called directly costs half as much per call, but the model's copy
        # pads and truncates to its input size: count with a copy that does neither.
        backend = getattr(self.model.tokenizer, "backend_tokenizer", None)
        self._counter = copy.deepcopy(backend) if backend is not None else None
        if self._counter is not None:
            self._counter.no_padding()
            self._counter.no_truncation()

    @property
    def max_tokens(self) -> int:
        return int(self.model.max_seq_length or self.model.tokenizer.model_max_length)

    def count_tokens(self, text: str) -> int:
        """Tokens of ``text`` without special tokens, untruncated (for chunking)."""
        if self._counter is not None:
            return len(self._counter.encode(text, add_special_tokens=False).ids)
        return len(self.model.tokenizer(text, add_special_tokens=False)["input_ids"])

    def decode(self, ids: Sequence[int]) -> str:
        """The text of token ids in this model's vocabulary (the OpenAI API's token-id input);
        ValueError naming the first id outside it."""
        size = len(self.model.tokenizer)
        for i in ids:
            if not 0 <= i < size:
                raise ValueError(f"token id {i} is outside the vocabulary (0..{size - 1})")
        return str(self.model.tokenizer.decode(list(ids), skip_special_tokens=True))

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
        out = np.asarray(vectors, dtype=np.float32).reshape(len(texts), self.dim)
        # Normalised again in fp32: a bf16 model's own normalisation is only good to ~1e-3.
        norms = np.linalg.norm(out, axis=1, keepdims=True)
        normalised: npt.NDArray[np.float32] = out / np.maximum(norms, 1e-12)
        return normalised
