"""The two pluggable model parts every capability builds on: an Embedder and a Generator.

Real implementations live in :mod:`mentor.models.loading` and :mod:`mentor.models.generation`;
deterministic fakes for tests live in :mod:`mentor.testing`.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Literal, Protocol, TypedDict, runtime_checkable

import numpy as np
import numpy.typing as npt

from mentor.models.repetition import LOOP_NGRAM

Role = Literal["system", "user", "assistant", "tool"]


class ChatMessage(TypedDict):
    """One OpenAI-style chat message."""

    role: Role
    content: str


@dataclass(frozen=True)
class SamplingConfig:
    """How a generator picks tokens: the one sampling type of every engine and generator (local
    models, the server, hosted endpoints)."""

    max_new_tokens: int = 256
    """Upper bound on generated tokens (OpenAI's ``max_tokens``)."""
    temperature: float = 0.0
    """0 means greedy decoding; above 0 samples from the softened distribution."""
    top_p: float = 1.0
    """Nucleus sampling mass (used only when temperature > 0)."""
    repetition_penalty: float = 1.0
    """Above 1 discourages repeating tokens already in the text (small models loop without it)."""
    loop_ngram: int = LOOP_NGRAM
    """The loop guard: once the reply's last ``loop_ngram`` tokens repeat an earlier stretch of
    the reply, it ends (``finish_reason`` "stop") without that copy
    (:mod:`mentor.models.repetition`); 0 turns it off. mentor's own answers keep it on; the
    server's OpenAI API turns it off, since OpenAI's models never cut a reply short this way."""
    seed: int | None = None
    """Seed for sampling, for repeatable runs."""
    stop: tuple[str, ...] = field(default_factory=tuple)
    """Strings that end the generation when they appear (not included in the output)."""
    presence_penalty: float = 0.0
    """Subtracted once from the logit of every token already generated (OpenAI's definition)."""
    frequency_penalty: float = 0.0
    """Subtracted from each token's logit once per time it was already generated."""
    ignore_eos: bool = False
    """Keep generating past the end-of-sequence token (benchmarks: a fixed reply length)."""
    logprobs: int | None = None
    """Record each chosen token's log-probability and this many most likely alternatives
    (``Completion.logprobs``; 0: the chosen token's only); None records nothing."""
    json_schema: str | None = None
    """Constrain the reply to JSON matching this JSON schema, given as JSON text
    (``'{"type": "object"}'``: any object); None leaves the reply free."""
    logit_bias: tuple[tuple[int, float], ...] = ()
    """(token id, bias) pairs: each bias is added to that token's logit before the pick
    (OpenAI's ``logit_bias``: 100 all but forces a token, -100 all but bans it); reported
    logprobs stay the model's own. Pairs rather than a dict, so the config stays hashable."""


@runtime_checkable
class Embedder(Protocol):
    """Turns texts into unit-length vectors, one row per text."""

    name: str
    dim: int

    def embed(self, texts: Sequence[str], *, batch_size: int = 32) -> npt.NDArray[np.float32]:
        """Return an array of shape (len(texts), dim), rows L2-normalised."""
        ...


@runtime_checkable
class Generator(Protocol):
    """Writes the assistant's next message for a conversation, piece by piece."""

    name: str

    def stream(self, messages: Sequence[ChatMessage], config: SamplingConfig) -> Iterator[str]:
        """Yield text pieces whose concatenation is the reply."""
        ...


def complete(generator: Generator, messages: Sequence[ChatMessage], config: SamplingConfig) -> str:
    """The whole reply of ``generator`` as one string."""
    return "".join(generator.stream(messages, config))


@runtime_checkable
class BatchGenerator(Protocol):
    """A generator that also answers many conversations at once (rows decoded side by side)."""

    def complete_many(
        self, conversations: Sequence[Sequence[ChatMessage]], config: SamplingConfig
    ) -> list[str]:
        """Each conversation's whole reply, in order."""
        ...


def complete_all(
    generator: Generator, conversations: Sequence[Sequence[ChatMessage]], config: SamplingConfig
) -> Iterator[str]:
    """Each conversation's whole reply, in order: all at once from one batch where
    ``generator`` can (:class:`BatchGenerator`), else each as soon as it is written (a caller
    that saves replies as they come loses at most one when stopped)."""
    if isinstance(generator, BatchGenerator):
        if conversations:
            yield from generator.complete_many(conversations, config)
        return
    for messages in conversations:
        yield complete(generator, messages, config)
