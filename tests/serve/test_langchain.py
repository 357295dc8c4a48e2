"""LangChain's OpenAI classes against the real server: chat, logprobs, structured output through
response_format, and embeddings (the way they work offline: strings, not tiktoken ids)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import pytest
from pydantic import BaseModel
from tests.serve.conftest import KEY

from mentor.serve.engine import Engine
from mentor.testing.tiny_models import tiny_llama

langchain_openai = pytest.importorskip("langchain_openai")


class Verdict(BaseModel):
    answer: Literal["yes", "no"]
    ok: bool


def test_chat_openai(start) -> None:
    model, tokenizer = tiny_llama()
    running = start(Engine.local(model, tokenizer, "tiny"))
    chat = langchain_openai.ChatOpenAI(
        base_url=f"{running.url}/v1", api_key=KEY, model="tiny", temperature=0, max_tokens=8
    )
    reply = chat.invoke("What is the refund window?")
    assert isinstance(reply.content, str) and reply.content
    assert reply.usage_metadata["output_tokens"] == 8
    scored = chat.bind(logprobs=True, top_logprobs=2).invoke("Hello")
    content = scored.response_metadata["logprobs"]["content"]
    assert "".join(t["token"] for t in content) == scored.content
    assert all(len(t["top_logprobs"]) == 2 for t in content)
    structured = langchain_openai.ChatOpenAI(
        base_url=f"{running.url}/v1", api_key=KEY, model="tiny", temperature=0, max_tokens=80
    ).with_structured_output(Verdict, method="json_schema")
    verdict = structured.invoke("Is the refund window 30 days?")
    assert isinstance(verdict, Verdict)


def test_openai_embeddings(start, tmp_path: Path) -> None:
    from mentor.models.embedding import SentenceEmbedder
    from mentor.testing.tiny_models import tiny_sentence_transformer_folder

    folder = tiny_sentence_transformer_folder(tmp_path / "embedder")
    embedder = SentenceEmbedder(folder, name="tiny-embed")
    running = start(embedder=embedder)
    embeddings = langchain_openai.OpenAIEmbeddings(
        base_url=f"{running.url}/v1",
        api_key=KEY,
        model="tiny-embed",
        tiktoken_enabled=False,  # tiktoken's ids mean nothing to another model's vocabulary
        tiktoken_model_name=str(folder),
    )
    texts = ["refund window", "the shipping policy"]
    vectors = embeddings.embed_documents(texts)
    direct = embedder.embed(texts)
    for got, want in zip(vectors, direct, strict=True):
        assert got == pytest.approx(want.tolist(), abs=1e-5)
    assert embeddings.embed_query("refund window") == pytest.approx(vectors[0], abs=1e-5)
