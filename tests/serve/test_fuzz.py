"""Property-based: no request body drawn from the server's own request models gets a 5xx.

Bodies start from a valid one per route; hypothesis then sets any of the model's fields (and
unknown ones) to JSON values of every kind, with the extremes the probe of issue 17 used (huge
ints, tiny floats, empty strings). The server runs a scripted engine with an index, an embedder,
an admin key and an adapter folder, so every route reaches its own code. Bounded for CI.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx2 as httpx
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel
from tests.rag.conftest import DOCS, index_of
from tests.serve.conftest import ADMIN, scripted

from mentor.rag.retrieve import Retriever, SearchConfig
from mentor.serve.chat import Retrieval
from mentor.serve.schemas import (
    SEED_MAX,
    SEED_MIN,
    AdapterRequest,
    ChatRequest,
    CompletionRequest,
    EmbeddingRequest,
    RetrieveRequest,
)
from mentor.testing import HashEmbedder

EDGES = [0, -1, 1, 2**63, 2**64, -(2**63) - 1, 1e-300, 5e-324, 1e-50, 1e308, -0.0, "", " ",
         "~nosuchuser/a", "../..", "/", "base", "tiny", "tiny:x", "\x00", "<|im_end|>", [], {},
         [""], None, True, False]  # fmt: skip
ROUTES: list[tuple[str, type[BaseModel], dict[str, Any]]] = [
    ("/v1/chat/completions", ChatRequest,
     {"model": "tiny", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4}),
    ("/v1/completions", CompletionRequest, {"model": "tiny", "prompt": "Once", "max_tokens": 4}),
    ("/v1/embeddings", EmbeddingRequest, {"model": "hash", "input": "one"}),
    ("/v1/retrieve", RetrieveRequest, {"query": "invoices"}),
    ("/v1/adapters", AdapterRequest, {"name": "x", "path": "missing"}),
]  # fmt: skip

edges = st.sampled_from(EDGES)
scalars = st.one_of(
    edges,
    edges,
    edges,  # drawn most often: the extremes are where servers break
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=12),
)
values = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=8,
)


@st.composite
def requests(draw: st.DrawFn) -> tuple[str, dict[str, Any]]:
    route, model, base = draw(st.sampled_from(ROUTES))
    body = dict(base)
    names = [*model.model_fields, "filters", "stream", "frobnicate"]
    for name in draw(st.lists(st.sampled_from(names), min_size=1, max_size=3, unique=True)):
        if name == "messages":
            role = draw(st.sampled_from(["user", "system", "assistant", "tool", "developer", "x"]))
            body[name] = [{"role": role, "content": draw(values)}]
        elif name == "filters" and route == "/v1/retrieve":
            body[name] = draw(st.dictionaries(st.text(max_size=10) | st.sampled_from(
                ["doc_id", "page", "", "1=1 OR doc_id", "__class__"]), st.text(max_size=6),
                max_size=2))  # fmt: skip
        else:
            body[name] = draw(values)
    return route, body


@pytest.fixture
def url(start, tmp_path: Path) -> str:
    index = index_of(tmp_path / "index", DOCS)
    retrieval = Retrieval(Retriever(index, HashEmbedder(256)), SearchConfig(k=2), None, "always")
    (tmp_path / "adapters").mkdir()
    running = start(scripted(*["a scripted reply"] * 1000), retrieval=retrieval,
                    embedder=HashEmbedder(32), admin_keys=(ADMIN,),
                    adapter_roots=(tmp_path / "adapters",))  # fmt: skip
    return str(running.url)


PROBE = [  # issue 17's 500s, always tried first
    ("/v1/adapters", {"name": "x", "path": "~nosuchuser/a"}),
    ("/v1/completions", {"model": "tiny", "prompt": ""}),
    ("/v1/completions", {"model": "tiny", "prompt": [""], "stream": True}),
    ("/v1/retrieve", {"query": "x", "mode": "bm25", "filters": {"": "x"}}),
    ("/v1/retrieve", {"query": "x", "mode": "bm25", "filters": {"nosuchfield": "x"}}),
    ("/v1/chat/completions", {"model": "tiny", "messages": [{"role": "user", "content": "hi"}],
                              "temperature": 1e-300, "top_p": 1e-50, "seed": 2**64}),
]  # fmt: skip


def _examples(test: Any) -> Any:
    for route, body in PROBE:
        test = example(request=(route, body))(test)
    return test


@settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(request=requests())
@_examples
def test_no_body_the_schema_admits_gets_a_5xx(
    url: str, request: tuple[str, dict[str, Any]]
) -> None:
    route, body = request
    reply = httpx.post(f"{url}{route}", json=body, headers={"Authorization": f"Bearer {ADMIN}"},
                       timeout=30)  # fmt: skip
    assert reply.status_code < 500, (route, body, reply.text)
    if reply.status_code >= 400:
        assert set(reply.json()["error"]) == {"message", "type", "param", "code"}


@pytest.fixture
def model_url(start) -> str:
    return str(start(keys=(ADMIN,)).url)  # the tiny model: sampling runs through pick_token


@settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
@given(
    temperature=st.floats(0.0, 2.0) | st.sampled_from([5e-324, 1e-300, 1e-30]),
    top_p=st.floats(0.0, 1.0, exclude_min=True) | st.sampled_from([5e-324, 1e-50]),
    seed=st.integers(SEED_MIN, SEED_MAX) | st.sampled_from([SEED_MIN, SEED_MAX]),
    penalty=st.floats(-2.0, 2.0),
)
def test_every_sampling_setting_in_bounds_is_served(
    model_url: str, temperature: float, top_p: float, seed: int, penalty: float
) -> None:
    body = {"model": "tiny", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2,
            "temperature": temperature, "top_p": top_p, "seed": seed,
            "presence_penalty": penalty, "frequency_penalty": penalty}  # fmt: skip
    reply = httpx.post(f"{model_url}/v1/chat/completions", json=body,
                       headers={"Authorization": f"Bearer {ADMIN}"}, timeout=30)  # fmt: skip
    assert reply.status_code == 200, (body, reply.text)
