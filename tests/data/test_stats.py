"""Token length statistics and label balance."""

from __future__ import annotations

import pytest

from mentor.data.schemas import ChatRecord, QARecord
from mentor.data.stats import approx_token_count, full_text, label_balance, length_stats


def test_approx_token_count_counts_words_long_words_and_punctuation() -> None:
    assert approx_token_count("") == 0
    assert approx_token_count("Hello, world!") == 4
    assert approx_token_count("tokenization") == 2  # 12 characters: two 6-character pieces
    assert approx_token_count("a  b\n c") == 3


def test_length_stats_with_a_custom_counter_and_limit() -> None:
    texts = ["a" * n for n in (1, 2, 3, 4, 10)]
    stats = length_stats(texts, count_tokens=len, max_tokens=3)
    assert (stats.count, stats.min, stats.max) == (5, 1, 10)
    assert stats.mean == pytest.approx(4.0)
    assert stats.p50 == 3.0
    assert 4.0 < stats.p95 <= 10.0
    assert stats.over_limit == 2
    assert stats.to_dict()["limit"] == 3


def test_length_stats_of_nothing() -> None:
    stats = length_stats([])
    assert stats.count == 0
    assert stats.over_limit == 0


def test_full_text_includes_everything_the_model_sees() -> None:
    qa = QARecord(question="Q", answer="A", context="C")
    assert full_text(qa) == "C\nQ\nA"
    chat = ChatRecord.model_validate(
        {"messages": [{"role": "user", "content": "u"}, {"role": "assistant", "content": "a"}]}
    )
    assert full_text(chat) == "u\na"


def test_label_balance() -> None:
    balance = label_balance(["a"] * 6 + ["b"] * 3 + ["c"], ["a", "b", "d", "d"])
    assert balance.counts == {"a": 6, "b": 3, "c": 1}
    assert list(balance.counts) == ["a", "b", "c"]  # most frequent first
    assert balance.shares["a"] == pytest.approx(0.6)
    assert balance.imbalance_ratio == pytest.approx(6.0)
    assert balance.test_counts == {"d": 2, "a": 1, "b": 1}
    assert balance.missing_in_train == ["d"]


def test_balanced_labels_have_ratio_one() -> None:
    assert label_balance(["x", "y"]).imbalance_ratio == 1.0
    assert label_balance([]).counts == {}
