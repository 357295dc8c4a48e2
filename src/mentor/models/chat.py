"""Conversations to token ids, where only the chat template's own markup becomes control tokens.

A chat template writes control tokens (``<|im_start|>``, ``<|im_end|>`` in ChatML) around each
message's content. Rendering the template to a string and tokenizing that string would also turn
any such string *inside* a content (a user's message, a retrieved document, a tool result, a
training example) into the real control token, so ``"<|im_end|><|im_start|>system ..."`` in a
document opens a fake system turn. Here every content is text, whatever it holds::

    ids = encode_chat(tokenizer, [{"role": "user", "content": "Hi!"}])   # + generation prompt
    spans = render_spans(tokenizer, messages, add_generation_prompt=False)
    ids = encode_spans(tokenizer, spans)

How: when no content holds a control token's string, the conversation is rendered and
tokenized exactly as before, so ordinary prompts keep their token ids. Otherwise the template is
rendered with a unique sentinel in place of each content; the rendering is cut at the sentinels
into markup spans (tokenized as usual) and content spans (:func:`encode_content`: cut inside
every control token's string before tokenizing, so none can match).

Control tokens are the tokenizer's special tokens (``all_special_tokens`` and every added token
flagged special: ChatML's ``<|im_start|>``/``<|im_end|>``, SmolLM2's ``<file_sep>`` ...). Added
tokens *not* flagged special (Qwen's ``<tool_call>``, ``<think>``) are text-level vocabulary the
model writes inside its own replies; they are read as the tokenizer reads them, so a fine-tuning
example or a replayed tool call keeps the token the model emits rather than its spelling.

The sentinel rendering puts each content exactly where the template puts the message's content;
a template that rewrites contents (strips them) gets them as sent, and one that cuts into a
sentinel (slices a content) is refused with ``ValueError``. Only string contents are guarded:
strings the template renders from elsewhere (a ``tools`` list, ``tool_calls`` arguments) are
markup to it.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

Message = Mapping[str, Any]


@dataclass(frozen=True)
class Span:
    """A stretch of a rendered conversation: template markup, or one message's content."""

    text: str
    content: bool


def control_strings(tokenizer: PreTrainedTokenizerBase) -> tuple[str, ...]:
    """The strings of the tokenizer's control (special) tokens, longest first."""
    added = {t.content for t in tokenizer.added_tokens_decoder.values() if t.special}
    added.update(str(t) for t in tokenizer.all_special_tokens)
    return tuple(sorted((s for s in added if s), key=len, reverse=True))


def holds_control_string(tokenizer: PreTrainedTokenizerBase, messages: Sequence[Message]) -> bool:
    """Whether any message's content holds a control token's string."""
    strings = control_strings(tokenizer)
    return any(
        isinstance(m.get("content"), str) and any(s in m["content"] for s in strings)
        for m in messages
    )


def render_text(
    tokenizer: PreTrainedTokenizerBase,
    messages: Sequence[Message],
    *,
    add_generation_prompt: bool,
    tools: Sequence[Any] = (),
) -> str:
    """The template's rendering of the conversation as one string (``ValueError`` on failure)."""
    from jinja2 import TemplateError

    if not getattr(tokenizer, "chat_template", None):
        raise ValueError("the tokenizer has no chat template")
    kwargs: dict[str, Any] = {"tools": list(tools)} if tools else {}
    try:
        text = tokenizer.apply_chat_template(
            [dict(m) for m in messages],
            tokenize=False,
            add_generation_prompt=add_generation_prompt,
            **kwargs,
        )
    except TemplateError as exc:
        raise ValueError(f"the chat template failed: {exc}") from None
    if not isinstance(text, str):
        raise TypeError(f"apply_chat_template returned {type(text).__name__}, not text")
    return text


class Sentinels:
    """Stand-ins for the contents of one conversation: render with them, then cut at them.

    The same object renders any prefix of the conversation with the same sentinels, so prefix
    renderings can be compared as strings (what SFT label masking does).
    """

    def __init__(self, messages: Sequence[Message]) -> None:
        nonce = secrets.token_hex(6)
        self._pattern = re.compile(f"\ue000{nonce}:([0-9]+)\ue001")
        self.contents: list[str | None] = []
        self.messages: list[dict[str, Any]] = []
        for i, message in enumerate(messages):
            content = message.get("content")
            text = content if isinstance(content, str) else None
            self.contents.append(text)
            self.messages.append(
                {**message, "content": f"\ue000{nonce}:{i}\ue001"} if text else dict(message)
            )

    def spans(self, rendered: str) -> list[Span]:
        """A sentinel rendering cut into markup and content spans (empty spans left out)."""
        spans: list[Span] = []
        done = 0
        for match in self._pattern.finditer(rendered):
            content = self.contents[int(match.group(1))]
            assert content is not None  # only string contents get sentinels
            spans += [Span(rendered[done : match.start()], False), Span(content, True)]
            done = match.end()
        spans.append(Span(rendered[done:], False))
        # what is left of a sentinel that the template cut (sliced, stripped) into
        if any(ch in s.text for s in spans if not s.content for ch in "\ue000\ue001"):
            raise ValueError("the chat template cut into a message's content; cannot encode it")
        return [s for s in spans if s.text]


def render_spans(
    tokenizer: PreTrainedTokenizerBase,
    messages: Sequence[Message],
    *,
    add_generation_prompt: bool,
    tools: Sequence[Any] = (),
) -> list[Span]:
    """The conversation rendered by the chat template, cut into markup and content spans."""
    sentinels = Sentinels(messages)
    rendered = render_text(
        tokenizer, sentinels.messages, add_generation_prompt=add_generation_prompt, tools=tools
    )
    return sentinels.spans(rendered)


def encode_content(tokenizer: PreTrainedTokenizerBase, text: str) -> list[int]:
    """Token ids of ``text`` in which no control token is ever matched.

    The text is cut one character into every occurrence of a control token's string and the
    pieces are tokenized one by one, so no piece holds a whole one; decoding gives ``text`` back.
    """
    strings = control_strings(tokenizer)
    cuts = sorted(
        {
            m.start() + 1
            for s in strings
            for m in re.finditer(f"(?={re.escape(s)})", text)
            if len(s) > 1
        }
    )
    ids: list[int] = []
    for start, end in zip([0, *cuts], [*cuts, len(text)], strict=True):
        if end > start:
            ids += tokenizer.encode(text[start:end], add_special_tokens=False)
    return ids


def encode_spans(tokenizer: PreTrainedTokenizerBase, spans: Sequence[Span]) -> list[int]:
    """Token ids of rendered spans: markup as the tokenizer reads it, contents as text."""
    ids: list[int] = []
    for span in spans:
        if span.content:
            ids += encode_content(tokenizer, span.text)
        else:
            ids += tokenizer.encode(span.text, add_special_tokens=False)
    return ids


def encode_chat(
    tokenizer: PreTrainedTokenizerBase,
    messages: Sequence[Message],
    *,
    tools: Sequence[Any] = (),
    add_generation_prompt: bool = True,
) -> list[int]:
    """Token ids of a conversation (plus the assistant's generation prompt, by default) where
    only the template's markup becomes control tokens; see the module docstring."""
    if not holds_control_string(tokenizer, messages):
        text = render_text(
            tokenizer, messages, add_generation_prompt=add_generation_prompt, tools=tools
        )
        return [int(i) for i in tokenizer(text, add_special_tokens=False)["input_ids"]]
    spans = render_spans(
        tokenizer, messages, add_generation_prompt=add_generation_prompt, tools=tools
    )
    return [int(i) for i in encode_spans(tokenizer, spans)]
