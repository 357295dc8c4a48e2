"""Constrained decoding: whatever a random tiny model wants to say, the reply is valid JSON."""

from __future__ import annotations

import json

import pytest

from mentor.models.constrain import ANY_OBJECT, JsonConstraint, schema_error
from mentor.models.engine import HFEngine, Request
from mentor.models.protocols import SamplingConfig
from mentor.testing.tiny_models import tiny_llama

SCHEMA = {
    "type": "object",
    "properties": {
        "answer": {"type": "string", "enum": ["yes", "no"]},
        "ok": {"type": "boolean"},
    },
    "required": ["answer", "ok"],
}


def test_replies_follow_the_schema_sampled_or_greedy() -> None:
    model, tokenizer = tiny_llama()
    engine = HFEngine(model, tokenizer, name="tiny")
    prompt = tokenizer("The refund")["input_ids"]
    free = engine.generate([Request(prompt, SamplingConfig(max_new_tokens=40))])[0].text
    with pytest.raises(json.JSONDecodeError):
        json.loads(free)  # unconstrained, the model writes no JSON
    configs = [SamplingConfig(max_new_tokens=80, json_schema=json.dumps(SCHEMA))] + [
        SamplingConfig(max_new_tokens=80, json_schema=json.dumps(SCHEMA), temperature=1.0, seed=s)
        for s in range(3)
    ]
    for result in engine.generate([Request(prompt, c) for c in configs], batch_size=4):
        assert result.finish_reason == "stop", result.text
        value = json.loads(result.text)
        assert value["answer"] in ("yes", "no") and isinstance(value["ok"], bool)
        assert set(value) == {"answer", "ok"}


def test_any_object_starts_as_one_and_bad_schemas_are_named() -> None:
    _, tokenizer = tiny_llama()
    allowed = JsonConstraint.build(tokenizer, ANY_OBJECT, stop_ids=[tokenizer.eos_token_id])
    prompt = tokenizer("x")["input_ids"]
    first = {tokenizer.decode([i]) for i in allowed(prompt)}
    assert "{" in first and all(t.strip() in ("", "{") for t in first)
    assert tokenizer.eos_token_id not in allowed(prompt)  # no end before the object closes
    assert schema_error(json.dumps(SCHEMA)) is None
    assert schema_error('{"type": "object", "properties": {"a": {"type": 5}}}') is not None
    with pytest.raises(ValueError, match="cannot be enforced"):
        JsonConstraint.build(tokenizer, '{"type": 5}', stop_ids=[0])
