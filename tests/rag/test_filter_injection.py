"""Retrieval filters cannot inject: the probe's payloads (issue 17) through every mode and the CLI.

A filter's field comes from :data:`mentor.rag.filters.FILTER_FIELDS` or the search is refused
before any work; a value is matched as text (quoted for LanceDB, LIKE's own wildcards escaped),
so a quote, ``%``, ``_`` or backslash in a document's name selects that document and no other.
Every case runs over the index's LanceDB store (the SQL path) and a MemoryStore (the reference).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from tests.rag.conftest import memory_store_of
from typer.testing import CliRunner

from mentor.cli import app
from mentor.rag.index import build_index
from mentor.rag.retrieve import Retriever, SearchConfig, parse_filters
from mentor.testing import HashEmbedder, tiny_sentence_transformer_folder

MODES = ("dense", "bm25", "hybrid")
NAMES = (
    "it's.md",
    "100%.md",
    "1000.md",
    "a_b.md",
    "axb.md",
    "back\\slash.md",
    "backxslash.md",
    "plain.md",
)

BAD_FIELDS = (
    "1=1 OR doc_id",
    "regexp_like(text, '.*')",
    "doc_id = doc_id OR doc_id",
    "__class__",
    "__dict__",
    "text",
    "metadata",
    "",
    " doc_id",
    "DOC_ID",
)

# value -> the only documents it may select
VALUES = {
    "nomatch": set(),
    "x' OR regexp_like(text, '.*') OR doc_id='y": set(),
    "nomatch' OR '1'='1": set(),
    "nomatch' OR 1=1 --": set(),
    "docs/it's.md": {"docs/it's.md"},
    "docs/it'*": {"docs/it's.md"},
    "docs/100%.md": {"docs/100%.md"},
    "docs/100%*": {"docs/100%.md"},
    "docs/1%": set(),
    "docs/a_b.md": {"docs/a_b.md"},
    "docs/a_*": {"docs/a_b.md"},
    "docs/a?b.md": {"docs/a_b.md", "docs/axb.md"},
    "docs/back\\slash.md": {"docs/back\\slash.md"},
    "docs/back\\s*": {"docs/back\\slash.md"},
    "docs/back_slash.md": set(),
    "%": set(),
    "_": set(),
}


@pytest.fixture(scope="module", params=["lance", "memory"])
def retriever(
    tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest
) -> Retriever:
    root = tmp_path_factory.mktemp("inject")
    folder = root / "docs"
    folder.mkdir()
    for name in NAMES:
        (folder / name).write_text(f"# {name}\n\nBoards and refunds, as told by {name}.")
    embedder = HashEmbedder(256)
    build_index(root / "idx", [folder], embedder)
    if request.param == "lance":
        return Retriever(root / "idx", embedder)
    return Retriever(root / "idx", embedder, store=memory_store_of(root / "idx", embedder))


def found(retriever: Retriever, mode: str, filters: dict[str, str]) -> set[str]:
    config = SearchConfig(mode=mode, k=len(NAMES) * 4, filters=filters)  # type: ignore[arg-type]
    return {h.chunk.doc_id for h in retriever.search("boards refunds", config).hits}


def test_every_document_is_found_without_a_filter(retriever: Retriever) -> None:
    # the baseline the filtered searches below cut down from
    for mode in MODES:
        assert len(found(retriever, mode, {})) == len(NAMES)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("field", BAD_FIELDS)
def test_a_field_outside_the_allow_list_is_refused(
    retriever: Retriever, mode: str, field: str
) -> None:
    with pytest.raises(ValueError, match="filter field"):
        found(retriever, mode, {field: "nomatch"})
    with pytest.raises(ValueError, match="FIELD=VALUE"):
        parse_filters([f"{field}=nomatch"])


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("value", list(VALUES))
def test_a_value_is_matched_as_text(retriever: Retriever, mode: str, value: str) -> None:
    assert found(retriever, mode, {"doc_id": value}) == VALUES[value]


@pytest.mark.parametrize("mode", MODES)
def test_a_page_must_be_a_number(retriever: Retriever, mode: str) -> None:
    for page in ("1 OR 1=1", "1; DROP TABLE chunks", "0x1", "-1", ""):
        with pytest.raises(ValueError, match="page number"):
            found(retriever, mode, {"page": page})


def test_the_cli_refuses_bad_fields_and_matches_values_as_text(tmp_path: Path) -> None:
    folder = tmp_path / "docs"
    folder.mkdir()
    for name in NAMES:
        (folder / name).write_text(f"# {name}\n\nBoards and refunds, as told by {name}.")
    embedder = tiny_sentence_transformer_folder(tmp_path / "tiny-st")
    idx = str(tmp_path / "idx")
    runner = CliRunner()
    built = runner.invoke(
        app, ["rag", "index", str(folder), "--index", idx, "--embedder", str(embedder), "--no-tune"]
    )
    assert built.exit_code == 0, built.output

    def search(mode: str, item: str) -> tuple[int, str]:
        args = ["rag", "search", "boards", "--index", idx, "--mode", mode, "-k", "20"]
        result = runner.invoke(app, [*args, "--json", "--filter", item])
        return result.exit_code, result.output

    for mode in MODES:
        for field in BAD_FIELDS:
            code, output = search(mode, f"{field}=nomatch")
            assert code == 1 and "FIELD=VALUE" in output, (field, output)
        for value, expected in VALUES.items():
            code, output = search(mode, f"doc_id={value}")
            assert code == 0, output
            assert {h["doc_id"] for h in json.loads(output)["hits"]} == expected, (mode, value)
