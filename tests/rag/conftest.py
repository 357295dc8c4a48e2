"""Shared fixtures for RAG tests: a small folder of documents about distinct topics."""

from __future__ import annotations

from pathlib import Path

import pytest

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
