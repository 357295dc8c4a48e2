"""A tiny model behind the real server on localhost, and scripted engines for tool-call tests."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import torch
from openai import OpenAI

from mentor.serve.app import create_app
from mentor.serve.engine import Engine
from mentor.serve.runner import serve_in_thread
from mentor.serve.state import Limits, Server
from mentor.testing.engines import ScriptedEngine
from mentor.testing.tiny_models import tiny_llama
from mentor.train.adapters import save_adapter
from mentor.train.lora import LoRAConfig, add_lora, delete_adapter

KEY = "test-key"
ADMIN = "admin-key"


def make_adapter(folder: Path, seed: int) -> Path:
    """A LoRA adapter for ``tiny_llama()`` with non-zero B, so it changes the outputs."""
    model, _ = tiny_llama()
    config = LoRAConfig(r=4, alpha=8, dropout=0.0)
    add_lora(model, config, "x")
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "lora_B" in name:
                param.copy_(torch.randn(param.shape, generator=generator))
    save_adapter(model, folder, name="x", config=config, base_model="tiny")
    delete_adapter(model, "x")
    return folder


@dataclass
class Running:
    url: str
    server: Server

    def client(self, key: str = KEY, **kwargs: Any) -> OpenAI:
        return OpenAI(base_url=f"{self.url}/v1", api_key=key, max_retries=0, **kwargs)


@pytest.fixture
def start() -> Iterator[Callable[..., Running]]:
    """Start servers for the test; all stop at its end."""
    stack: list[Any] = []

    def run(engine: Engine | None = None, keys: Sequence[str] = (KEY,), **kwargs: Any) -> Running:
        if engine is None:
            model, tokenizer = tiny_llama()
            engine = Engine.local(model, tokenizer, "tiny")
        limits = kwargs.pop("limits", Limits())
        server = Server(engine, limits, tuple(keys), **kwargs)
        context = serve_in_thread(create_app(server))
        url = context.__enter__()
        stack.append((context, server))
        return Running(url, server)

    yield run
    for context, server in reversed(stack):
        context.__exit__(None, None, None)
        server.scheduler.close()


def scripted(*replies: str, delay_s: float = 0.0) -> Engine:
    """The server's engine over a :class:`ScriptedEngine` (``.lm``) with the tiny model's tokenizer
    and an 8192-token context; adapters attach to the tiny model."""
    model, tokenizer = tiny_llama()
    lm = ScriptedEngine(
        tokenizer, script=list(replies), name="tiny", context_length=8192, delay_s=delay_s
    )
    return Engine(lm, model)
