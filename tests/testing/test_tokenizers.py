"""Tests for the in-code tokenizers: determinism, round trips, ChatML and assistant masks."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys

import pytest

from mentor.testing import CHATML_TEMPLATE, tiny_chat_tokenizer, tiny_wordpiece_tokenizer
from mentor.testing.tokenizers import tiny_corpus

CONVERSATION = [
    {"role": "system", "content": "You answer questions about store policy."},
    {"role": "user", "content": "How long do refunds take?"},
    {"role": "assistant", "content": "Refunds are issued within 5 business days."},
    {"role": "user", "content": "And the warranty?"},
    {"role": "assistant", "content": "The warranty lasts 24 months."},
]

_VOCAB_DIGEST = """
import hashlib, json
from mentor.testing.tokenizers import tiny_chat_tokenizer, tiny_wordpiece_tokenizer
for build in (tiny_chat_tokenizer, tiny_wordpiece_tokenizer):
    vocab = json.dumps(build().get_vocab(), sort_keys=True)
    print(hashlib.sha256(vocab.encode()).hexdigest())
"""


def _digest(vocab: dict[str, int]) -> str:
    return hashlib.sha256(json.dumps(vocab, sort_keys=True).encode()).hexdigest()


def test_corpus_is_a_few_hundred_varied_sentences() -> None:
    corpus = tiny_corpus()
    assert 200 <= len(corpus) <= 1000
    assert len(set(corpus)) == len(corpus)
    assert corpus == tiny_corpus()


def test_chat_tokenizer_special_tokens() -> None:
    tok = tiny_chat_tokenizer()
    assert len(tok) == 512
    assert tok.convert_ids_to_tokens([0, 1, 2]) == ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    assert (tok.pad_token, tok.bos_token, tok.eos_token) == (
        "<|endoftext|>",
        "<|im_start|>",
        "<|im_end|>",
    )
    assert tok.encode("<|im_start|>user\nhi<|im_end|>")[0] == tok.bos_token_id
    assert tok.encode("<|im_start|>user\nhi<|im_end|>")[-1] == tok.eos_token_id


def test_chat_tokenizer_is_deterministic_and_returns_independent_copies() -> None:
    first, second = tiny_chat_tokenizer(), tiny_chat_tokenizer()
    assert first is not second
    assert first.get_vocab() == second.get_vocab()
    first.add_tokens(["<extra>"])
    assert "<extra>" not in tiny_chat_tokenizer().get_vocab()


def test_vocabularies_are_identical_in_a_fresh_process() -> None:
    # The tokenizers trainer iterates Rust hash maps with per-process random seeds; a fresh
    # interpreter is the only way to see that ties are not broken differently there.
    result = subprocess.run(
        [sys.executable, "-c", _VOCAB_DIGEST],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "PYTHONHASHSEED": "12345"},
        timeout=120,
    )
    expected = [
        _digest(tiny_chat_tokenizer().get_vocab()),
        _digest(tiny_wordpiece_tokenizer().get_vocab()),
    ]
    assert result.stdout.split() == expected


@pytest.mark.parametrize(
    "text",
    [
        "The coffee grinder costs 12 dollars.",
        "  leading and trailing spaces  ",
        "Tabs\tand\nnewlines\r\n, punctuation!?;: (brackets) [x] {y} <z> ~`@#$%^&*_+=|\\/'\"",
        "Email support@example.com or call +1 (555) 010-2030.",
        "zxqv unseen wordsss 0123456789",
        "",
        "naïve café — 東京 🙂",  # bytes outside the corpus still round-trip
    ],
)
def test_chat_tokenizer_round_trips(text: str) -> None:
    tok = tiny_chat_tokenizer()
    assert tok.decode(tok.encode(text)) == text


def test_chat_tokenizer_has_learned_real_merges() -> None:
    tok = tiny_chat_tokenizer()
    text = "Refunds are issued within 5 business days."
    assert len(tok.encode(text)) < len(text) / 2
    assert tok.convert_ids_to_tokens(tok.encode(" dollars")) == ["Ġdollars"]  # Ġ marks a space


def test_chat_tokenizer_rejects_a_vocab_smaller_than_bytes_plus_specials() -> None:
    with pytest.raises(ValueError, match="at least 259"):
        tiny_chat_tokenizer(vocab_size=100)


def test_chat_tokenizer_trains_on_a_custom_corpus() -> None:
    corpus = ["alpha beta gamma delta"] * 20
    tok = tiny_chat_tokenizer(vocab_size=300, corpus=corpus)
    assert len(tok) <= 300
    assert len(tok.encode("alpha beta gamma delta")) <= 4
    assert tok.get_vocab() != tiny_chat_tokenizer(vocab_size=300).get_vocab()


def test_chat_template_renders_chatml() -> None:
    tok = tiny_chat_tokenizer()
    assert tok.chat_template == CHATML_TEMPLATE
    rendered = tok.apply_chat_template(CONVERSATION[:3], tokenize=False)
    assert rendered == (
        "<|im_start|>system\nYou answer questions about store policy.<|im_end|>\n"
        "<|im_start|>user\nHow long do refunds take?<|im_end|>\n"
        "<|im_start|>assistant\nRefunds are issued within 5 business days.<|im_end|>\n"
    )


def test_chat_template_generation_prompt() -> None:
    tok = tiny_chat_tokenizer()
    with_prompt = tok.apply_chat_template(
        CONVERSATION[:2], tokenize=False, add_generation_prompt=True
    )
    without = tok.apply_chat_template(CONVERSATION[:2], tokenize=False)
    assert with_prompt == without + "<|im_start|>assistant\n"


def test_assistant_mask_covers_exactly_assistant_content_and_im_end() -> None:
    tok = tiny_chat_tokenizer()
    out = tok.apply_chat_template(
        CONVERSATION, tokenize=True, return_dict=True, return_assistant_tokens_mask=True
    )
    ids, mask = out["input_ids"], out["assistant_masks"]
    assert len(ids) == len(mask)
    masked = [token for token, keep in zip(ids, mask, strict=True) if keep]
    expected: list[int] = []
    for message in CONVERSATION:
        if message["role"] == "assistant":
            expected += [*tok.encode(message["content"]), tok.eos_token_id]
    assert masked == expected
    # Two contiguous spans, one per assistant turn, each ending on <|im_end|>.
    starts = [i for i in range(len(mask)) if mask[i] and (i == 0 or not mask[i - 1])]
    ends = [i for i in range(len(mask)) if mask[i] and (i + 1 == len(mask) or not mask[i + 1])]
    assert len(starts) == 2
    assert all(ids[end] == tok.eos_token_id for end in ends)
    assert all(ids[start - 1] == tok.encode("\n")[0] for start in starts)


def test_wordpiece_pair_encoding_like_bert() -> None:
    tok = tiny_wordpiece_tokenizer()
    enc = tok("The Coffee grinder!", "Refunds are issued.")
    tokens = tok.convert_ids_to_tokens(enc["input_ids"])
    assert tokens[0] == "[CLS]"
    assert tokens.count("[SEP]") == 2
    assert tokens[-1] == "[SEP]"
    sep = tokens.index("[SEP]")
    assert enc["token_type_ids"] == [0] * (sep + 1) + [1] * (len(tokens) - sep - 1)
    assert enc["attention_mask"] == [1] * len(tokens)
    assert "coffee" in tokens  # lowercased, and a whole word in the learned vocabulary


def test_wordpiece_special_ids_and_decode() -> None:
    tok = tiny_wordpiece_tokenizer()
    assert [tok.pad_token_id, tok.unk_token_id, tok.cls_token_id, tok.sep_token_id] == [0, 1, 2, 3]
    assert tok.mask_token_id == 4
    ids = tok.encode("Refunds are ISSUED within 5 days.")
    assert tok.decode(ids, skip_special_tokens=True) == "refunds are issued within 5 days."
    assert tok.convert_ids_to_tokens(tok.encode("東", add_special_tokens=False)) == ["[UNK]"]


def test_wordpiece_batches_pad_with_id_zero() -> None:
    tok = tiny_wordpiece_tokenizer()
    batch = tok(["short", "a much longer sentence about refunds"], padding=True)
    assert batch["input_ids"][0][-1] == 0
    assert batch["attention_mask"][0][-1] == 0


def test_wordpiece_is_deterministic_and_validates_size() -> None:
    assert tiny_wordpiece_tokenizer().get_vocab() == tiny_wordpiece_tokenizer().get_vocab()
    assert len(tiny_wordpiece_tokenizer(vocab_size=400)) <= 400
    with pytest.raises(ValueError, match="vocab_size"):
        tiny_wordpiece_tokenizer(vocab_size=50)
