"""Shared fixtures for RAG tests: a small folder of documents about distinct topics, and an
index's chunks in a :class:`mentor.testing.MemoryStore`."""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from mentor.rag.reranker import TrainingPair

if TYPE_CHECKING:
    from mentor.models.protocols import Embedder
    from mentor.testing import MemoryStore

DOCS = {
    "guests.md": "# Guests\n\nGuests can view and edit the boards they are invited to.\n\n"
    "## Limits\n\nGuests cannot create boards; only members create boards.",
    "billing.md": "# Billing\n\nInvoices are emailed on the first day of each month.\n\n"
    "## Refunds\n\nRefunds are issued within 14 days of a cancellation request.",
    "export.md": "# Export\n\nExport a board to CSV from the board menu.\n\n"
    "Comments and attachments are not included in the CSV export.",
    "security.md": "# Security\n\nAll data is encrypted at rest with AES-256.\n\n"
    "Two-factor authentication can be required for every member by an admin.",
}


@pytest.fixture
def docs(tmp_path: Path) -> Path:
    folder = tmp_path / "docs"
    folder.mkdir()
    for name, text in DOCS.items():
        (folder / name).write_text(text)
    return folder


def index_of(root: Path, documents: dict[str, str], dim: int = 256) -> Path:
    """Write ``documents`` (name -> text) under ``root/docs``; index them with a hash embedder."""
    from mentor.rag.index import build_index
    from mentor.testing import HashEmbedder

    folder = root / "docs"
    folder.mkdir(parents=True, exist_ok=True)
    for name, text in documents.items():
        (folder / name).write_text(text)
    build_index(root / "idx", [folder], HashEmbedder(dim))
    return root / "idx"


def memory_store_of(index: Path, embedder: Embedder) -> MemoryStore:
    """A :class:`mentor.testing.MemoryStore` holding the chunks of ``index`` in reverse order,
    each with the vector ``build_index`` gave it: a stand-in store whose rows differ from the
    index's own, so a retriever that used it works through ``row_of`` and nothing else."""
    from mentor.rag.index import embed_input, open_store
    from mentor.testing import MemoryStore

    chunks = open_store(index).chunks()[::-1]
    return MemoryStore(chunks, embedder.embed([embed_input(c) for c in chunks]))


@pytest.fixture
def one_thread() -> Iterator[None]:
    """Tiny models gain nothing from threads, and on a busy machine two threads wait on each
    other (use with ``pytestmark = pytest.mark.usefixtures("one_thread")``)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def tiny_cross_encoder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random BERT cross-encoder (one logit) saved as a model folder."""
    from mentor.testing import save_model_folder, tiny_bert

    model, tokenizer = tiny_bert(num_labels=1)
    return save_model_folder(model, tokenizer, tmp_path_factory.mktemp("ce") / "tiny-ce")


TOPICS = ("coffee grinder kettle water filter", "desk chair office lamp screen")


def _topic_task(n: int, seed: int) -> list[TrainingPair]:
    """The positive is written in the query's topic's words, the negatives in the other topic's.

    Every passage is relevant to some queries and not to others, so only a model that reads
    query and passage together can beat chance (MRR about 0.52 with 3 negatives).
    """
    rng = random.Random(seed)
    words = [topic.split() for topic in TOPICS]
    pairs = []
    for _ in range(n):
        topic = rng.randrange(2)
        query = " ".join(rng.sample(words[topic], 2))
        positive = " ".join(rng.choices(words[topic], k=4))
        negatives = [" ".join(rng.choices(words[1 - topic], k=4)) for _ in range(3)]
        pairs.append(TrainingPair(query, positive, negatives))
    return pairs


@pytest.fixture
def topic_task() -> Callable[[int, int], list[TrainingPair]]:
    """``topic_task(n, seed)``: reranker training pairs only a model reading query and passage
    together can rank (see ``_topic_task``)."""
    return _topic_task
