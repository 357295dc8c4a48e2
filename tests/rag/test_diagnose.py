"""Diagnosis: every verdict reached by a constructed case on a real index."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from tests.rag.conftest import index_of

from mentor.models.protocols import SamplingConfig
from mentor.rag.answer import REFUSAL
from mentor.rag.calibrate import Calibration, ScoreSummary
from mentor.rag.diagnose import Diagnosis, diagnose
from mentor.rag.index import build_index
from mentor.rag.retrieve import Retriever, SearchConfig
from mentor.testing import HashEmbedder, ScriptedGenerator

DOCS = {
    "coffee.md": "# Brewing coffee\n\nUse 60 grams of ground coffee per litre of water. Heat the "
    "water to 94 degrees Celsius before pouring it over the grounds.\n",
    "boards.md": "# Exporting boards\n\nTo export a board, open the board menu and choose Export. "
    "Boards are exported as CSV files that spreadsheet programs open.\n",
    "tides.md": "# Ocean tides\n\nTides are caused mainly by the gravitational pull of the Moon.\n",
    "billing.md": "# Billing and invoices\n\nInvoices are sent on the first day of each month.\n",
}
COFFEE = "What temperature should the water for brewing coffee be?"
SAMPLING = SamplingConfig(max_new_tokens=64)
SEARCH = SearchConfig(k=3)


@pytest.fixture(scope="module")
def retriever(tmp_path_factory: pytest.TempPathFactory) -> Retriever:
    return Retriever(index_of(tmp_path_factory.mktemp("diagnose"), DOCS), HashEmbedder(256))


def run(
    retriever: Retriever,
    question: str,
    replies: list[str],
    *,
    search: SearchConfig = SEARCH,
    reference: str | None = None,
    threshold: float | None = None,
    calibration: Calibration | None = None,
) -> tuple[Diagnosis, ScriptedGenerator]:
    generator = ScriptedGenerator(replies)
    result = diagnose(
        retriever,
        generator,
        question,
        reference=reference,
        search=search,
        threshold=threshold,
        calibration=calibration,
        sampling=SAMPLING,
    )
    json.dumps(result.to_dict())  # evidence stays JSON-ready
    assert result.verdict in result.render() and result.explanation in result.render()
    return result, generator


def test_nothing_retrieved_names_the_filters(retriever: Retriever) -> None:
    search = SearchConfig(k=3, filters={"doc_id": "docs/nowhere.md"})
    result, generator = run(retriever, COFFEE, [], search=search)
    assert result.verdict == "nothing-retrieved" and generator.calls == []
    assert "filters doc_id=docs/nowhere.md" in result.explanation
    assert result.evidence["hits"] == 0 and result.answer is None


def test_nothing_retrieved_in_bm25_mode_names_the_vocabulary(retriever: Retriever) -> None:
    result, _ = run(retriever, "zyxxy quorble", [], search=SearchConfig(mode="bm25"))
    assert result.verdict == "nothing-retrieved" and "BM25" in result.explanation


def test_nothing_retrieved_in_an_empty_index(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    build_index(tmp_path / "idx", [tmp_path / "empty"], HashEmbedder(256))
    result, _ = run(Retriever(tmp_path / "idx", HashEmbedder(256)), COFFEE, [])
    assert result.verdict == "nothing-retrieved" and "no chunks" in result.explanation


def test_low_scores_against_the_threshold(retriever: Retriever) -> None:
    result, generator = run(retriever, COFFEE, [], threshold=0.99)
    assert result.verdict == "low-scores" and generator.calls == []
    assert "below the threshold 0.990" in result.explanation
    top = result.evidence["top_hits"]
    assert isinstance(top, list) and top[0]["chunk_id"] == "docs/coffee.md#0"


def test_low_scores_against_the_off_domain_median(retriever: Retriever) -> None:
    spread = ScoreSummary(count=3, min=0.0, p50=0.95, max=0.99)
    calibration = Calibration(0.1, 1.0, 0.0, 0.0, spread, spread, "hybrid")
    result, _ = run(retriever, COFFEE, [], calibration=calibration)
    assert result.verdict == "low-scores" and "off-domain" in result.explanation
    assert result.evidence["threshold"] == 0.1 and result.evidence["off_domain_p50"] == 0.95


def test_answer_not_in_sources_with_a_reference(retriever: Retriever) -> None:
    reference = "Penguins migrate to Zanzibar in October."
    result, generator = run(retriever, COFFEE, [], reference=reference)
    assert result.verdict == "answer-not-in-sources" and generator.calls == []
    assert result.evidence["answer_in_sources"] == 0.0


def test_answer_not_in_sources_without_a_reference(retriever: Retriever) -> None:
    result, _ = run(retriever, "Who painted the Mona Lisa?", [REFUSAL])
    assert result.verdict == "answer-not-in-sources" and result.answer == REFUSAL
    assert result.evidence["question_in_sources"] == 0.0


def test_generator_ignored_context_with_a_wrong_answer(retriever: Retriever) -> None:
    wrong = "Boil it at 150 kelvin on Mars [1]."
    result, generator = run(retriever, COFFEE, [wrong], reference="94 degrees Celsius")
    assert result.verdict == "generator-ignored-context" and result.answer == wrong
    assert len(generator.calls) == 1
    assert result.evidence["answer_in_sources"] == 1.0
    assert result.evidence["invented_numbers"] == ["150"]
    assert result.evidence["f1_with_reference"] == 0.0
    assert "larger generator" in result.explanation


def test_generator_ignored_context_when_it_refuses(retriever: Retriever) -> None:
    result, _ = run(retriever, COFFEE, [REFUSAL], reference="94 degrees Celsius")
    assert result.verdict == "generator-ignored-context" and "is a refusal" in result.explanation


def test_ok_with_a_grounded_answer(retriever: Retriever) -> None:
    good = "Heat the water to 94 degrees Celsius [1]."
    result, _ = run(retriever, COFFEE, [good], reference="94 degrees Celsius")
    assert result.verdict == "ok" and result.answer == good
    assert result.evidence["support"] == 1.0 and result.evidence["invented_numbers"] == []
    assert "Every stage worked" in result.explanation


def test_ok_without_a_reference(retriever: Retriever) -> None:
    result, _ = run(retriever, COFFEE, ["Heat the water to 94 degrees Celsius [1]."])
    assert result.verdict == "ok" and result.evidence["f1_with_reference"] is None
