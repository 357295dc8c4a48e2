"""Before/after evaluation: perplexity against HF's own loss, held-out items, batched greedy
answers, scores and the report."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest
import torch

from mentor.evaluate.answers import (
    generate_answers,
    load_eval_items,
    score_generations,
)
from mentor.evaluate.compare import (
    FORGETTING_THRESHOLD,
    BeforeAfter,
    compare_classification,
    compare_generation,
    compare_scores,
)
from mentor.evaluate.perplexity import general_sample, perplexity, token_windows
from mentor.evaluate.stats import mean_of, paired_bootstrap
from mentor.evaluate.text import TEXT_METRICS
from mentor.models.engine import HFEngine
from mentor.models.protocols import ChatMessage, SamplingConfig
from mentor.testing import tiny_llama

TEXT = (
    "The coffee grinder weighs 3 kilograms. Refunds are issued within 5 business days after "
    "the item is returned. Water boils at 100 degrees Celsius at sea level."
)


@pytest.fixture(scope="module")
def llama() -> tuple[Any, Any]:
    return tiny_llama()


@pytest.fixture(scope="module")
def chatty_llama() -> tuple[Any, Any]:
    """tiny_llama with larger random weights, so that greedy answers depend on the prompt.

    At its default initialisation the tiny model just repeats the newline that ends every
    generation prompt, and all answers strip to "", which would make comparisons vacuous.
    """
    model, tokenizer = tiny_llama(tie_word_embeddings=False)
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for weight in model.parameters():
            if weight.dim() == 2:
                weight.copy_(torch.randn(weight.shape, generator=generator) * 0.1)
    return model, tokenizer


def _ids(tokenizer: Any, text: str) -> torch.Tensor:
    return torch.tensor([tokenizer(text, add_special_tokens=False)["input_ids"]])


def _hf_loss(model: Any, ids: torch.Tensor) -> float:
    with torch.inference_mode():
        return float(model(input_ids=ids, labels=ids).loss)


# --- perplexity -------------------------------------------------------------------------------


def test_token_windows_tile_every_token() -> None:
    for n, seq_len in [(10, 4), (12, 4), (1, 4), (0, 4), (5, 512)]:
        windows = token_windows(n, seq_len)
        covered = [i for a, b in windows for i in range(a, b)]
        assert covered == list(range(n))
        assert all(b - a <= seq_len for a, b in windows)
    assert token_windows(10, 4) == [(0, 4), (4, 8), (8, 10)]
    with pytest.raises(ValueError, match="seq_len"):
        token_windows(10, 1)


def test_perplexity_matches_hf_loss_on_one_window(llama: tuple[Any, Any]) -> None:
    model, tokenizer = llama
    ids = _ids(tokenizer, TEXT)
    assert ids.shape[1] < 512
    expected = math.exp(_hf_loss(model, ids))
    assert perplexity(model, tokenizer, TEXT) == pytest.approx(expected, rel=1e-5)


@pytest.mark.parametrize("batch_size", [1, 2, 4])
def test_perplexity_over_windows_weights_each_predicted_token(
    llama: tuple[Any, Any], batch_size: int
) -> None:
    model, tokenizer = llama
    ids = _ids(tokenizer, TEXT)
    seq_len = 16
    assert ids.shape[1] % seq_len >= 2  # a shorter last window that still predicts something
    total, count = 0.0, 0
    for a, b in token_windows(ids.shape[1], seq_len):
        total += _hf_loss(model, ids[:, a:b]) * (b - a - 1)  # HF's loss is a mean over b-a-1
        count += b - a - 1
    expected = math.exp(total / count)
    got = perplexity(model, tokenizer, TEXT, seq_len=seq_len, batch_size=batch_size)
    assert got == pytest.approx(expected, rel=1e-5)


def test_perplexity_restores_training_mode_and_rejects_tiny_text(llama: tuple[Any, Any]) -> None:
    model, tokenizer = llama
    model.train()
    try:
        perplexity(model, tokenizer, TEXT, seq_len=32)
        assert model.training
    finally:
        model.eval()
    with pytest.raises(ValueError, match="at least 2 tokens"):
        perplexity(model, tokenizer, "a")


def test_general_sample_is_substantial_prose(llama: tuple[Any, Any]) -> None:
    text = general_sample()
    assert 2500 <= len(text.split()) <= 3500
    assert text.isascii()
    model, tokenizer = llama
    ppl = perplexity(model, tokenizer, text)
    # A random model is about as unsure as a uniform guess over its 512-token vocabulary.
    assert 50 < ppl < 5000


# --- held-out items ---------------------------------------------------------------------------


def _write(path: Path, rows: list[Any]) -> Path:
    path.write_text(
        "".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows),
        encoding="utf-8",
    )
    return path


def test_load_eval_items_from_qa(tmp_path: Path) -> None:
    path = _write(
        tmp_path / "qa.jsonl",
        [
            {"question": "How long is the return window?", "answer": "Thirty days."},
            {"question": "Who pays?", "answer": "The shop.", "context": "The shop pays."},
        ],
    )
    items = load_eval_items(path)
    assert [i.reference for i in items] == ["Thirty days.", "The shop."]
    assert items[0].prompt == [{"role": "user", "content": "How long is the return window?"}]
    assert items[1].prompt == [
        {"role": "user", "content": "Context:\nThe shop pays.\n\nQuestion:\nWho pays?"}
    ]
    assert [i.line for i in items] == [1, 2]


def test_load_eval_items_from_chat_cuts_before_last_assistant(tmp_path: Path) -> None:
    messages = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello."},
        {"role": "user", "content": "Archive a board?"},
        {"role": "assistant", "content": "Board menu, Archive."},
    ]
    path = _write(tmp_path / "chat.jsonl", [{"messages": messages}])
    (item,) = load_eval_items(path)
    assert item.reference == "Board menu, Archive."
    assert item.prompt == messages[:4]


@pytest.mark.parametrize(
    ("row", "message"),
    [
        ("{not json", "invalid JSON"),
        ({"question": "Q?"}, "answer"),
        (
            {
                "messages": [
                    {"role": "assistant", "content": "Hello."},
                    {"role": "user", "content": "Hi"},
                ]
            },
            "no user message before the last assistant turn",
        ),
    ],
)
def test_load_eval_items_names_the_bad_line(tmp_path: Path, row: Any, message: str) -> None:
    good = {"question": "Q?", "answer": "A."}
    if isinstance(row, dict) and "messages" in row:
        good = {
            "messages": [{"role": "user", "content": "Q?"}, {"role": "assistant", "content": "A"}]
        }
    path = _write(tmp_path / "bad.jsonl", [good, row, good])
    with pytest.raises(ValueError, match=rf"bad\.jsonl:2: .*{message}"):
        load_eval_items(path)


def test_load_eval_items_rejects_classification(tmp_path: Path) -> None:
    path = _write(tmp_path / "cls.jsonl", [{"text": "charged twice", "label": "billing"}])
    with pytest.raises(ValueError, match="classification"):
        load_eval_items(path)


# --- batched greedy answers -------------------------------------------------------------------

PROMPTS: list[list[ChatMessage]] = [
    [{"role": "user", "content": "Does the coffee grinder weigh 3 kilograms?"}],
    [{"role": "user", "content": "Hi"}],
    [
        {"role": "system", "content": "You answer questions about store policies."},
        {"role": "user", "content": "How fast are refunds issued after the item is returned?"},
    ],
    [{"role": "user", "content": "What is 2 plus 3?"}],
    [{"role": "user", "content": "Water boils at what temperature?"}],
]


TWELVE = SamplingConfig(max_new_tokens=12)


def test_generate_answers_batched_equals_one_at_a_time(chatty_llama: tuple[Any, Any]) -> None:
    model, tokenizer = chatty_llama
    rendered = [
        tokenizer.apply_chat_template(p, tokenize=False, add_generation_prompt=True)
        for p in PROMPTS
    ]
    lengths = {len(tokenizer(text, add_special_tokens=False)["input_ids"]) for text in rendered}
    assert len(lengths) > 1  # the batch really is padded
    one_by_one = [generate_answers(HFEngine(model, tokenizer), [p], TWELVE)[0] for p in PROMPTS]
    batched = generate_answers(HFEngine(model, tokenizer), PROMPTS, TWELVE, batch_size=8)
    in_pairs = generate_answers(HFEngine(model, tokenizer), PROMPTS, TWELVE, batch_size=2)
    assert batched == one_by_one
    assert in_pairs == one_by_one
    assert len(set(one_by_one)) == len(PROMPTS)  # each prompt gets its own answer
    assert all(a == a.strip() and "<|im_" not in a for a in one_by_one)


def test_generate_answers_matches_plain_greedy_generate(chatty_llama: tuple[Any, Any]) -> None:
    model, tokenizer = chatty_llama
    prompt = PROMPTS[2]
    text = tokenizer.apply_chat_template(prompt, tokenize=False, add_generation_prompt=True)
    ids = _ids(tokenizer, text)
    with torch.inference_mode():
        out = model.generate(
            input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=12, do_sample=False
        )
    expected = tokenizer.decode(out[0, ids.shape[1] :], skip_special_tokens=True).strip()
    assert expected
    assert generate_answers(HFEngine(model, tokenizer), [prompt], TWELVE) == [expected]


# --- scores and the report --------------------------------------------------------------------


def test_score_generations_on_hand_made_answers() -> None:
    scores = score_generations(
        ["Thirty days.", "the blue car", "nothing alike"],
        ["thirty days", "a red car", "Paris"],
    )
    assert scores.n == 3
    assert scores.per_example["exact_match"] == [1.0, 0.0, 0.0]
    # "blue car" vs "red car": 1 shared token of 2 each -> P = R = 1/2, F1 = 1/2; LCS is "car".
    assert scores.per_example["token_f1"] == pytest.approx([1.0, 0.5, 0.0])
    assert scores.per_example["rouge_l"] == pytest.approx([1.0, 0.5, 0.0])
    assert scores.exact_match == pytest.approx(1 / 3)
    assert scores.token_f1 == pytest.approx(0.5)
    assert scores.rouge_l == pytest.approx(0.5)
    assert scores.per_example["contains"] == [1.0, 0.0, 0.0]  # "red car" is not in "blue car"
    assert scores.contains == pytest.approx(1 / 3)
    assert list(scores.per_example) == list(TEXT_METRICS)
    assert scores.to_dict()["n"] == 3
    with pytest.raises(ValueError, match="2 predictions for 1 references"):
        score_generations(["a", "b"], ["a"])


def _report(ppl_base: float, ppl_tuned: float) -> BeforeAfter:
    references = ["thirty days", "a red car", "Paris", "five", "blue"]
    base = score_generations(["no", "a car", "London", "six", "blue"], references)
    tuned = score_generations(["thirty days", "red car", "Paris", "five", "blue"], references)
    return compare_generation(base, tuned, ppl_base, ppl_tuned)


def test_before_after_rows_and_changes() -> None:
    report = _report(20.0, 21.0)
    rows = {m.name: m for m in report.metrics}
    assert list(rows) == ["exact_match", "token_f1", "rouge_l", "contains"]
    em = rows["exact_match"]
    assert (em.base, em.tuned, em.change) == pytest.approx((0.2, 1.0, 0.8))
    assert em.low <= em.change <= em.high
    assert report.general is not None
    assert report.general.relative_change == pytest.approx(0.05)
    assert not report.forgetting and report.forgetting_note is None
    table = report.to_markdown()
    assert "| metric | base | tuned | change (95% CI) |" in table
    assert "| exact_match | 0.200 | 1.000 | +0.800 (" in table
    assert "| token_f1 |" in table and "| rouge_l |" in table
    assert "| general perplexity | 20.00 | 21.00 | +5.0% |" in table
    assert "Forgetting" not in table
    data = report.to_dict()
    assert data["n"] == 5 and data["forgetting"] is False
    assert data["metrics"][0]["name"] == "exact_match"
    json.dumps(data)  # the report's JSON is plain data


def test_each_change_is_the_paired_bootstrap_of_tuned_minus_base() -> None:
    base = {"m": [0.0, 1.0, 0.0, 1.0, 0.0, 0.5]}
    tuned = {"m": [1.0, 1.0, 0.0, 1.0, 1.0, 0.5]}
    (row,) = compare_scores(base, tuned).metrics
    diff = paired_bootstrap(mean_of(tuned["m"]), mean_of(base["m"]), 6)
    assert (row.change, row.low, row.high) == (diff.value, diff.low, diff.high)
    assert row.change == pytest.approx(2 / 6)
    with pytest.raises(ValueError, match="different numbers of examples"):
        compare_scores({"m": [1.0, 2.0]}, {"m": [1.0]})


def test_forgetting_fires_above_threshold() -> None:
    at = _report(20.0, 20.0 * (1 + FORGETTING_THRESHOLD) - 1e-9)
    assert not at.forgetting
    report = _report(20.0, 23.0)
    assert report.forgetting
    assert report.forgetting_note is not None and "15.0%" in report.forgetting_note
    assert "Forgetting" in report.to_markdown()
    assert report.to_dict()["forgetting"] is True


def test_compare_generation_needs_the_same_references() -> None:
    base = score_generations(["a"], ["a"])
    tuned = score_generations(["a"], ["b"])
    with pytest.raises(ValueError, match="different references"):
        compare_generation(base, tuned, 1.0, 1.0)


def test_compare_classification_uses_the_same_report() -> None:
    gold = ["billing", "bug", "billing", "other"]
    report = compare_classification(["bug", "bug", "bug", "other"], gold, gold)
    (row,) = report.metrics
    assert (row.name, row.base, row.tuned) == ("accuracy", 0.5, 1.0)
    assert report.general is None and not report.forgetting
    assert "| accuracy | 0.500 | 1.000 | +0.500 (" in report.to_markdown()
    assert "general perplexity" not in report.to_markdown()
