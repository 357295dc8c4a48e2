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
    """Generate replies with ``engine`` (any model with a chat template)."""

    def __init__(self, engine: TextEngine) -> None:
        self.engine = engine
        self.name = engine.name

    def stream(self, messages: Sequence[ChatMessage], config: SamplingConfig) -> Iterator[str]:
        prompt = self.engine.encode_chat([dict(m) for m in messages])
        return self.engine.stream(Request(prompt, config))
