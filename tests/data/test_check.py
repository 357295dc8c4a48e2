"""check_dataset: validation of both files, duplicates, leakage, lengths, labels, conflicts."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mentor.data.check import check_dataset

from .conftest import Writer

LONG_Q = (
    "How do I move all the cards from one of my boards into another board without losing the "
    "comments and attachments?"
)


def _qa(question: str, answer: str = "An answer.") -> dict[str, str]:
    return {"question": question, "answer": answer}


@pytest.fixture
def qa_files(write: Writer) -> tuple[Path, Path]:
    train = write(
        "train.jsonl",
        [
            _qa("How do I archive a board?"),
            _qa(LONG_Q),
            _qa("Which browsers are supported?"),
            _qa("how do I ARCHIVE a board"),  # exact duplicate of line 1
            _qa("Can I export to CSV?"),
        ],
    )
    test = write(
        "test.jsonl",
        [
            _qa("What is the guest limit on the Pro plan?"),
            _qa("Which browsers are supported?"),  # exact leak of train line 3
            _qa("Hello! " + LONG_Q),  # near leak of train line 2
            '{"question": "broken"',  # a bad line in the test file
        ],
    )
    return train, test


def test_planted_duplicates_and_leakage_are_reported(qa_files: tuple[Path, Path]) -> None:
    train, test = qa_files
    report = check_dataset(train, against=test)
    assert report.schema == "qa"
    assert [(g.kind, g.lines) for g in report.duplicates] == [("exact", [1, 4])]
    assert [(p.test_line, p.train_line, p.kind) for p in report.leakage] == [
        (2, 3, "exact"),
        (3, 2, "near"),
    ]
    assert report.leaked_test_lines == [2, 3]
    assert [str(p) for p in report.problems] == [
        f"{test}:4: invalid JSON: Expecting ',' delimiter (column 22)"
    ]
    assert report.has_errors
    assert report.has_findings
    assert set(report.lengths) == {"train", "test"}
    assert report.lengths["train"].count == 5
    assert report.approximate_tokens


def test_clean_file_has_no_findings(write: Writer) -> None:
    path = write("clean.jsonl", [_qa("First question?"), _qa("Another, different one?")])
    report = check_dataset(path)
    assert not report.has_errors
    assert not report.has_findings
    assert report.test is None
    assert report.labels is None


def test_classification_labels_and_conflicts(write: Writer) -> None:
    train = write(
        "cls.jsonl",
        [
            {"text": "refund please", "label": "billing"},
            {"text": "app crashes", "label": "bug"},
            {"text": "Refund, please!", "label": "bug"},  # same text as line 1, other label
            {"text": "charged twice", "label": "billing"},
        ],
    )
    test = write("cls_test.jsonl", [{"text": "how do I log in", "label": "account"}])
    report = check_dataset(train, against=test)
    assert report.labels is not None
    assert report.labels.counts == {"billing": 2, "bug": 2}
    assert report.labels.missing_in_train == ["account"]
    assert [(c.lines, c.labels) for c in report.conflicts] == [([1, 3], ["billing", "bug"])]


def test_custom_token_counter_and_max_tokens(write: Writer) -> None:
    path = write("c.jsonl", [{"text": "x" * 10, "label": "a"}, {"text": "y" * 50, "label": "b"}])
    report = check_dataset(path, count_tokens=len, max_tokens=20)
    stats = report.lengths["train"]
    assert (stats.min, stats.max, stats.over_limit) == (10, 50, 1)
    assert not report.approximate_tokens


def test_over_long_chat_and_qa_examples_are_named_with_the_answer_tokens_a_cut_loses(
    write: Writer,
) -> None:
    def chat(user: int, answer: int) -> dict[str, object]:
        return {
            "messages": [
                {"role": "user", "content": "u" * user},
                {"role": "assistant", "content": "a" * answer},
            ]
        }

    # counted in characters: line 2 is 30 + 80 = 110 (10 answer tokens cut at 100), line 3 is
    # 120 + 50 (all 50 answer tokens cut), line 1 fits
    path = write("long.jsonl", [chat(10, 20), chat(30, 80), chat(120, 50)])
    report = check_dataset(path, count_tokens=len, max_tokens=100)
    [found] = report.overlong
    assert (found.lines, found.longest, found.longest_line) == ([2, 3], 170, 3)
    assert (found.answer_tokens, found.answer_tokens_cut) == (130, 60)
    assert report.has_findings and not report.has_errors
    assert str(found) == (
        f"{path}: 2 examples longer than 100 tokens (longest 170, line 3); truncation to 100 "
        "would cut 60 of their 130 answer tokens (mentor finetune --max-length / --overlong)"
    )
    assert report.to_dict()["overlong"][0]["answer_tokens_cut"] == 60
    # Without --max-tokens, chat and qa are measured against finetune's default 1024.
    qa = write("qa.jsonl", [{"question": "q" * 1000, "answer": "a" * 100}])
    [default] = check_dataset(qa, count_tokens=len).overlong
    assert (default.limit, default.answer_tokens, default.answer_tokens_cut) == (1024, 100, 76)
    assert check_dataset(qa, count_tokens=len, max_tokens=1100).overlong == []


def test_report_to_dict_is_json(qa_files: tuple[Path, Path]) -> None:
    train, test = qa_files
    data = json.loads(json.dumps(check_dataset(train, against=test).to_dict()))
    assert data["schema"] == "qa"
    assert [f["role"] for f in data["files"]] == ["train", "test"]
    assert data["leakage"][0] == {
        "train_line": 3,
        "test_line": 2,
        "kind": "exact",
        "similarity": 1.0,
        "text": "Which browsers are supported?",
    }
    assert data["problems"][0]["line"] == 4
    assert data["has_errors"] is True


def test_qrels_duplicates_compare_ids_verbatim(write: Writer) -> None:
    path = write("q.tsv", "q-1\td1\t1\nq_1\td1\t1\nq-1\td1\t2\n")
    report = check_dataset(path)
    assert [g.lines for g in report.duplicates] == [[1, 3]]
    assert report.lengths == {}


def test_bad_threshold_is_refused(write: Writer) -> None:
    path = write("a.jsonl", [_qa("q?")])
    with pytest.raises(ValueError, match="near_threshold"):
        check_dataset(path, near_threshold=0)
