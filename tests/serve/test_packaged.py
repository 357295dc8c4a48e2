"""The real SmolLM2 behind the server, with a real MiniLM index over the Tidepool help centre."""

from __future__ import annotations

from pathlib import Path

import pytest

from mentor.models.loading import load_embedder
from mentor.rag.index import build_index
from mentor.rag.retrieve import Retriever, SearchConfig
from mentor.serve.chat import Retrieval
from mentor.serve.engine import load_engine

pytestmark = [pytest.mark.packaged, pytest.mark.slow]
DOCS = Path(__file__).resolve().parents[2] / "examples" / "tidepool" / "docs"


def test_smollm2_answers_from_the_index_through_the_openai_client(start, tmp_path: Path) -> None:
    embedder = load_embedder("minilm-l6", device="cpu")
    build_index(tmp_path / "idx", [DOCS], embedder)
    retrieval = Retrieval(
        Retriever(tmp_path / "idx", embedder), SearchConfig(k=3), None, mode="always"
    )
    engine = load_engine("smollm2-135m-instruct", name="smollm2", device="cpu")
    client = start(engine, retrieval=retrieval).client()
    question = [{"role": "user", "content": "How long do I have to ask for a refund?"}]
    reply = client.chat.completions.create(
        model="smollm2", messages=question, max_tokens=48, temperature=0
    )
    sources = reply.model_extra["sources"]  # type: ignore[index]
    assert any(s["doc_id"].endswith("kb-billing.md") for s in sources)
    assert reply.choices[0].message.content
    assert reply.usage.prompt_tokens > 200  # the rules, the tool and the quoted passages
    streamed = client.chat.completions.create(
        model="smollm2", messages=question, max_tokens=48, temperature=0, stream=True
    )
    text = "".join(c.choices[0].delta.content or "" for c in streamed if c.choices)
    assert text == reply.choices[0].message.content
