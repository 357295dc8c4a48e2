"""Threshold calibration: the choice rule on hand-made scores, then a real index end to end."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from tests.rag.conftest import index_of

from mentor.models.protocols import SamplingConfig
from mentor.rag.calibrate import (
    CALIBRATION,
    OFF_DOMAIN_QUESTIONS,
    balanced_accuracy,
    calibrate,
    choose_threshold,
    load_calibration,
    load_threshold,
    questions_from_chunks,
)
from mentor.rag.retrieve import Retriever, SearchConfig
from mentor.testing import HashEmbedder

DOCS = {
    "coffee.md": "# Brewing coffee\n\nUse 60 grams of ground coffee per litre of water. Heat the "
    "water to 94 degrees Celsius before pouring it over the grounds.\n",
    "boards.md": "# Exporting boards\n\nTo export a board, open the board menu and choose Export. "
    "Boards are exported as CSV files that spreadsheet programs open.\n",
    "billing.md": "# Billing and invoices\n\nInvoices are sent on the first day of each month. The "
    "Pro plan costs 12 dollars per user per month.\n",
    "tides.md": "# Ocean tides\n\nTides are caused mainly by the gravitational pull of the Moon.\n",
}
ANSWERABLE = [
    "How do I export a board as CSV files?",
    "What temperature should the water for brewing coffee be?",
    "When are invoices sent each month?",
    "What causes ocean tides?",
    "How much does the Pro plan cost per user per month?",
]
UNANSWERABLE = ["Who painted the Mona Lisa?", "How old is Taylor Swift?", "Why is the sky blue?"]
SEARCH = SearchConfig(k=3)


@pytest.fixture(scope="module")
def index(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return index_of(tmp_path_factory.mktemp("calibrate"), DOCS)


@pytest.mark.parametrize(
    ("answerable", "unanswerable", "threshold"),
    [
        ([0.5, 0.6], [0.1, 0.2], 0.35),  # separable: midway between 0.2 and 0.5
        ([0.5, 0.6], [0.1, 0.55], 0.3),  # cuts 0.3 and 0.575 both score 0.75: the lower wins
        ([0.1, 0.2], [0.5, 0.6], 0.1),  # inverted: answering everything (0.5) is as good as any
        ([0.3], [0.3], 0.3),  # one value: answer everything
    ],
)
def test_choose_threshold_reference_cases(
    answerable: list[float], unanswerable: list[float], threshold: float
) -> None:
    assert choose_threshold(answerable, unanswerable) == pytest.approx(threshold)


def test_balanced_accuracy_weighs_both_sides_alike() -> None:
    # answers 2 of 2 answerable, refuses 1 of 4 unanswerable: (1 + 0.25) / 2
    assert balanced_accuracy(0.3, [0.4, 0.5], [0.1, 0.35, 0.4, 0.9]) == pytest.approx(0.625)


def test_choose_threshold_needs_both_sides() -> None:
    with pytest.raises(ValueError, match="both"):
        choose_threshold([0.5], [])


def test_calibration_separates_a_clear_case_and_round_trips(index: Path) -> None:
    retriever = Retriever(index, HashEmbedder(256))
    result = calibrate(retriever, ANSWERABLE, UNANSWERABLE, search=SEARCH)
    assert result.unanswerable.max < result.threshold < result.answerable.min
    assert result.balanced_accuracy == 1.0
    assert result.refused_answerable == 0.0 and result.answered_unanswerable == 0.0
    assert result.answerable.count == 5 and result.unanswerable.count == 3
    assert result.mode == "hybrid"

    assert load_threshold(index) is None  # never calibrated yet
    path = result.save(index)
    assert path == index / CALIBRATION and json.loads(path.read_text())["threshold"] > 0
    assert load_threshold(index) == result.threshold
    assert load_calibration(index) == result


def test_built_in_off_domain_questions_are_the_default(index: Path) -> None:
    assert len(OFF_DOMAIN_QUESTIONS) >= 40 and len(set(OFF_DOMAIN_QUESTIONS)) == len(
        OFF_DOMAIN_QUESTIONS
    )
    result = calibrate(Retriever(index, HashEmbedder(256)), ANSWERABLE, search=SEARCH)
    assert result.unanswerable.count == len(OFF_DOMAIN_QUESTIONS)
    assert result.balanced_accuracy > 0.9  # hash embeddings collide a little; still clear


def test_questions_from_chunks_are_keyword_queries(index: Path) -> None:
    chunks = Retriever(index, HashEmbedder(256)).chunks
    queries = questions_from_chunks(chunks, n=3, seed=1)
    assert len(queries) == 3 and queries == questions_from_chunks(chunks, n=3, seed=1)
    texts = " ".join(c.text for c in chunks).lower()
    for query in queries:
        assert 1 <= len(query.split()) <= 6
        assert all(word.lower() in texts for word in query.split())


# ---- automatic calibration (rag index / rag tune) ----------------------------------------------


def test_a_fresh_index_calibrates_itself_and_refuses_off_domain(tmp_path: Path) -> None:
    from mentor.rag.answer import ask
    from mentor.rag.calibrate import SOURCE_CHUNKS, auto_calibrate
    from mentor.testing import ScriptedGenerator

    index = index_of(tmp_path, DOCS)
    retriever = Retriever(index, HashEmbedder(256))
    result = auto_calibrate(retriever)
    assert result is not None and result.source == SOURCE_CHUNKS and result.automatic
    assert load_threshold(index) == result.threshold
    generator = ScriptedGenerator(["Export from the board menu [1]."])
    refused = ask(retriever, generator, "Who painted the Mona Lisa?", search=SearchConfig(k=2),
                  threshold=load_threshold(index), sampling=SamplingConfig())  # fmt: skip
    assert refused.abstained and not generator.calls


def test_a_users_calibration_is_kept_and_synthetic_questions_are_preferred(
    tmp_path: Path,
) -> None:
    from mentor.rag.calibrate import SELFEVAL, SOURCE_SYNTHETIC, SOURCE_USER, auto_calibrate

    index = index_of(tmp_path, DOCS)
    retriever = Retriever(index, HashEmbedder(256))
    mine = calibrate(retriever, ANSWERABLE, UNANSWERABLE, search=SearchConfig(mode="hybrid"))
    mine.save(index)
    assert mine.source == SOURCE_USER
    assert auto_calibrate(retriever) is None
    assert load_calibration(index) == mine
    rows = [{"question": q, "chunk_id": "x"} for q in ANSWERABLE * 4]
    (index / SELFEVAL).write_text(json.dumps({"tuning": rows[:15], "held_out": rows[15:]}))
    forced = auto_calibrate(retriever, force=True)
    assert forced is not None and forced.source == SOURCE_SYNTHETIC
    assert forced.answerable.count == 20
    assert "synthetic questions" in forced.describe()


def test_an_old_calibration_file_reads_as_the_users(tmp_path: Path) -> None:
    index = index_of(tmp_path, DOCS)
    retriever = Retriever(index, HashEmbedder(256))
    data = calibrate(retriever, ANSWERABLE, UNANSWERABLE, search=SearchConfig()).to_dict()
    del data["source"]
    (index / CALIBRATION).write_text(json.dumps(data))
    loaded = load_calibration(index)
    assert loaded is not None and not loaded.automatic


def test_trim_leaves_the_lowest_answerable_scores_out_of_the_choice() -> None:
    pos, neg = [0.1, 0.15, 0.18, 0.5, 0.6], [0.0, 0.05, 0.2, 0.3]
    assert choose_threshold(pos, neg) == pytest.approx(0.075)  # the low ones drag it down
    assert choose_threshold(sorted(pos)[2:], neg) == pytest.approx(0.4)  # trim 0.4
