"""``mentor serve --engine vllm`` without vLLM: mentor's server in front of a fake vLLM server.

Chat requests reach vLLM's ``/v1/completions`` as token ids from mentor's chat template, with the
request's adapter as the model; ``POST/DELETE /v1/adapters`` register and unregister with vLLM.
The same through a real vLLM process is in ``tests/models/test_vllm.py``."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from mentor.models.vllm import open_vllm
from mentor.models.vllm_server import VLLMSettings
from mentor.serve.engine import Engine
from mentor.testing.fake_openai import FakeOpenAI
from mentor.testing.tokenizers import tiny_chat_tokenizer

from .conftest import ADMIN, Running, make_adapter


def test_serve_routes_generation_and_adapters_through_vllm(
    start: Callable[..., Running], tmp_path: Path
) -> None:
    base = tmp_path / "base"
    base.mkdir()
    (base / "config.json").write_text("{}")
    adapter = make_adapter(tmp_path / "legal", seed=1)
    identity = adapter / "mentor_adapter.json"
    identity.write_text(json.dumps(json.loads(identity.read_text()) | {"base_model": str(base)}))
    tokenizer = tiny_chat_tokenizer()
    fake = FakeOpenAI(model="tiny", completer=lambda model, ids: f"{model} saw {len(ids)} ids")
    with (
        fake.serve() as url,
        open_vllm(base, tokenizer, name="tiny", settings=VLLMSettings(url=url)) as lm,
    ):
        running = start(Engine.remote(lm, "tiny"), admin_keys=(ADMIN,), adapter_roots=(tmp_path,))
        client = running.client()
        messages = [{"role": "user", "content": "Hello there"}]
        reply = client.chat.completions.create(model="tiny", messages=messages, max_tokens=20)  # type: ignore[arg-type]
        prompt = lm.encode_chat(messages)
        assert reply.choices[0].message.content == f"tiny saw {len(prompt)} ids"
        assert fake.calls[-1].body["prompt"] == prompt  # mentor's template, as token ids

        headers = {"Authorization": f"Bearer {ADMIN}"}
        added = _call(
            "POST", f"{running.url}/v1/adapters", {"name": "legal", "path": str(adapter)}, headers
        )
        assert added[0] == 200, added
        assert fake.adapters == {"legal": str(adapter.resolve())}
        reply = client.chat.completions.create(model="tiny:legal", messages=messages, max_tokens=20)  # type: ignore[arg-type]
        assert reply.choices[0].message.content == f"legal saw {len(prompt)} ids"
        assert _call("DELETE", f"{running.url}/v1/adapters/legal", None, headers)[0] == 200
        assert fake.adapters == {}
        wrong = make_adapter(tmp_path / "wrong", seed=2)  # recorded base "tiny": not this one
        refused = _call(
            "POST", f"{running.url}/v1/adapters", {"name": "w", "path": str(wrong)}, headers
        )
        assert refused[0] == 400 and "trained on tiny" in refused[1]["error"]["message"]


def _call(method: str, url: str, body: object, headers: dict[str, str]) -> tuple[int, object]:
    import urllib.error
    import urllib.request

    data = json.dumps(body).encode() if body is not None else None
    headers = {"content-type": "application/json", **headers}
    request = urllib.request.Request(url, data=data, method=method, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def test_serve_passes_logprobs_json_and_logit_bias_on_to_vllm(
    start: Callable[..., Running], tmp_path: Path
) -> None:
    """Through the official client: what vLLM sends back (the fake's numbers, fake_logprobs)
    comes out in OpenAI's shape, and the request's constraints reach vLLM's body."""
    base = tmp_path / "base"
    base.mkdir()
    (base / "config.json").write_text("{}")
    tokenizer = tiny_chat_tokenizer()
    fake = FakeOpenAI(model="tiny", completer=lambda model, ids: '{"a": 1}')
    with (
        fake.serve() as url,
        open_vllm(base, tokenizer, name="tiny", settings=VLLMSettings(url=url)) as lm,
    ):
        client = start(Engine.remote(lm, "tiny")).client()
        messages = [{"role": "user", "content": "Hello there"}]
        schema = {"type": "object", "properties": {"a": {"type": "integer"}}}
        reply = client.chat.completions.create(
            model="tiny", messages=messages, max_tokens=20, logprobs=True, top_logprobs=2,  # type: ignore[arg-type]
            logit_bias={"5": 100}, response_format={"type": "json_schema",  # type: ignore[typeddict-item]
            "json_schema": {"name": "a", "schema": schema}},
        )  # fmt: skip
        body = fake.calls[-1].body
        assert body["structured_outputs"] == {"json": schema}
        assert body["logit_bias"] == {"5": 100.0} and body["logprobs"] == 2
        content = reply.choices[0].logprobs.content  # type: ignore[union-attr]
        assert [t.logprob for t in content] == [-0.5, -1.0]  # the fake's, one per word
        assert [t.token for t in content] == [tokenizer.decode([10]), tokenizer.decode([11])]
        assert [[a.logprob for a in t.top_logprobs] for t in content] == [[-0.1, -0.2]] * 2
        # echo + logprobs: the prompt's own scores, from vLLM's prompt_logprobs
        echoed = client.completions.create(
            model="tiny", prompt=[5, 6, 7], max_tokens=0, echo=True, logprobs=1
        )
        scores = echoed.choices[0].logprobs
        assert scores.token_logprobs == [None, -0.25, -0.5]  # type: ignore[union-attr]
        assert fake.calls[-1].body["prompt_logprobs"] == 1
