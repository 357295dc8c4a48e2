"""Hosted models over an OpenAI-compatible endpoint: the real ``openai`` client against a scripted
fake server on localhost. Answers and streams, the sampling fields sent, retries with backoff and
Retry-After, no retry on other 4xx, the key from the environment, the rate limiter (fake clock),
and the response cache: a second run sends nothing, an interrupted one resumes, kill -9 keeps
every committed answer."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from pathlib import Path
from typing import Any

import openai
import pytest

from mentor.models.protocols import (
    BatchGenerator,
    ChatMessage,
    Generator,
    SamplingConfig,
    complete,
    complete_all,
)
from mentor.models.remote import (
    EndpointSettings,
    RateLimiter,
    RemoteError,
    RemoteGenerator,
    TokenBucket,
    backoff_delay,
    open_remote,
    resolve_api_key,
    retry_after_s,
)
from mentor.models.response_cache import ResponseCache, StoredResponse, request_key
from mentor.testing.fake_openai import FakeOpenAI, Fault

HI: list[ChatMessage] = [{"role": "user", "content": "what is the capital of France"}]


@pytest.fixture
def fake() -> FakeOpenAI:
    return FakeOpenAI()


@pytest.fixture
def url(fake: FakeOpenAI) -> Iterator[str]:
    with fake.serve() as base_url:
        yield base_url


def _settings(url: str, tmp_path: Path, **changes: Any) -> EndpointSettings:
    fields: dict[str, Any] = {
        "base_url": url,
        "model": "fake-teacher",
        "api_key_env": "",
        "backoff_base_s": 0.001,
        "backoff_max_s": 0.01,
        "timeout_s": 5.0,
        "cache": tmp_path / "responses.sqlite",
    }
    return EndpointSettings(**(fields | changes))


def _prompts(n: int) -> list[list[ChatMessage]]:
    return [[{"role": "user", "content": f"question number {i}"}] for i in range(n)]


# -- answers and streams -----------------------------------------------------------------------


def test_answers_carry_the_sampling_config(fake: FakeOpenAI, url: str, tmp_path: Path) -> None:
    remote = open_remote(_settings(url, tmp_path))
    assert isinstance(remote, Generator)
    config = SamplingConfig(max_new_tokens=5, temperature=0.7, top_p=0.9, seed=11, stop=("!",))
    answer = remote.answer(HI, config)
    assert answer.text == "You asked: what is the"  # cut after 5 words by the server
    assert (answer.prompt_tokens, answer.completion_tokens, answer.cached) == (6, 5, False)
    body = fake.calls[0].body
    assert body["model"] == "fake-teacher" and body["messages"] == HI
    assert (body["max_tokens"], body["temperature"], body["top_p"]) == (5, 0.7, 0.9)
    assert (body["seed"], body["stop"], body["stream"]) == (11, ["!"], False)
    assert "repetition_penalty" not in body  # not an OpenAI field: sent only when asked for
    remote.answer(HI, SamplingConfig(repetition_penalty=1.3))
    assert fake.calls[1].body["repetition_penalty"] == 1.3 and "seed" not in fake.calls[1].body
    assert remote.tally.requested == 2 and remote.tally.completion_tokens == 5 + 8


def test_stream_yields_pieces_as_they_arrive(fake: FakeOpenAI, url: str, tmp_path: Path) -> None:
    remote = open_remote(_settings(url, tmp_path))
    pieces = list(remote.stream(HI, SamplingConfig()))
    assert pieces == ["You", " asked:", " what", " is", " the", " capital", " of", " France"]
    assert fake.calls[0].body["stream"] is True
    assert remote.tally.completion_tokens == 8  # usage came in the stream's last chunk
    # the streamed answer was cached: the plain call and a second stream send nothing
    assert remote.answer(HI, SamplingConfig()).cached
    assert complete(remote, HI, SamplingConfig()) == "".join(pieces)
    assert fake.count == 1 and remote.tally.cached == 2


def test_a_stream_cut_short_is_an_error_and_not_cached(
    fake: FakeOpenAI, url: str, tmp_path: Path
) -> None:
    remote = open_remote(_settings(url, tmp_path))
    fake.fail(Fault(None, cut_after=2))
    received: list[str] = []
    with pytest.raises(RemoteError, match="the stream broke off"):
        received.extend(remote.stream(HI, SamplingConfig()))
    assert received == ["You", " asked:"]
    assert remote.answer(HI, SamplingConfig()).cached is False and fake.count == 2


# -- retries -------------------------------------------------------------------------------------


def test_429_500_and_timeouts_are_retried(fake: FakeOpenAI, url: str, tmp_path: Path) -> None:
    remote = open_remote(_settings(url, tmp_path, timeout_s=0.5))
    fake.fail(
        Fault(429, retry_after=0.3),
        Fault(500),
        Fault(503),
        Fault(None, delay_s=2.0),  # slower than the timeout
    )
    started = time.perf_counter()
    answer = remote.answer(HI, SamplingConfig())
    elapsed = time.perf_counter() - started
    assert answer.text.startswith("You asked:") and fake.count == 5
    assert remote.tally.requested == 1 and remote.tally.retries == 4
    assert elapsed >= 0.3 + 0.5  # the Retry-After wait and the timed-out try


def test_retries_run_out_with_a_clear_error(fake: FakeOpenAI, url: str, tmp_path: Path) -> None:
    remote = open_remote(_settings(url, tmp_path, max_retries=2))
    fake.fail(Fault(500, message="overloaded"), Fault(502), Fault(500, message="still down"))
    with pytest.raises(RemoteError, match=r"gave up after 3 tries; last: HTTP 500: still down"):
        remote.answer(HI, SamplingConfig())
    assert fake.count == 3


def test_other_4xx_fail_at_once_with_the_server_message(
    fake: FakeOpenAI, url: str, tmp_path: Path
) -> None:
    remote = open_remote(_settings(url, tmp_path))
    fake.fail(Fault(400, message="max_tokens is too large: 999999"))
    with pytest.raises(RemoteError, match=r"HTTP 400\): max_tokens is too large: 999999"):
        remote.answer(HI, SamplingConfig())
    assert fake.count == 1
    wrong = open_remote(_settings(url, tmp_path, model="gpt-nothing"))
    with pytest.raises(RemoteError, match=r"HTTP 404\): The model `gpt-nothing` does not exist"):
        wrong.answer(HI, SamplingConfig())
    assert fake.count == 2 and wrong.tally.retries == 0


def test_connection_refused_is_retried_then_reported(tmp_path: Path) -> None:
    with FakeOpenAI().serve() as url:
        pass  # the port is free again: nothing listens there now
    remote = open_remote(_settings(url, tmp_path, max_retries=1))
    with pytest.raises(RemoteError, match="gave up after 2 tries; last: connection failed"):
        remote.answer(HI, SamplingConfig())


@pytest.mark.parametrize(
    ("attempt", "jitter", "draw", "expected"),
    [
        (0, 0.0, 0.9, 1.0),
        (3, 0.0, 0.9, 8.0),
        (10, 0.0, 0.5, 60.0),  # capped
        (2, 0.5, 0.0, 2.0),  # half of 4 s fixed, half drawn
        (2, 0.5, 0.5, 3.0),
        (2, 1.0, 0.25, 1.0),  # full jitter
    ],
)
def test_backoff_delay(attempt: int, jitter: float, draw: float, expected: float) -> None:
    assert backoff_delay(attempt, 1.0, 60.0, jitter, draw) == pytest.approx(expected)


def test_retry_after_headers() -> None:
    assert retry_after_s({"retry-after": "7"}) == 7.0
    assert retry_after_s({"retry-after": "0.25"}) == 0.25
    assert retry_after_s({"retry-after-ms": "1500", "retry-after": "9"}) == 1.5
    now = datetime(2025, 1, 1, tzinfo=UTC)
    date = format_datetime(now + timedelta(seconds=30), usegmt=True)
    assert retry_after_s({"retry-after": date}, now=now.timestamp()) == pytest.approx(30.0)
    assert retry_after_s({}) is None and retry_after_s({"retry-after": "soon"}) is None


# -- the key ---------------------------------------------------------------------------------


def test_the_key_comes_from_the_named_variable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake = FakeOpenAI(api_key="sk-test-123")
    with fake.serve() as url:
        settings = _settings(url, tmp_path, api_key_env="MENTOR_TEST_KEY")
        monkeypatch.delenv("MENTOR_TEST_KEY", raising=False)
        with pytest.raises(RemoteError, match="MENTOR_TEST_KEY is not set"):
            open_remote(settings)
        monkeypatch.setenv("MENTOR_TEST_KEY", "sk-test-123")
        assert open_remote(settings).answer(HI, SamplingConfig()).text
        assert fake.calls[-1].api_key == "sk-test-123"
        monkeypatch.setenv("MENTOR_TEST_KEY", "sk-wrong")
        with pytest.raises(RemoteError, match=r"HTTP 401\): Incorrect API key"):
            open_remote(settings).answer(HI, SamplingConfig(max_new_tokens=3))


def test_only_a_local_endpoint_may_go_without_a_key() -> None:
    local = EndpointSettings(base_url="http://localhost:8000/v1/", model="m", api_key_env="")
    assert local.base_url == "http://localhost:8000/v1" and local.is_local
    assert resolve_api_key(local, {}) is None
    hosted = EndpointSettings(base_url="https://api.example.com/v1", model="m", api_key_env="")
    with pytest.raises(RemoteError, match="needs a key"):
        resolve_api_key(hosted, {})
    named = hosted.model_copy(update={"api_key_env": "OPENAI_API_KEY"})
    assert resolve_api_key(named, {"OPENAI_API_KEY": "sk-1"}) == "sk-1"
    with pytest.raises(RemoteError, match="OPENAI_API_KEY is not set"):
        resolve_api_key(named, {"OPENAI_API_KEY": " "})
    with pytest.raises(ValueError, match="http"):
        EndpointSettings(base_url="localhost:8000", model="m")


def test_every_setting_has_help_text() -> None:
    for name, field in EndpointSettings.model_fields.items():
        assert field.description, name


# -- the rate limiter (a fake clock) -----------------------------------------------------------


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0
        self.lock = threading.Lock()

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        with self.lock:
            self.now += seconds


def test_token_bucket_refills_at_its_rate() -> None:
    bucket = TokenBucket(per_minute=120, capacity=4, now=0.0)  # 2 a second
    for _ in range(4):
        assert bucket.wait(1, now=0.0) == 0.0
        bucket.take(1, now=0.0)
    assert bucket.wait(1, now=0.0) == pytest.approx(0.5)
    assert bucket.wait(1, now=0.25) == pytest.approx(0.25)
    assert bucket.wait(3, now=1.0) == pytest.approx(0.5)  # 2 refilled, 1 more to come
    assert bucket.wait(100, now=10.0) == 0.0  # above capacity: waits for a full bucket only
    bucket.take(100, now=10.0)
    bucket.adjust(2, now=10.0)  # the request cost 2 more than charged: the level goes below 0
    assert bucket.wait(1, now=10.0) == pytest.approx(1.5)


def test_rate_limiter_spaces_requests_and_tokens() -> None:
    clock = FakeClock()
    limiter = RateLimiter(60, None, burst_s=3, clock=clock, sleep=clock.sleep)  # 1/s, burst 3
    waits = [limiter.acquire() for _ in range(6)]
    assert waits == pytest.approx([0, 0, 0, 1, 1, 1]) and clock.now == pytest.approx(3.0)
    clock = FakeClock()
    limiter = RateLimiter(None, 600, burst_s=6, clock=clock, sleep=clock.sleep)  # 10 tok/s, 60
    assert limiter.acquire(50) == 0
    assert limiter.acquire(40) == pytest.approx(3.0)  # 10 left, 30 more at 10/s
    limiter.settle(estimated=40, actual=10)  # 30 given back
    assert limiter.acquire(30) == 0


def test_rate_limiter_is_shared_by_threads() -> None:
    clock = FakeClock()
    limiter = RateLimiter(600, None, burst_s=1, clock=clock, sleep=clock.sleep)  # 10/s, burst 10
    granted: list[float] = []

    def work() -> None:
        for _ in range(10):
            limiter.acquire()
            granted.append(clock())

    threads = [threading.Thread(target=work) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(granted) == 80
    for t in sorted(granted):  # never more than the burst plus what the rate refilled
        assert sum(g <= t for g in granted) <= 10 + 10 * t + 1e-6


def test_the_generator_waits_for_the_limiter(fake: FakeOpenAI, url: str, tmp_path: Path) -> None:
    clock = FakeClock()
    settings = _settings(url, tmp_path, concurrency=1)  # one thread: the waits add up exactly
    client = openai.OpenAI(base_url=url, api_key="no-key", max_retries=0)
    limiter = RateLimiter(30, None, burst_s=2, clock=clock, sleep=clock.sleep)  # 1 per 2 s
    remote = RemoteGenerator(settings, client, cache=None, limiter=limiter)
    remote.answer_all(_prompts(3), SamplingConfig(max_new_tokens=2))
    assert fake.count == 3 and remote.tally.waited_s == pytest.approx(4.0)


# -- the response cache ----------------------------------------------------------------------


def test_a_second_run_sends_no_request(fake: FakeOpenAI, url: str, tmp_path: Path) -> None:
    sampled = SamplingConfig(max_new_tokens=4, temperature=1.0)  # no seed: cached all the same
    first = open_remote(_settings(url, tmp_path, concurrency=3))
    answers = first.answer_all(_prompts(5), sampled)
    assert fake.count == 5 and not any(a.cached for a in answers)
    first.close()
    again = open_remote(_settings(url, tmp_path))
    repeat = again.answer_all(_prompts(5), sampled)
    assert fake.count == 5 and all(a.cached for a in repeat)
    assert [a.text for a in repeat] == [a.text for a in answers]
    assert [a.seconds for a in repeat] == [a.seconds for a in answers]  # the endpoint's time
    assert again.tally.summary().startswith("5 answers from cache, 0 requested, 0 tokens paid")
    again.answer_all(_prompts(5), SamplingConfig(max_new_tokens=4, temperature=1.0, seed=1))
    assert fake.count == 10  # another seed is another request


def test_an_interrupted_run_resumes_without_paying_twice(
    fake: FakeOpenAI, url: str, tmp_path: Path
) -> None:
    def stop_after_three(done: int) -> None:
        if done == 3:
            raise KeyboardInterrupt

    remote = open_remote(_settings(url, tmp_path, concurrency=1))
    with pytest.raises(KeyboardInterrupt):
        remote.answer_all(_prompts(8), SamplingConfig(), progress=stop_after_three)
    paid = fake.count  # 3, or 4 when the worker had taken the next request already
    assert paid in (3, 4)
    resumed = open_remote(_settings(url, tmp_path, concurrency=2))
    answers = resumed.answer_all(_prompts(8), SamplingConfig())
    assert fake.count == 8  # every answer paid for once, over the two runs
    assert [a.cached for a in answers] == [True] * paid + [False] * (8 - paid)
    assert answers[7].text == "You asked: question number 7"


def test_answer_all_keeps_the_prompt_order(fake: FakeOpenAI, url: str, tmp_path: Path) -> None:
    fake.fail(Fault(None, delay_s=0.3))  # the first request is the slowest
    remote = open_remote(_settings(url, tmp_path, concurrency=4))
    answers = remote.answer_all(_prompts(6), SamplingConfig())
    assert [a.text for a in answers] == [f"You asked: question number {i}" for i in range(6)]


_KILLED = """
import os, signal, sys
from pathlib import Path
from mentor.models.response_cache import ResponseCache, StoredResponse
cache = ResponseCache(Path(sys.argv[1]))
for i in range(5):
    cache.put(f"k{i}", base_url="http://x", model="m", request={"i": i},
              response=StoredResponse(f"answer {i}", 3, 2, 0.1))
os.kill(os.getpid(), signal.SIGKILL)
"""


def test_kill_9_keeps_every_committed_answer(tmp_path: Path) -> None:
    path = tmp_path / "killed.sqlite"
    done = subprocess.run([sys.executable, "-c", _KILLED, str(path)], timeout=60, check=False)
    assert done.returncode == -signal.SIGKILL
    with ResponseCache(path) as cache:
        assert len(cache) == 5
        assert cache.get("k4") == StoredResponse("answer 4", 3, 2, 0.1)
        assert cache.get("k5") is None


def test_the_cache_key_is_the_whole_request() -> None:
    base = request_key("http://h/v1", "m", HI, {"temperature": 0.0, "max_tokens": 8})
    assert base == request_key("http://h/v1/", "m", HI, {"max_tokens": 8, "temperature": 0.0})
    others = [
        request_key("http://other/v1", "m", HI, {"temperature": 0.0, "max_tokens": 8}),
        request_key("http://h/v1", "m2", HI, {"temperature": 0.0, "max_tokens": 8}),
        request_key("http://h/v1", "m", [*HI, *HI], {"temperature": 0.0, "max_tokens": 8}),
        request_key("http://h/v1", "m", HI, {"temperature": 0.0, "max_tokens": 9}),
    ]
    assert len({base, *others}) == 5


def test_a_damaged_cache_file_is_named(tmp_path: Path) -> None:
    path = tmp_path / "bad.sqlite"
    path.write_bytes(os.urandom(4096))
    with pytest.raises(ValueError, match=r"bad\.sqlite: not a usable response cache"):
        ResponseCache(path)


def test_many_conversations_go_out_concurrently_in_order(
    fake: FakeOpenAI, url: str, tmp_path: Path
) -> None:
    remote = open_remote(_settings(url, tmp_path, concurrency=3))
    assert isinstance(remote, BatchGenerator)
    config = SamplingConfig(max_new_tokens=4)
    texts = list(complete_all(remote, _prompts(5), config))
    assert fake.count == 5
    assert texts == [complete(remote, p, config) for p in _prompts(5)]  # cached, same order
    assert fake.count == 5
