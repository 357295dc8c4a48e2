"""Chat generation with a Hugging Face causal LM, streamed piece by piece.

``HFGenerator`` satisfies :class:`~mentor.models.protocols.Generator` (messages in, text out):
it renders the conversation with the model's own chat template and streams the reply from an
:class:`~mentor.models.engine.HFEngine`, the one decode loop every local model runs through.

    lm = HFGenerator(load_causal_lm("smollm2-135m-instruct"), load_tokenizer(...), name="smollm2")
    print("".join(lm.stream([{"role": "user", "content": "Hi!"}], SamplingConfig())))
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING

from mentor.models.engine import HFEngine, Request
from mentor.models.protocols import ChatMessage, SamplingConfig

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase


class HFGenerator:
    """Generate replies with ``model`` and ``tokenizer`` (any causal LM with a chat template)."""

    def __init__(
        self, model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, *, name: str
    ) -> None:
        self.engine = HFEngine(model, tokenizer, name=name)
        self.name = name

    def stream(self, messages: Sequence[ChatMessage], config: SamplingConfig) -> Iterator[str]:
        prompt = self.engine.encode_chat([dict(m) for m in messages])
        return self.engine.stream(Request(prompt, config))
