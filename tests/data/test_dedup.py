"""Exact and near duplicates and train/test leakage: found with their lines, no false pairs."""

from __future__ import annotations

import random
import string
import time

from mentor.data.dedup import (
    find_duplicates,
    find_duplicates_and_leakage,
    find_leakage,
    key_text,
    normalize_text,
)
from mentor.data.schemas import ChatRecord, CorpusRecord, QARecord

LONG = (
    "The quarterly report shows that revenue from the northern region grew by twelve percent "
    "while costs in the southern warehouses stayed flat for the third quarter in a row"
)
UNRELATED = [
    "How do I reset my password?",
    "Bananas are an excellent source of potassium and fibre.",
    "The train to Lisbon leaves at seven in the morning from platform four.",
    "Quantum computers use qubits that can be in superpositions of states.",
    "Please update the billing address on my invoice.",
]


def test_normalize_text() -> None:
    assert normalize_text("  Héllo,   WORLD!!\n") == "héllo world"
    assert normalize_text("ﬁne_tune") == "fine tune"  # NFKC ligature, underscore is punctuation
    assert normalize_text("Straße") == normalize_text("STRASSE")  # casefold
    assert normalize_text("?!") == ""


def test_key_text_per_kind() -> None:
    chat = ChatRecord.model_validate(
        {
            "messages": [
                {"role": "system", "content": "sys"},
                {"role": "user", "content": "first"},
                {"role": "assistant", "content": "reply"},
                {"role": "user", "content": "second"},
            ]
        }
    )
    assert key_text(chat) == "first\nsecond"
    assert key_text(QARecord(question="Q?", answer="A")) == "Q?"
    assert key_text(CorpusRecord.model_validate({"_id": "1", "title": "T", "text": "x"})) == "T\nx"


def test_exact_duplicates_after_normalisation_with_line_numbers() -> None:
    texts = [*UNRELATED, "how do I RESET my password", "Bananas are an excellent source"]
    groups = find_duplicates(texts, lines=[10, 11, 12, 13, 14, 15, 16])
    exact = [g for g in groups if g.kind == "exact"]
    assert [(g.lines, g.similarity) for g in exact] == [([10, 15], 1.0)]
    assert all(16 not in g.lines for g in groups)  # a prefix is not a duplicate


def test_near_duplicate_found_and_unrelated_texts_are_not() -> None:
    near = LONG.replace("twelve", "eleven")  # one word of 28 changed
    texts = [LONG, *UNRELATED, near]
    groups = find_duplicates(texts)
    assert [(g.kind, g.lines) for g in groups] == [("near", [1, 7])]
    assert 0.8 <= groups[0].similarity < 1.0


def test_short_near_duplicates_use_character_shingles() -> None:
    groups = find_duplicates(["Where is my parcel?", "Where is my parcell?", "Where is my card?"])
    assert [g.lines for g in groups] == [[1, 2]]


def test_results_do_not_depend_on_input_size_or_order_of_calls() -> None:
    texts = [LONG, *UNRELATED, LONG + " again", "How do I reset my password"]
    full = find_duplicates(texts)
    assert find_duplicates(texts) == full
    assert find_duplicates(texts[:6]) == []
    assert [g.lines for g in full] == [[1, 7], [2, 8]]


def test_near_is_optional_and_threshold_matters() -> None:
    texts = [LONG, LONG.replace("twelve", "eleven")]
    assert find_duplicates(texts, near=False) == []
    assert find_duplicates(texts, threshold=0.99) == []


def test_near_groups_merge_transitively() -> None:
    a = LONG
    b = LONG + " again"
    c = LONG + " again today"
    groups = find_duplicates([a, "unrelated text here", b, c])
    assert [g.lines for g in groups] == [[1, 3, 4]]


def test_leakage_between_train_and_test() -> None:
    train = [LONG, *UNRELATED]
    test = [
        "A completely new question about shipping times?",
        "how do i reset my PASSWORD",  # exact leak of train line 2
        LONG.replace("flat", "level"),  # near leak of train line 1
    ]
    pairs = find_leakage(train, test, 0.8)
    assert [(p.train_line, p.test_line, p.kind) for p in pairs] == [(2, 2, "exact"), (1, 3, "near")]
    assert pairs[0].similarity == 1.0
    assert 0.8 <= pairs[1].similarity < 1.0
    assert find_leakage(train, test, 0.8, near=False)[0].kind == "exact"
    assert len(find_leakage(train, test, 0.8, near=False)) == 1


def test_deterministic_and_fast_on_10k_texts() -> None:
    rng = random.Random(7)
    words = ["".join(rng.choices(string.ascii_lowercase, k=rng.randint(2, 9))) for _ in range(5000)]
    texts = [" ".join(rng.choices(words, k=rng.choice([6, 12, 25, 60]))) for _ in range(10_000)]
    texts[9000] = texts[3]
    texts[9001] = texts[40] + " plus"
    start = time.perf_counter()
    first = find_duplicates(texts)
    elapsed = time.perf_counter() - start
    assert elapsed < 20  # about 2 s normally; generous for loaded CI machines
    lines = {tuple(g.lines) for g in first}
    assert (4, 9001) in lines
    assert any(41 in g.lines and 9002 in g.lines for g in first)


def test_shared_index_gives_the_same_results_as_separate_calls() -> None:
    train = [LONG, *UNRELATED, LONG + " again", "Bananas are an excellent source of potassium!"]
    test = [UNRELATED[2], "A new one entirely", "Hello! " + LONG, "a new one, entirely"]
    train_groups, test_groups, leaks = find_duplicates_and_leakage(train, test, 0.8)
    assert train_groups == find_duplicates(train)
    assert test_groups == find_duplicates(test)
    assert leaks == find_leakage(train, test, 0.8)
    assert [(p.train_line, p.test_line, p.kind) for p in leaks] == [
        (4, 1, "exact"),
        (1, 3, "near"),
        (7, 3, "near"),
    ]
    assert [(g.kind, g.lines) for g in test_groups] == [("exact", [2, 4])]
