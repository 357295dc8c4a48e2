"""``mentor serve`` as users start it: a subprocess with adapters, an index and a request log."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import httpx2 as httpx
import openai
import pytest
import typer
from tests.rag.conftest import DOCS
from tests.serve.conftest import make_adapter

from mentor.serve.commands import is_local, parse_adapters, resolve_admin_keys, resolve_keys
from mentor.serve.runner import free_port
from mentor.testing import tiny_sentence_transformer_folder
from mentor.testing.tiny_models import save_tiny_llama


def test_no_auth_only_on_this_machine() -> None:
    assert is_local("127.0.0.1") and is_local("::1") and is_local("localhost")
    assert not is_local("0.0.0.0") and not is_local("192.168.1.4")
    assert resolve_keys([], True, "127.0.0.1") == ()
    with pytest.raises(typer.Exit):
        resolve_keys([], True, "0.0.0.0")
    assert resolve_keys(["a", "b"], False, "0.0.0.0") == ("a", "b")


def test_keys_from_the_environment_or_a_fresh_one(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MENTOR_API_KEY", "one, two")
    assert resolve_keys([], False, "127.0.0.1") == ("one", "two")
    monkeypatch.delenv("MENTOR_API_KEY")
    (fresh,) = resolve_keys([], False, "127.0.0.1")
    assert fresh.startswith("mentor-") and len(fresh) > 30


def test_adapter_flags() -> None:
    assert parse_adapters(["legal=runs/a"]) == [("legal", Path("runs/a"))]
    with pytest.raises(typer.Exit):
        parse_adapters(["runs/a"])


def test_admin_keys_come_from_the_named_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    assert resolve_admin_keys(None) == ()
    monkeypatch.setenv("ADMIN_KEYS", "root-1, root-2")
    assert resolve_admin_keys("ADMIN_KEYS") == ("root-1", "root-2")
    monkeypatch.setenv("ADMIN_KEYS", " ")
    with pytest.raises(typer.Exit):  # named but empty: a typo must not leave the routes open
        resolve_admin_keys("ADMIN_KEYS")


def test_serve_help_lists_the_admin_options() -> None:
    from typer.testing import CliRunner

    from mentor.cli import app

    text = CliRunner().invoke(app, ["serve", "--help"], env={"COLUMNS": "200"}).output
    assert "--admin-key-env" in text and "--allow-adapter-loading" in text


@pytest.mark.slow
@pytest.mark.e2e
def test_serve_command_end_to_end(tmp_path: Path, device_args: list[str]) -> None:
    model = save_tiny_llama(tmp_path / "model", max_position_embeddings=4096)
    adapters = [make_adapter(tmp_path / name, seed) for name, seed in (("legal", 1), ("hr", 2))]
    docs = tmp_path / "docs"
    docs.mkdir()
    for name, text in DOCS.items():
        (docs / name).write_text(text)
    embedder = tiny_sentence_transformer_folder(tmp_path / "embedder")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MENTOR_API_KEY": "secret"}
    cli = [sys.executable, "-m", "mentor.cli"]
    built = subprocess.run(
        # a random tiny embedder's cosines say nothing: no refusal threshold from them
        [*cli, "rag", "index", str(docs), "--index", str(tmp_path / "idx"),
         "--embedder", str(embedder), "--no-calibrate", "--no-tune"],
        env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert built.returncode == 0, built.stderr[-2000:]
    port = free_port()
    log = tmp_path / "requests.db"
    server = subprocess.Popen(
        [*cli, "serve", "--model", str(model), "--name", "tiny", "--port", str(port),
         "--adapter", f"legal={adapters[0]}", "--adapter", f"hr={adapters[1]}",
         "--rag", str(tmp_path / "idx"), "--log", str(log), "--max-tokens", "64",
         *device_args],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 120
        while True:
            try:
                if httpx.get(f"{url}/health").status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert server.poll() is None, server.stderr.read()[-2000:]  # type: ignore[union-attr]
            assert time.time() < deadline, "the server did not come up"
            time.sleep(0.2)
        client = openai.OpenAI(base_url=f"{url}/v1", api_key="secret", max_retries=0)
        assert {m.id for m in client.models.list().data} == {"tiny", "tiny:legal", "tiny:hr"}
        question = [{"role": "user", "content": "How fast are refunds issued?"}]
        replies = {}
        for model_id in ("tiny:legal", "tiny:hr"):
            reply = client.chat.completions.create(
                model=model_id, messages=question, max_tokens=8, temperature=0
            )
            replies[model_id] = reply.choices[0].message.content
            assert reply.model_extra["sources"]  # type: ignore[index]  # the search ran
        assert replies["tiny:legal"] != replies["tiny:hr"]
        chunks = list(
            client.chat.completions.create(
                model="tiny:hr", messages=question, max_tokens=8, temperature=0, stream=True
            )
        )
        assert (
            "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
            == (replies["tiny:hr"])
        )
        with pytest.raises(openai.AuthenticationError):
            openai.OpenAI(base_url=f"{url}/v1", api_key="nope", max_retries=0).models.list()
        with pytest.raises(openai.BadRequestError, match="max_tokens"):
            client.chat.completions.create(model="tiny", messages=question, max_tokens=65)
        assert client.models.list().data  # still serving
    finally:
        server.terminate()
        server.wait(timeout=30)
    from mentor.monitor.log import read_records

    records = read_records(log)
    assert len(records) == 5  # 3 answered, 401 and 400 (list models is not logged)
    assert {r.status for r in records} == {200, 400, 401}
    answered = [r for r in records if r.status == 200]
    assert all(r.retrieval_scores and r.query == question[0]["content"] for r in answered)
    assert all("secret" not in (r.query or "") for r in records)
