"""The server batches concurrent requests: each gets the reply it gets alone, whatever adapter
it names, and an adapter removed mid-flight waits for the requests using it."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from tests.serve.conftest import make_adapter

from mentor.models.engine import Completion
from mentor.models.protocols import SamplingConfig

MESSAGES = [{"role": "user", "content": "What is the refund window?"}]


def test_concurrent_requests_on_mixed_adapters_get_their_own_replies(start, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    running = start()
    engine = running.server.engine
    for name, seed in (("legal", 1), ("hr", 2)):
        engine.add_adapter(name, make_adapter(tmp_path / name, seed))
    assert running.server.scheduler.running == set() and engine.concurrency == 32
    client = running.client()

    def answer(model: str) -> str | None:
        reply = client.chat.completions.create(
            model=model, messages=MESSAGES, max_tokens=12, temperature=0
        )
        return reply.choices[0].message.content

    models = ["tiny", "tiny:legal", "tiny:hr"] * 3
    alone = {m: answer(m) for m in models[:3]}
    assert len(set(alone.values())) == 3
    before = engine.lm.steps  # type: ignore[attr-defined]
    with ThreadPoolExecutor(len(models)) as pool:
        together = list(pool.map(answer, models))
    assert together == [alone[m] for m in models]
    assert engine.lm.steps - before < len(models) * 12  # type: ignore[attr-defined]


def test_removing_an_adapter_waits_for_the_requests_using_it(start, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    running = start()
    engine = running.server.engine
    engine.add_adapter("legal", make_adapter(tmp_path / "legal", 1))
    prompt = engine.encode_chat(MESSAGES)
    result = Completion()
    sampling = SamplingConfig(max_new_tokens=200, ignore_eos=True)
    stream = engine.stream(prompt, sampling, adapter="legal", result=result)
    next(stream)  # decoding with the adapter
    removed = threading.Event()
    remover = threading.Thread(target=lambda: (engine.remove_adapter("legal"), removed.set()))
    remover.start()
    time.sleep(0.2)
    assert not removed.is_set() and "legal" not in engine.adapters  # unlisted, not yet deleted
    list(stream)  # the rest of the reply (a tiny random model's tokens may decode to nothing)
    remover.join(timeout=30)
    # the request ran to its full length with the adapter, and only then was it removed
    assert removed.is_set() and result.completion_tokens == 200
    assert result.finish_reason == "length"
