"""Chat generation with a Hugging Face causal LM, streamed piece by piece.

``HFGenerator`` satisfies :class:`~mentor.models.protocols.Generator`: it renders the
conversation with the model's own chat template and yields text as tokens arrive.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any

import torch

from mentor.models.protocols import ChatMessage, SamplingConfig

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase


class HFGenerator:
    """Generate replies with ``model`` and ``tokenizer`` (any causal LM with a chat template)."""

    def __init__(
        self, model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, *, name: str
    ) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.name = name

    def encode_chat(self, messages: Sequence[ChatMessage]) -> torch.Tensor:
        """Token ids (1, T) of the conversation plus the assistant's generation prompt."""
        if not self.tokenizer.chat_template:
            raise ValueError(f"{self.name}: the tokenizer has no chat template")
        text = self.tokenizer.apply_chat_template(
            [{"role": m["role"], "content": m["content"]} for m in messages],
            tokenize=False,
            add_generation_prompt=True,
        )
        ids = self.tokenizer(text, return_tensors="pt", add_special_tokens=False)["input_ids"]
        return ids.to(self.model.device)  # type: ignore[no-any-return]

    def _generate_kwargs(self, input_ids: torch.Tensor, config: SamplingConfig) -> dict[str, Any]:
        kwargs: dict[str, Any] = {
            "input_ids": input_ids,
            "attention_mask": torch.ones_like(input_ids),
            "max_new_tokens": config.max_new_tokens,
            "do_sample": config.temperature > 0,
            "pad_token_id": self.tokenizer.pad_token_id or self.tokenizer.eos_token_id,
            "repetition_penalty": config.repetition_penalty,
        }
        if config.temperature > 0:
            kwargs.update(temperature=config.temperature, top_p=config.top_p, top_k=0)
        else:  # the checkpoint's sampling defaults must not leak into greedy decoding
            kwargs.update(temperature=None, top_p=None, top_k=None)
        if config.stop:
            kwargs.update(stop_strings=list(config.stop), tokenizer=self.tokenizer)
        return kwargs

    def stream(self, messages: Sequence[ChatMessage], config: SamplingConfig) -> Iterator[str]:
        from transformers import TextIteratorStreamer

        streamer = TextIteratorStreamer(
            self.tokenizer,
            skip_prompt=True,
            skip_special_tokens=True,
        )
        kwargs = self._generate_kwargs(self.encode_chat(messages), config)
        failure: list[BaseException] = []

        def work() -> None:
            try:
                if config.seed is not None:
                    torch.manual_seed(config.seed)
                with torch.inference_mode():
                    self.model.generate(**kwargs, streamer=streamer)  # type: ignore[operator]
            except BaseException as exc:  # re-raised in the caller's thread below
                failure.append(exc)
                streamer.end()  # type: ignore[no-untyped-call]

        thread = threading.Thread(target=work, daemon=True)
        thread.start()
        yield from _cut_at_stop(streamer, config.stop)
        thread.join()
        if failure:
            raise failure[0]


def _cut_at_stop(pieces: Iterator[str], stop: tuple[str, ...]) -> Iterator[str]:
    """Pass pieces through, cut cleanly at the first stop string."""
    cutter = StopCutter(stop)
    for piece in pieces:
        text = cutter.feed(piece)
        if text:
            yield text
        if cutter.stopped:
            return
    rest = cutter.flush()
    if rest:
        yield rest


class StopCutter:
    """Passes text through, holding back just enough to cut cleanly at a stop string."""

    def __init__(self, stop: Sequence[str]) -> None:
        self.stop = tuple(s for s in stop if s)
        self._hold = max((len(s) for s in self.stop), default=1) - 1
        self._buffer = ""
        self.stopped = False

    def feed(self, text: str) -> str:
        if not self.stop:
            return text
        self._buffer += text
        hits = [self._buffer.find(s) for s in self.stop if s in self._buffer]
        if hits:
            self.stopped = True
            out, self._buffer = self._buffer[: min(hits)], ""
            return out
        cut = max(0, len(self._buffer) - self._hold)
        out, self._buffer = self._buffer[:cut], self._buffer[cut:]
        return out

    def flush(self) -> str:
        out, self._buffer = self._buffer, ""
        return out


def render_chat(tokenizer: PreTrainedTokenizerBase, prompt: Sequence[ChatMessage]) -> list[int]:
    text = tokenizer.apply_chat_template(
        [{"role": m["role"], "content": m["content"]} for m in prompt],
        tokenize=False,
        add_generation_prompt=True,
    )
    assert isinstance(text, str)
    ids: list[int] = tokenizer(text, add_special_tokens=False)["input_ids"]
    return ids


def padding_id(tokenizer: PreTrainedTokenizerBase) -> int:
    """The id to pad generation batches with: the pad token, else the end-of-sequence token."""
    pad_id = tokenizer.pad_token_id
    if pad_id is None:
        pad_id = tokenizer.eos_token_id
    if not isinstance(pad_id, int):
        raise ValueError("the tokenizer has neither a pad token nor an eos token")
    return pad_id


def left_pad(rows: Sequence[list[int]], pad_id: int, device: Any) -> dict[str, torch.Tensor]:
    """Rows of ids left padded into one batch, so every row's new tokens start at one column."""
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)  # (B, T)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, row in enumerate(rows):
        ids[i, width - len(row) :] = torch.tensor(row, dtype=torch.long)
        mask[i, width - len(row) :] = 1
    return {"input_ids": ids.to(device), "attention_mask": mask.to(device)}
