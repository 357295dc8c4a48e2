"""Chat generation over any text engine, streamed piece by piece.

``EngineGenerator`` satisfies :class:`~mentor.models.protocols.Generator` (messages in, text out)
for any :class:`~mentor.models.engine.TextEngine`, mentor's own or a vLLM server
(:func:`~mentor.models.backends.open_engine`): it renders the conversation with the model's own
chat template and streams the reply.

    with open_engine("smollm2-135m-instruct", settings=EngineSettings()) as engine:
        lm = EngineGenerator(engine)
        print("".join(lm.stream([{"role": "user", "content": "Hi!"}], SamplingConfig())))
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

from mentor.models.engine import Request, TextEngine
from mentor.models.protocols import ChatMessage, SamplingConfig


class EngineGenerator:
    """Generate replies with ``engine`` (any model with a chat template); many conversations at
    once go through the engine's batched decoding, ``batch_size`` rows side by side."""

    def __init__(self, engine: TextEngine, *, batch_size: int = 16) -> None:
        self.engine = engine
        self.name = engine.name
        self.batch_size = batch_size

    def stream(self, messages: Sequence[ChatMessage], config: SamplingConfig) -> Iterator[str]:
        prompt = self.engine.encode_chat([dict(m) for m in messages])
        return self.engine.stream(Request(prompt, config))

    def complete_many(
        self, conversations: Sequence[Sequence[ChatMessage]], config: SamplingConfig
    ) -> list[str]:
        requests = [
            Request(self.engine.encode_chat([dict(m) for m in c]), config) for c in conversations
        ]
        return [c.text for c in self.engine.generate(requests, batch_size=self.batch_size)]
