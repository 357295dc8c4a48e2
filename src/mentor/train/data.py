"""Training data for supervised fine-tuning of a causal LM: chat files to packed, labelled batches.

The pipeline is ``load_sft_examples`` (a chat or qa JSONL file to :class:`Example` s, every bad
line reported at once as a :class:`DataError`), then ``pack`` (several examples per row) or
``unpacked`` (one per row), then ``collate`` (rows to a padded :class:`Batch` of tensors)::

    examples = load_sft_examples(Path("train.jsonl"), tokenizer, max_length=1024)
    # an example longer than max_length is an error by default: overlong="truncate" or "drop"
    rows = pack(examples, seq_len=1024)
    batch = collate(rows[:8], pad_id=tokenizer.pad_token_id)
    logits = model(**batch.model_inputs()).logits  # (B, T, V)

Loss is taken only on what the assistant says: its content and the end-of-turn token that closes
it (``<|im_end|>`` in ChatML), so the model learns to stop. The conversation is rendered with the
tokenizer's own chat template, and each assistant turn is found by rendering the prefix before it
(with the generation prompt) and the prefix that ends with it; a template that does not render
prefixes consistently is refused rather than guessed at. Contents are tokenized as text
(:mod:`mentor.models.chat`): ``<|im_end|>`` written inside an example is learned as characters,
never as the control token, so the one end of turn the model learns is the template's.

Packed rows and attention, as found with transformers 5.x (``masking_utils``): when a forward
pass gets ``position_ids`` that restart at 0 inside a row and ``attention_mask=None``, the
sdpa and eager masks become block-diagonal causal, so packed examples do not see each
other. Two conditions are easy to miss:

* ``use_cache=False`` is needed. The models default ``use_cache`` to ``config.use_cache``
  (``True``), in training mode too, and with a cache the packed detection is skipped: each
  example then attends to the ones before it in its row. :meth:`Batch.model_inputs` passes it.
* Any 2D ``attention_mask`` turns the detection off too. So :func:`collate` gives a padding mask
  only when no row is packed; padded packed rows get ``attention_mask=None`` and their padding
  gets its own position ids (0, 1, ...), which makes it a separate block. Right padding under a
  causal mask is never attended to by the real tokens before it, so nothing else is needed.

``tests/train/test_data.py`` checks that each example's logits inside a packed, padded batch
equal its logits alone, for Llama and Qwen2 with sdpa and eager attention.
"""

from __future__ import annotations

import random
from bisect import bisect_left, insort
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import torch
from pydantic import BaseModel

from mentor.data.io import Problem, read_records
from mentor.data.schemas import ChatRecord, QARecord, TextRecord
from mentor.models.chat import Sentinels, encode_spans, holds_control_string, render_text

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

IGNORE = -100
"""The label of a token no loss is taken on (PyTorch's ``cross_entropy`` ``ignore_index``)."""

Overlong = Literal["error", "truncate", "drop"]
"""What to do with an example longer than ``max_length``: refuse the file, cut it, or drop it."""
OVERLONG_CHOICES: tuple[Overlong, ...] = ("error", "truncate", "drop")

_SFT_SCHEMAS = ("chat", "qa", "text")
_MAX_SHOWN = 10


class DataError(ValueError):
    """A training file with lines that cannot be trained on, each as ``path:line: what``.

    The message shows the first ten problems and how many more there are; ``problems`` has all.
    """

    def __init__(self, problems: Sequence[str]) -> None:
        self.problems = list(problems)
        if len(self.problems) == 1:
            message = self.problems[0]
        else:
            shown = [f"  {p}" for p in self.problems[:_MAX_SHOWN]]
            more = len(self.problems) - len(shown)
            tail = [f"  ... and {more} more"] if more else []
            message = "\n".join([f"{len(self.problems)} problems:", *shown, *tail])
        super().__init__(message)


@dataclass(frozen=True)
class Example:
    """A tokenised conversation; ``labels`` hold the token where loss is taken, else -100."""

    input_ids: list[int]
    labels: list[int]


@dataclass(frozen=True)
class PackedRow:
    """One or more examples laid end to end; ``position_ids`` restart at 0 at each example."""

    input_ids: list[int]
    labels: list[int]
    position_ids: list[int]
    sources: tuple[int, ...] = ()
    """Indices of the examples laid in this row, in order (for per-example side data such as a
    teacher's cached outputs)."""


@dataclass
class Batch:
    """Right-padded rows as tensors, all ``(B, T)``.

    ``labels`` are not shifted (the model's loss shifts them) and are -100 at padding and
    untrained tokens. ``attention_mask`` is 1/0 when unpacked rows are padded, and ``None`` when
    every row is full length or any row is packed (see the module docstring).
    """

    input_ids: torch.Tensor
    labels: torch.Tensor
    position_ids: torch.Tensor
    attention_mask: torch.Tensor | None
    n_targets: int
    """Tokens the loss is taken on after the causal shift: ``(labels[:, 1:] != -100).sum()``."""
    n_tokens: int
    """Tokens that are not padding."""

    def model_inputs(self) -> dict[str, Any]:
        """Keyword arguments for a Hugging Face causal LM's forward (labels left to the caller)."""
        # use_cache=False: with a cache, transformers skips the packed-sequence mask.
        return {
            "input_ids": self.input_ids,
            "position_ids": self.position_ids,
            "attention_mask": self.attention_mask,
            "use_cache": False,
        }


# --- conversations to examples ---------------------------------------------------------------


def _pieces(
    messages: Sequence[Mapping[str, str]], render: Callable[[int, bool], str]
) -> list[tuple[str, bool]]:
    """The rendered conversation cut into ``(text, is an assistant turn)`` pieces, in order.

    ``render(i, generation_prompt)`` renders ``messages[:i]``. An assistant turn's text is what
    rendering ``messages[: i + 1]`` adds to rendering ``messages[:i]`` with the generation
    prompt: its content, end-of-turn token and whatever the template writes after it.
    """
    full = render(len(messages), False)
    pieces: list[tuple[str, bool]] = []
    done = 0  # characters of `full` already cut into pieces
    for i, message in enumerate(messages):
        if message["role"] != "assistant":
            continue
        prompt = render(i, True)
        upto = render(i + 1, False)
        if not (full.startswith(prompt) and full.startswith(upto) and done <= len(prompt)):
            raise ValueError(
                f"the chat template is not prefix-consistent at message {i + 1}: rendering the "
                "conversation up to an assistant turn does not start the full rendering, so the "
                "assistant tokens cannot be located"
            )
        if len(upto) <= len(prompt):
            raise ValueError(f"the chat template renders assistant message {i + 1} as nothing")
        pieces += [(full[done : len(prompt)], False), (full[len(prompt) : len(upto)], True)]
        done = len(upto)
    pieces.append((full[done:], False))
    return [(text, trained) for text, trained in pieces if text]


def _special_ids(tokenizer: PreTrainedTokenizerBase) -> set[int]:
    added = {i for i, token in tokenizer.added_tokens_decoder.items() if token.special}
    return added | set(tokenizer.all_special_ids)


def _turn_labels(ids: list[int], special: set[int]) -> list[int]:
    """Labels of an assistant turn's tokens: all up to its last special token (the end of turn).

    What follows that token (ChatML's newline) is the template's, not the model's to predict.
    A turn without a special token is trained on whole.
    """
    ends = [k for k, token in enumerate(ids) if token in special]
    stop = ends[-1] + 1 if ends else len(ids)
    return ids[:stop] + [IGNORE] * (len(ids) - stop)


def tokenize_chat(
    messages: Sequence[Mapping[str, str]], tokenizer: PreTrainedTokenizerBase
) -> Example:
    """Tokenise a whole conversation with the tokenizer's chat template; loss on assistant turns.

    Each piece (see :func:`_pieces`) is tokenised on its own, so no token straddles the start or
    end of an assistant turn, and the prompt before the first one gets exactly the tokens it
    gets at inference. Nothing is cut. ``ValueError`` when the template cannot render the
    conversation or renders it inconsistently.
    """
    if getattr(tokenizer, "chat_template", None) is None:
        raise ValueError("the tokenizer has no chat template")
    special = _special_ids(tokenizer)
    # A content holding a control-token string is rendered with sentinels in place of contents,
    # so each piece can be cut into template markup and contents encoded as plain text; any
    # other conversation is rendered and tokenized as it always was (same ids as inference).
    sentinels = Sentinels(messages) if holds_control_string(tokenizer, messages) else None
    shown = sentinels.messages if sentinels is not None else messages

    def render(upto: int, generation_prompt: bool) -> str:
        return render_text(tokenizer, shown[:upto], add_generation_prompt=generation_prompt)

    input_ids: list[int] = []
    labels: list[int] = []
    for text, trained in _pieces(messages, render):
        ids: list[int] = (
            encode_spans(tokenizer, sentinels.spans(text))
            if sentinels is not None
            else tokenizer.encode(text, add_special_tokens=False)
        )
        input_ids += ids
        labels += _turn_labels(ids, special) if trained else [IGNORE] * len(ids)
    return Example(input_ids, labels)


def tokenize_text(text: str, tokenizer: PreTrainedTokenizerBase) -> Example:
    """Plain text trained on whole, closed by the end-of-sequence token so the model learns to
    stop (continued pre-training; no chat template)."""
    ids: list[int] = tokenizer.encode(text, add_special_tokens=False)
    if tokenizer.eos_token_id is not None:
        ids.append(int(tokenizer.eos_token_id))
    return Example(ids, list(ids))


def chat_example(
    messages: Sequence[Mapping[str, str]], tokenizer: PreTrainedTokenizerBase, max_length: int
) -> Example:
    """:func:`tokenize_chat` cut to its first ``max_length`` tokens (see :func:`load_sft_data`
    for reporting what a cut loses)."""
    if max_length < 1:
        raise ValueError(f"max_length must be at least 1, got {max_length}")
    return _truncated(tokenize_chat(messages, tokenizer), max_length)


def qa_messages(question: str, answer: str, context: str | None) -> list[dict[str, str]]:
    """A question and answer as a two-turn chat; a context comes before the question."""
    user = f"Context:\n{context}\n\nQuestion: {question}" if context else question
    return [{"role": "user", "content": user}, {"role": "assistant", "content": answer}]


def _record_messages(record: BaseModel) -> list[dict[str, str]]:
    if isinstance(record, ChatRecord):
        return [{"role": m.role, "content": m.content} for m in record.messages]
    if isinstance(record, QARecord):
        return qa_messages(record.question, record.answer, record.context)
    raise TypeError(f"cannot train on a {type(record).__name__}")


@dataclass(frozen=True)
class LongExample:
    """One example longer than ``max_length``: its line, its length, and what a cut loses."""

    line: int
    tokens: int
    answer_tokens: int
    """Tokens the loss is taken on (assistant turns), in the whole example."""
    answer_tokens_cut: int
    """Of those, how many lie past ``max_length`` and would not be trained on."""


@dataclass(frozen=True)
class OverlongReport:
    """The examples of a file longer than ``max_length`` and what was done with them."""

    path: Path
    max_length: int
    policy: Overlong
    examples: tuple[LongExample, ...]

    @property
    def longest(self) -> LongExample:
        return max(self.examples, key=lambda e: e.tokens)

    def __str__(self) -> str:
        n = len(self.examples)
        cut = sum(e.answer_tokens_cut for e in self.examples)
        answer = sum(e.answer_tokens for e in self.examples)
        longest = self.longest
        head = (
            f"{self.path}: {n} example{'s' if n != 1 else ''} longer than max_length "
            f"{self.max_length} tokens (longest {longest.tokens:,} tokens, line {longest.line})"
        )
        if self.policy == "truncate":
            return f"{head}: truncated, {cut:,} of their {answer:,} answer tokens not trained on"
        if self.policy == "drop":
            return f"{head}: dropped, with their {answer:,} answer tokens"
        return (
            f"{head}; truncating would cut {cut:,} of their {answer:,} answer tokens. Raise "
            f"--max-length to {longest.tokens}, or choose --overlong truncate (keep the first "
            f"{self.max_length} tokens) or --overlong drop (leave them out)"
        )


@dataclass
class SFTData:
    """Training examples of one file and the report on over-long ones (``None``: none were)."""

    examples: list[Example]
    overlong: OverlongReport | None


def _long_example(line: int, example: Example, max_length: int) -> LongExample:
    answer = sum(1 for label in example.labels if label != IGNORE)
    kept = sum(1 for label in example.labels[:max_length] if label != IGNORE)
    return LongExample(line, len(example.input_ids), answer, answer - kept)


def load_sft_data(
    path: Path,
    tokenizer: PreTrainedTokenizerBase,
    max_length: int,
    overlong: Overlong = "error",
) -> SFTData:
    """Read chat, qa or text records (any source :func:`read_records` takes) as training
    examples, in file order.

    :class:`DataError` lists every line that cannot be used: unreadable or invalid records, a
    conversation the chat template cannot render, one left with no assistant token to train on
    after truncation to ``max_length``, and with ``overlong="error"`` every example longer than
    ``max_length`` (with the longest and the answer tokens a cut would lose). ``"truncate"``
    keeps the first ``max_length`` tokens, ``"drop"`` leaves the example out; both are reported
    in :attr:`SFTData.overlong` for the caller to show.
    """
    if max_length < 1:
        raise ValueError(f"max_length must be at least 1, got {max_length}")
    if overlong not in OVERLONG_CHOICES:
        raise ValueError(f"overlong must be one of {', '.join(OVERLONG_CHOICES)}, got {overlong!r}")
    if getattr(tokenizer, "chat_template", None) is None:
        raise ValueError("the tokenizer has no chat template; fine-tune an instruct model")
    result = read_records(path)
    problems = list(result.errors)
    usable = result.schema in _SFT_SCHEMAS
    if result.schema is not None and not usable:
        message = f"expected chat, qa or text records, got {result.schema} records"
        problems.append(Problem(result.path, 0, message))
    examples: list[Example] = []
    long: list[LongExample] = []
    for record in result.records if usable else []:
        try:
            whole = (
                tokenize_text(record.data.text, tokenizer)
                if isinstance(record.data, TextRecord)
                else tokenize_chat(_record_messages(record.data), tokenizer)
            )
        except ValueError as exc:
            problems.append(Problem(result.path, record.line, str(exc)))
            continue
        if len(whole.input_ids) > max_length:
            long.append(_long_example(record.line, whole, max_length))
            if overlong != "truncate":
                continue
        example = _truncated(whole, max_length)
        if all(label == IGNORE for label in example.labels):
            message = f"no assistant token left to train on after truncation to {max_length}"
            problems.append(Problem(result.path, record.line, message + " tokens"))
            continue
        examples.append(example)
    report = OverlongReport(result.path, max_length, overlong, tuple(long)) if long else None
    if report is not None and overlong == "error":
        problems.append(Problem(result.path, 0, str(report).removeprefix(f"{result.path}: ")))
        for e in long:
            what = f"{e.tokens:,} tokens, longer than max_length {max_length}"
            cut = f"{e.answer_tokens_cut:,} of {e.answer_tokens:,} answer tokens would be cut"
            problems.append(Problem(result.path, e.line, f"{what} ({cut})"))
    if problems:
        raise DataError([str(p) for p in sorted(problems, key=lambda p: p.line)])
    return SFTData(examples, report)


def load_sft_examples(
    path: Path,
    tokenizer: PreTrainedTokenizerBase,
    max_length: int,
    overlong: Overlong = "error",
) -> list[Example]:
    """The examples of :func:`load_sft_data` alone (over-long ones refused by default)."""
    return load_sft_data(path, tokenizer, max_length, overlong).examples


# --- examples to rows --------------------------------------------------------------------------


def _row(parts: Sequence[Example], sources: Sequence[int] = ()) -> PackedRow:
    """Examples end to end. Each one's first label becomes -100: after the causal shift it would
    be predicted from the previous example's last token."""
    input_ids: list[int] = []
    labels: list[int] = []
    position_ids: list[int] = []
    for part in parts:
        input_ids += part.input_ids
        labels += [IGNORE, *part.labels[1:]]
        position_ids += range(len(part.input_ids))
    return PackedRow(input_ids, labels, position_ids, tuple(sources))


def _truncated(example: Example, length: int) -> Example:
    if len(example.input_ids) <= length:
        return example
    return Example(example.input_ids[:length], example.labels[:length])


def pack(examples: Sequence[Example], seq_len: int) -> list[PackedRow]:
    """Pack examples into rows of at most ``seq_len`` tokens, best-fit decreasing.

    Longest first (ties in input order), each example goes to the row it fills most tightly,
    or starts a new row. Deterministic for a given input order; longer examples are cut to
    ``seq_len``, empty ones dropped. Rows are not padded.
    """
    if seq_len < 1:
        raise ValueError(f"seq_len must be at least 1, got {seq_len}")
    kept = [i for i, e in enumerate(examples) if e.input_ids]  # source index of each part
    parts = [_truncated(examples[i], seq_len) for i in kept]
    order = sorted(range(len(parts)), key=lambda i: -len(parts[i].input_ids))
    rows: list[list[int]] = []  # indices into ``parts``
    free: list[tuple[int, int]] = []  # (tokens still free, row index), ascending
    for i in order:
        size = len(parts[i].input_ids)
        k = bisect_left(free, (size, -1))
        if k == len(free):
            rows.append([])
            space, row = seq_len, len(rows) - 1
        else:
            space, row = free.pop(k)
        rows[row].append(i)
        insort(free, (space - size, row))
    return [_row([parts[i] for i in r], [kept[i] for i in r]) for r in rows]


def unpacked(examples: Sequence[Example]) -> list[PackedRow]:
    """One example per row, in order (no truncation: cut examples when they are made)."""
    return [_row([e], [i]) for i, e in enumerate(examples) if e.input_ids]


# --- rows to a batch ---------------------------------------------------------------------------


def _is_packed(row: PackedRow) -> bool:
    return 0 in row.position_ids[1:]


def collate(rows: Sequence[PackedRow], pad_id: int) -> Batch:
    """Right-pad rows to the longest one: ``pad_id`` in ``input_ids``, -100 in ``labels``.

    Padding's position ids count from 0, a block of its own (see the module docstring).
    """
    if not rows:
        raise ValueError("cannot collate an empty list of rows")
    width = max(len(r.input_ids) for r in rows)
    input_ids: list[list[int]] = []
    labels: list[list[int]] = []
    positions: list[list[int]] = []
    mask: list[list[int]] = []
    for r in rows:
        pad = width - len(r.input_ids)
        input_ids.append(r.input_ids + [pad_id] * pad)
        labels.append(r.labels + [IGNORE] * pad)
        positions.append(r.position_ids + list(range(pad)))
        mask.append([1] * len(r.input_ids) + [0] * pad)
    padded = any(len(r.input_ids) < width for r in rows)
    use_mask = padded and not any(_is_packed(r) for r in rows)
    label_tensor = torch.tensor(labels, dtype=torch.long)
    return Batch(
        input_ids=torch.tensor(input_ids, dtype=torch.long),
        labels=label_tensor,
        position_ids=torch.tensor(positions, dtype=torch.long),
        attention_mask=torch.tensor(mask, dtype=torch.long) if use_mask else None,
        n_targets=int((label_tensor[:, 1:] != IGNORE).sum()),
        n_tokens=sum(len(r.input_ids) for r in rows),
    )


def split_validation(
    examples: list[Example], share: float, seed: int
) -> tuple[list[Example], list[Example]]:
    """Hold out ``share`` of the examples (at least 1, none when there are fewer than 10)."""
    if share <= 0 or len(examples) < 10:
        return examples, []
    order = list(range(len(examples)))
    random.Random(seed).shuffle(order)
    cut = max(1, round(len(examples) * share))
    held = set(order[:cut])
    return (
        [e for i, e in enumerate(examples) if i not in held],
        [e for i, e in enumerate(examples) if i in held],
    )
