"""Real Hugging Face tokenizers trained in code on a built-in corpus, for tests.

``tiny_chat_tokenizer`` is a byte-level BPE with the ChatML special tokens and chat template that
SmolLM2 and Qwen use; ``tiny_wordpiece_tokenizer`` is a lowercase BERT-style WordPiece. Both
train in a few milliseconds, need no files or network, and give the same vocabulary on every call
in every process, so tests can compare token ids across runs.
"""

from __future__ import annotations

import functools
import itertools
from collections.abc import Sequence

from tokenizers import Tokenizer, decoders, normalizers, pre_tokenizers, processors, trainers
from tokenizers.models import BPE, WordPiece
from transformers import PreTrainedTokenizerFast

__all__ = [
    "CHATML_TEMPLATE",
    "tiny_chat_tokenizer",
    "tiny_corpus",
    "tiny_wordpiece_tokenizer",
]

ENDOFTEXT = "<|endoftext|>"
IM_START = "<|im_start|>"
IM_END = "<|im_end|>"
CHAT_SPECIAL_TOKENS = (ENDOFTEXT, IM_START, IM_END)
"""Listed in id order: the trainer gives special tokens the first ids (0, 1, 2), as SmolLM2 does."""

BERT_SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")
"""[PAD] first so its id is 0, the ``pad_token_id`` BertConfig assumes by default."""

_BYTE_ALPHABET_SIZE = 256
_WORDPIECE_ALPHABET = tuple(chr(c) for c in range(33, 127) if not chr(c).isupper())
"""Printable ASCII after lowercasing: seeded into the vocabulary so only exotic input is [UNK]."""

# ChatML as SmolLM2/Qwen render it, without a default system prompt so tests control every token.
# The {% generation %} markers let apply_chat_template(return_assistant_tokens_mask=True) mark
# the assistant content and its closing <|im_end|> (what the model must learn to emit), and
# nothing of the role header or the newline after it.
CHATML_TEMPLATE = (
    "{%- for message in messages -%}"
    "{%- if message['role'] == 'assistant' -%}"
    "{{- '<|im_start|>assistant\\n' -}}"
    "{%- generation -%}"
    "{{- message['content'] + '<|im_end|>' -}}"
    "{%- endgeneration -%}"
    "{{- '\\n' -}}"
    "{%- else -%}"
    "{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' -}}"
    "{%- endif -%}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}"
    "{{- '<|im_start|>assistant\\n' -}}"
    "{%- endif -%}"
)

_PRODUCTS = (
    "coffee grinder",
    "standing desk",
    "wireless router",
    "water filter",
    "hiking backpack",
    "electric kettle",
    "noise cancelling headphones",
    "office chair",
)
_ATTRIBUTES = (
    "weighs {n} kilograms",
    "costs {n} dollars",
    "ships within {n} days",
    "has a warranty of {n} months",
    "holds up to {n} litres",
    "supports {n} devices at once",
)
_POLICIES = (
    "Refunds are issued within {n} business days after the item is returned.",
    "Employees may work remotely up to {n} days per week with manager approval.",
    "Support tickets marked urgent must receive a reply within {n} hours.",
    "Passwords must be rotated every {n} days and may not reuse old values.",
    "Travel expenses above {n} euros need a receipt and a signed form.",
    "Customers can cancel a subscription at any time before day {n} of the cycle.",
)
_FACTS = (
    "The capital of France is Paris, and the river Seine runs through it.",
    "Water boils at 100 degrees Celsius at sea level.",
    "A week has seven days; a year usually has 365 of them.",
    "Photosynthesis turns sunlight, water and carbon dioxide into sugar and oxygen.",
    "The quick brown fox jumps over the lazy dog.",
    "Question: what is the return window? Answer: thirty days from delivery.",
    "User asked how to reset the device; the assistant explained the steps.",
    "Please summarise the document in three short sentences.",
    "Error 404 means the page was not found, while 500 is a server error.",
    "Email support@example.com or call +1 (555) 010-2030 for help!",
)


def tiny_corpus() -> tuple[str, ...]:
    """A few hundred English sentences about products, policies, numbers and general facts.

    Built from templates with a fixed enumeration order (no randomness), so BPE sees the same
    text, and learns the same merges, on every call.
    """
    numbers = (2, 3, 5, 7, 10, 12, 14, 24, 30, 48, 90, 250)
    lines: list[str] = []
    for i, (product, attribute) in enumerate(itertools.product(_PRODUCTS, _ATTRIBUTES)):
        n = numbers[i % len(numbers)]
        lines.append(f"The {product} {attribute.format(n=n)}.")
        lines.append(f"Does the {product} {attribute.format(n=n + 1)}? No, it does not.")
    for i, (policy, n) in enumerate(itertools.product(_POLICIES, numbers)):
        prefix = ("Policy", "Rule", "Note")[i % 3]
        lines.append(f"{prefix} {i + 1}: {policy.format(n=n)}")
    lines.extend(_FACTS)
    lines.extend(f"{a} plus {b} equals {a + b}." for a, b in itertools.product(numbers, repeat=2))
    return tuple(lines)


def _check_vocab_size(vocab_size: int, minimum: int) -> None:
    if vocab_size < minimum:
        raise ValueError(f"vocab_size must be at least {minimum}, got {vocab_size}")


@functools.lru_cache(maxsize=8)
def _trained_bpe_json(vocab_size: int, corpus: tuple[str, ...]) -> str:
    # Cached as JSON rather than as an object, so every caller gets a fresh, unshared tokenizer.
    tokenizer = Tokenizer(BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(CHAT_SPECIAL_TOKENS),
        # Seeding all 256 bytes means any text encodes, even characters absent from the corpus.
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(corpus, trainer=trainer)
    return tokenizer.to_str()


def tiny_chat_tokenizer(
    vocab_size: int = 512, corpus: Sequence[str] | None = None
) -> PreTrainedTokenizerFast:
    """A byte-level BPE chat tokenizer with ChatML special tokens and chat template.

    Special tokens: ``<|endoftext|>`` (id 0, the pad token), ``<|im_start|>`` (id 1, the bos
    token) and ``<|im_end|>`` (id 2, the eos token). Nothing is added automatically on encode;
    the chat template places the markers. ``decode(encode(text)) == text`` for any text.

    ``vocab_size`` counts the 256 bytes and the 3 special tokens, so it is at least 259; the
    result can be smaller when ``corpus`` offers too few merges. Training is cached per
    ``(vocab_size, corpus)``; each call returns a new, independent tokenizer object.
    """
    _check_vocab_size(vocab_size, _BYTE_ALPHABET_SIZE + len(CHAT_SPECIAL_TOKENS))
    text = tuple(corpus) if corpus is not None else tiny_corpus()
    backend = Tokenizer.from_str(_trained_bpe_json(vocab_size, text))
    tokenizer = PreTrainedTokenizerFast(  # type: ignore[no-untyped-call]  # unannotated __init__
        tokenizer_object=backend,
        bos_token=IM_START,
        eos_token=IM_END,
        pad_token=ENDOFTEXT,
        model_max_length=2048,
    )
    tokenizer.chat_template = CHATML_TEMPLATE
    return tokenizer


@functools.lru_cache(maxsize=8)
def _trained_wordpiece_json(vocab_size: int, corpus: tuple[str, ...]) -> str:
    trainer = trainers.WordPieceTrainer(
        vocab_size=vocab_size,
        # The trainer numbers "##x" continuation pieces in the (randomised) order it meets them
        # and breaks ties between equally frequent merges by those numbers, so two processes
        # learn different vocabularies. Registering every "##x" up front fixes their numbers.
        special_tokens=[*BERT_SPECIAL_TOKENS, *(f"##{c}" for c in _WORDPIECE_ALPHABET)],
        initial_alphabet=list(_WORDPIECE_ALPHABET),
        show_progress=False,
    )
    trained = _bert_pipeline(Tokenizer(WordPiece(unk_token="[UNK]")))
    trained.train_from_iterator(corpus, trainer=trainer)
    # Rebuild from the learned vocabulary so the "##x" pieces are plain vocabulary entries again,
    # not special tokens that would be matched verbatim in input text and dropped on decode.
    vocab = trained.get_vocab(with_added_tokens=False)
    tokenizer = _bert_pipeline(Tokenizer(WordPiece(vocab=vocab, unk_token="[UNK]")))
    tokenizer.add_special_tokens(list(BERT_SPECIAL_TOKENS))
    tokenizer.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]",
        pair="[CLS] $A [SEP] $B:1 [SEP]:1",  # ":1" is the token type id of the second segment
        special_tokens=[("[CLS]", vocab["[CLS]"]), ("[SEP]", vocab["[SEP]"])],
    )
    return tokenizer.to_str()


def _bert_pipeline(tokenizer: Tokenizer) -> Tokenizer:
    tokenizer.normalizer = normalizers.BertNormalizer(lowercase=True)
    tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tokenizer.decoder = decoders.WordPiece(prefix="##")
    return tokenizer


def tiny_wordpiece_tokenizer(
    vocab_size: int = 512, corpus: Sequence[str] | None = None
) -> PreTrainedTokenizerFast:
    """A lowercase BERT-style WordPiece tokenizer (``[CLS] a [SEP] b [SEP]`` with type ids).

    Special token ids: ``[PAD]`` 0, ``[UNK]`` 1, ``[CLS]`` 2, ``[SEP]`` 3, ``[MASK]`` 4.
    ``tokenizer(text_a, text_b)`` returns ``token_type_ids`` of 0 for the first segment and 1
    for the second, as BERT's tokenizer does. Cached and copied like :func:`tiny_chat_tokenizer`.
    """
    # Room for the special tokens, then every character both word-initial and as "##x".
    _check_vocab_size(vocab_size, len(BERT_SPECIAL_TOKENS) + 2 * len(_WORDPIECE_ALPHABET))
    text = tuple(corpus) if corpus is not None else tiny_corpus()
    backend = Tokenizer.from_str(_trained_wordpiece_json(vocab_size, text))
    return PreTrainedTokenizerFast(  # type: ignore[no-untyped-call]  # unannotated __init__
        tokenizer_object=backend,
        unk_token="[UNK]",
        sep_token="[SEP]",
        pad_token="[PAD]",
        cls_token="[CLS]",
        mask_token="[MASK]",
        model_max_length=512,
        model_input_names=["input_ids", "token_type_ids", "attention_mask"],
    )
