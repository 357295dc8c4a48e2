"""The server through the real openai client on localhost: chat, streaming, adapters, errors."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import httpx2 as httpx
import openai
import pytest
from tests.serve.conftest import ADMIN, KEY, make_adapter, scripted

from mentor.serve.state import Limits

MESSAGES = [{"role": "user", "content": "What is the refund window?"}]


def test_chat_streamed_and_not_agree(start) -> None:
    client = start().client()
    reply = client.chat.completions.create(
        model="tiny", messages=MESSAGES, max_tokens=12, temperature=0
    )
    stream = client.chat.completions.create(
        model="tiny",
        messages=MESSAGES,
        max_tokens=12,
        temperature=0,
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == reply.choices[0].message.content
    assert chunks[0].choices[0].delta.role == "assistant"
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "length"
    assert chunks[-1].usage is not None
    assert chunks[-1].usage.completion_tokens == reply.usage.completion_tokens == 12
    assert reply.usage.prompt_tokens > 0
    assert reply.usage.total_tokens == reply.usage.prompt_tokens + 12


def test_seeded_sampling_repeats(start) -> None:
    client = start().client()

    def ask() -> str | None:
        reply = client.chat.completions.create(
            model="tiny", messages=MESSAGES, max_tokens=10, temperature=1.0, seed=7
        )
        return reply.choices[0].message.content

    assert ask() == ask()


def test_completions_endpoint(start) -> None:
    client = start().client()
    plain = client.completions.create(
        model="tiny", prompt="The refund", max_tokens=6, temperature=0
    )
    streamed = client.completions.create(
        model="tiny", prompt="The refund", max_tokens=6, temperature=0, stream=True
    )
    assert "".join(c.choices[0].text for c in streamed) == plain.choices[0].text
    assert plain.usage.completion_tokens == 6
    echoed = client.completions.create(
        model="tiny", prompt="The refund", max_tokens=2, temperature=0, echo=True
    )
    assert echoed.choices[0].text.startswith("The refund")


def test_adapters_switch_per_request_and_load_at_run_time(start, tmp_path: Path) -> None:
    running = start(keys=(KEY, ADMIN), admin_keys=(ADMIN,), adapter_roots=(tmp_path,))
    client = running.client()
    engine = running.server.engine
    for name, seed in (("legal", 1), ("hr", 2)):
        engine.add_adapter(name, make_adapter(tmp_path / name, seed))
    ids = {m.id for m in client.models.list().data}
    assert ids == {"tiny", "tiny:legal", "tiny:hr"}

    def answer(model: str) -> str | None:
        reply = client.chat.completions.create(
            model=model, messages=MESSAGES, max_tokens=8, temperature=0
        )
        return reply.choices[0].message.content

    base, legal, hr = answer("tiny"), answer("tiny:legal"), answer("tiny:hr")
    assert len({base, legal, hr}) == 3  # each adapter changes the reply
    assert [answer("tiny:hr"), answer("tiny"), answer("tiny:legal")] == [hr, base, legal]

    http = httpx.Client(base_url=running.url, headers={"Authorization": f"Bearer {ADMIN}"})
    added = http.post("/v1/adapters", json={"name": "ops", "path": str(tmp_path / "legal")})
    assert added.status_code == 200, added.text
    assert answer("tiny:ops") == legal
    assert http.delete("/v1/adapters/legal").status_code == 200
    with pytest.raises(openai.NotFoundError, match="tiny:legal"):
        answer("tiny:legal")
    assert answer("tiny:ops") == legal
    bad = http.post("/v1/adapters", json={"name": "x", "path": str(tmp_path / "missing")})
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "path"


def test_auth(start) -> None:
    running = start()
    with pytest.raises(openai.AuthenticationError):
        running.client(key="wrong").models.list()
    raw = httpx.get(f"{running.url}/v1/models")
    assert raw.status_code == 401
    assert raw.json()["error"]["code"] == "invalid_api_key"
    assert httpx.get(f"{running.url}/health").json()["status"] == "ok"
    open_server = start(keys=())
    assert open_server.client(key="anything").models.list().data[0].id == "tiny"


def test_bad_requests_name_the_field_and_the_server_goes_on(start) -> None:
    running = start(limits=Limits(max_tokens=64, max_body_bytes=4096))
    client = running.client()
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(model="tiny", messages=[{"role": "robot", "content": "x"}])
    assert info.value.body["param"] == "messages.0.role"  # type: ignore[index]
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(model="tiny", messages=MESSAGES, max_tokens=65)
    assert info.value.body["param"] == "max_tokens"  # type: ignore[index]
    with pytest.raises(openai.BadRequestError, match="temperature"):
        client.chat.completions.create(model="tiny", messages=MESSAGES, temperature=3)
    with pytest.raises(openai.BadRequestError, match="messages"):
        client.chat.completions.create(model="tiny", messages=[])
    with pytest.raises(openai.NotFoundError, match="tiny:nope"):
        client.chat.completions.create(model="tiny:nope", messages=MESSAGES)
    with pytest.raises(openai.APIStatusError) as too_big:
        client.chat.completions.create(
            model="tiny", messages=[{"role": "user", "content": "x" * 5000}]
        )
    assert too_big.value.status_code == 413
    raw = httpx.post(
        f"{running.url}/v1/chat/completions",
        content=b"{not json",
        headers={"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"},
    )
    assert raw.status_code == 400
    reply = client.chat.completions.create(model="tiny", messages=MESSAGES, max_tokens=3)
    assert reply.usage.completion_tokens == 3


def test_prompt_longer_than_the_context(start) -> None:
    running = start()
    context = running.server.engine.context_length
    with pytest.raises(openai.BadRequestError, match="context") as info:
        running.client().chat.completions.create(
            model="tiny", messages=[{"role": "user", "content": "a " * (context + 10)}]
        )
    assert info.value.body["code"] == "context_length_exceeded"  # type: ignore[index]


def test_slow_generation_times_out(start) -> None:
    running = start(scripted("one two three four five six", delay_s=0.2),
                    limits=Limits(timeout_s=0.3))  # fmt: skip
    with pytest.raises(openai.APIStatusError) as info:
        running.client().chat.completions.create(model="tiny", messages=MESSAGES)
    assert info.value.status_code == 504
    assert running.client().models.list().data  # still serving


def test_concurrent_clients_all_answered(start) -> None:
    running = start(limits=Limits(max_queue=64))
    client = running.client()
    errors: list[BaseException] = []
    tokens: list[int] = []

    def one(i: int) -> None:
        try:
            stream = i % 2 == 0
            reply = client.chat.completions.create(
                model="tiny", messages=MESSAGES, max_tokens=5, stream=stream
            )
            tokens.append(5 if stream else reply.usage.completion_tokens)  # type: ignore[union-attr]
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=one, args=(i,)) for i in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and len(tokens) == 16


def test_full_queue_answers_503(start) -> None:
    running = start(scripted(*["slow reply here"] * 8, delay_s=0.3), limits=Limits(max_queue=1))
    client = running.client()
    statuses: list[int] = []

    def one() -> None:
        try:
            client.chat.completions.create(model="tiny", messages=MESSAGES)
            statuses.append(200)
        except openai.APIStatusError as exc:
            statuses.append(exc.status_code)

    threads = [threading.Thread(target=one) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert 503 in statuses and 200 in statuses


def test_metrics_and_health(start) -> None:
    running = start()
    client = running.client()
    client.chat.completions.create(model="tiny", messages=MESSAGES, max_tokens=4)
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model="other", messages=MESSAGES, max_tokens=4)
    text = httpx.get(f"{running.url}/metrics", headers={"Authorization": f"Bearer {KEY}"}).text
    assert (
        'mentor_requests_total{endpoint="/v1/chat/completions",model="tiny",status="200"} 1.0'
        in text
    )
    assert 'status="404"' in text
    assert 'mentor_completion_tokens_total{model="tiny"} 4.0' in text
    assert "mentor_queue_depth 0.0" in text
    health = httpx.get(f"{running.url}/health").json()
    assert health["model"] == "tiny" and health["queue"] == 0


def test_error_shape_is_openai_s(start) -> None:
    running = start()
    raw = httpx.post(
        f"{running.url}/v1/chat/completions",
        json={"model": "tiny", "messages": MESSAGES, "n": 17},
        headers={"Authorization": f"Bearer {KEY}"},
    )
    body = raw.json()
    assert raw.status_code == 400
    assert set(body["error"]) == {"message", "type", "param", "code"}
    assert body["error"]["param"] == "n"
    json.dumps(body)
