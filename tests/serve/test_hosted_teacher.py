"""mentor's own server as a hosted teacher: sequence distillation data through the remote client."""

from __future__ import annotations

import json
from pathlib import Path

import httpx2 as httpx
from rich.console import Console
from tests.serve.conftest import KEY

from mentor.distill.sequence import GenerationSettings, HostedTeacher, generate_dataset
from mentor.models.remote import EndpointSettings, open_remote


def _served_requests(url: str) -> float:
    text = httpx.get(f"{url}/metrics", headers={"Authorization": f"Bearer {KEY}"}).text
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith('mentor_requests_total{endpoint="/v1/chat/completions"')
    )


def test_sequence_data_from_mentor_serve_is_paid_once(start, tmp_path: Path) -> None:
    running = start()
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text(
        "".join(json.dumps({"question": f"What is rule {i}?"}) + "\n" for i in range(6))
    )
    settings = EndpointSettings(
        base_url=f"{running.url}/v1",
        model="tiny",
        api_key_env="MENTOR_TEST_SERVE_KEY",
        cache=tmp_path / "responses.sqlite",
        backoff_base_s=0.01,
    )

    def generate(out: Path) -> None:
        teacher = open_remote(settings, environ={"MENTOR_TEST_SERVE_KEY": KEY})
        generate_dataset(
            HostedTeacher(teacher),
            prompts,
            out,
            GenerationSettings(max_new_tokens=8, block=3),
            teacher_name=teacher.settings.label,
            teacher_fingerprint=f"endpoint:{teacher.settings.label}",
            console=Console(quiet=True),
        )
        teacher.close()

    generate(tmp_path / "first.jsonl")
    assert _served_requests(running.url) == 6
    rows = [json.loads(line) for line in (tmp_path / "first.jsonl").read_text().splitlines()]
    assert len(rows) == 6 and all(row["messages"][-1]["role"] == "assistant" for row in rows)
    generate(tmp_path / "second.jsonl")  # every answer comes from the cache
    assert _served_requests(running.url) == 6
    assert (tmp_path / "second.jsonl").read_text() == (tmp_path / "first.jsonl").read_text()
