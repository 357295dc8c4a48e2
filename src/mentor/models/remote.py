"""A hosted model as a Generator: any OpenAI-compatible ``/v1/chat/completions`` endpoint.

A hosted model, a vLLM server or ``mentor serve`` answers through the official ``openai``
client (with its own retries off); around it, mentor adds what a long generation run needs:

- the key is read from the environment variable the settings name, never from a file or a flag;
- 429, 5xx, timeouts and dropped connections are retried with exponential backoff and jitter,
  waiting as long as the server's ``Retry-After`` asks; any other 4xx fails at once with the
  server's message;
- a token-bucket limiter keeps every thread together under the requests- and tokens-per-minute
  quotas;
- every answer is committed to a SQLite cache (:mod:`mentor.models.response_cache`) the moment
  it arrives, so a rerun, or a run resumed after a crash, never pays for an answer twice.

    settings = EndpointSettings(base_url="http://localhost:8000/v1", model="qwen", api_key_env="")
    teacher = open_remote(settings)
    complete(teacher, [{"role": "user", "content": "Hi"}], SamplingConfig())
    teacher.tally.summary()  # "0 answers from cache, 1 requested, 42 tokens paid ..."
"""

from __future__ import annotations

import logging
import os
import random
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlparse

from pydantic import BaseModel, ConfigDict, Field, field_validator

from mentor.models.protocols import ChatMessage, SamplingConfig
from mentor.models.response_cache import (
    ResponseCache,
    StoredResponse,
    default_cache_path,
    request_key,
)

log = logging.getLogger(__name__)
T = TypeVar("T")

LOCAL_HOSTS = frozenset({"localhost", "127.0.0.1", "::1", "0.0.0.0"})
RETRY_STATUSES = frozenset({408, 429})
"""Besides every 5xx: request timeout and rate limit."""
BURST_SECONDS = 10.0
"""A limiter holds at most this many seconds of its quota: providers enforce per-minute limits
over shorter windows, so a run must not spend a whole minute's allowance at once."""
CHARS_PER_TOKEN = 4
"""Rough prompt size for the tokens-per-minute limiter, before the endpoint says the real one."""


class RemoteError(RuntimeError):
    """The endpoint cannot be used: no key, a refused request, or retries exhausted."""


class EndpointSettings(BaseModel):
    """Where a hosted model lives and how politely to ask it."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    base_url: str = Field(
        description="The endpoint's OpenAI-compatible root, usually ending in /v1 "
        "(https://api.openai.com/v1, http://localhost:8000/v1)."
    )
    model: str = Field(min_length=1, description="The model name the endpoint serves.")
    api_key_env: str = Field(
        default="OPENAI_API_KEY",
        description="Environment variable that holds the key (the key itself is never written "
        "in a config or a flag); empty for a server on this machine that needs none.",
    )
    timeout_s: float = Field(default=120.0, gt=0, description="Seconds one request may take.")
    max_retries: int = Field(
        default=6, ge=0, description="Retries of a request after 429, 5xx, a timeout or a drop."
    )
    backoff_base_s: float = Field(
        default=1.0, gt=0, description="Wait before the first retry; doubled at each next one."
    )
    backoff_max_s: float = Field(default=60.0, gt=0, description="Longest wait between retries.")
    jitter: float = Field(
        default=0.5,
        ge=0,
        le=1,
        description="Share of each backoff wait drawn at random, so parallel clients spread out.",
    )
    requests_per_minute: float | None = Field(
        default=None, gt=0, description="Requests-per-minute quota; none: no limit of ours."
    )
    tokens_per_minute: float | None = Field(
        default=None,
        gt=0,
        description="Tokens-per-minute quota (prompt + max_tokens, as providers count it).",
    )
    concurrency: int = Field(default=4, ge=1, description="Requests in flight at once.")
    cache: Path | None = Field(
        default=None,
        description="SQLite file of answers; default $MENTOR_HOME/remote-cache/responses.sqlite, "
        "shared by every run.",
    )

    @field_validator("base_url")
    @classmethod
    def _http(cls, value: str) -> str:
        if urlparse(value).scheme not in ("http", "https") or not urlparse(value).hostname:
            raise ValueError(f"expected an http:// or https:// URL, got {value!r}")
        return value.rstrip("/")

    @property
    def is_local(self) -> bool:
        return urlparse(self.base_url).hostname in LOCAL_HOSTS

    @property
    def label(self) -> str:
        return f"{self.model} @ {self.base_url}"


def resolve_api_key(settings: EndpointSettings, environ: Mapping[str, str]) -> str | None:
    """The key from ``settings.api_key_env``; None for a local server that needs none."""
    name = settings.api_key_env
    if not name:
        if settings.is_local:
            return None
        raise RemoteError(
            f"{settings.base_url} is not on this machine, so it needs a key: name the "
            "environment variable that holds it (api_key_env, or the command's --*-key-env flag)"
        )
    key = environ.get(name, "").strip()
    if not key:
        raise RemoteError(
            f"the environment variable {name} is not set: export {name}=<key> for "
            f"{settings.base_url}, or name another variable (api_key_env, --*-key-env)"
        )
    return key


# ---------------------------------------------------------------------------------------------
# Backoff and rate limits: pure given the time, so they are tested with a fake clock


def backoff_delay(attempt: int, base: float, cap: float, jitter: float, draw: float) -> float:
    """Seconds to wait before retry ``attempt`` (0 for the first): ``min(cap, base * 2**attempt)``
    with its share ``jitter`` scaled by ``draw`` in [0, 1)."""
    full = min(cap, base * 2.0**attempt)
    return full * (1.0 - jitter) + full * jitter * draw


def retry_after_s(headers: Mapping[str, str], now: float | None = None) -> float | None:
    """The wait a 429/503 response asks for: ``retry-after-ms``, or ``Retry-After`` as seconds
    or an HTTP date; None when it asks for none."""
    if (ms := headers.get("retry-after-ms")) is not None:
        try:
            return max(0.0, float(ms) / 1000.0)
        except ValueError:
            pass
    value = headers.get("retry-after")
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value).timestamp()
    except (TypeError, ValueError):
        return None
    return max(0.0, when - (time.time() if now is None else now))


class TokenBucket:
    """``per_minute`` units a minute, refilled continuously, holding at most ``capacity``.

    Pure: every method takes the time. An amount above the capacity is waited for as a full
    bucket (it could never be served otherwise); :meth:`adjust` may drive the level below zero
    when a request turned out larger than estimated, and later requests wait it off."""

    def __init__(self, per_minute: float, capacity: float, now: float) -> None:
        if per_minute <= 0 or capacity <= 0:
            raise ValueError("a token bucket needs a positive rate and capacity")
        self.rate = per_minute / 60.0  # units per second
        self.capacity = capacity
        self.level = capacity
        self._stamp = now

    def _refill(self, now: float) -> None:
        if now > self._stamp:
            self.level = min(self.capacity, self.level + (now - self._stamp) * self.rate)
            self._stamp = now

    def wait(self, amount: float, now: float) -> float:
        """Seconds until ``amount`` can be taken (0: now)."""
        self._refill(now)
        missing = min(amount, self.capacity) - self.level
        return missing / self.rate if missing > 1e-9 else 0.0  # a rounding error is no wait

    def take(self, amount: float, now: float) -> None:
        self._refill(now)
        self.level -= min(amount, self.capacity)

    def adjust(self, extra: float, now: float) -> None:
        """Charge ``extra`` more units (negative: give some back) once the true cost is known."""
        self._refill(now)
        self.level = min(self.capacity, self.level - extra)


class RateLimiter:
    """Requests- and tokens-per-minute quotas shared by every thread that calls :meth:`acquire`.

    Each bucket holds ``burst_s`` seconds of its quota (at least one request)."""

    def __init__(
        self,
        requests_per_minute: float | None,
        tokens_per_minute: float | None = None,
        *,
        burst_s: float = BURST_SECONDS,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self._clock, self._sleep = clock, sleep
        self._lock = threading.Lock()
        now = clock()

        def bucket(per_minute: float | None) -> TokenBucket | None:
            if per_minute is None:
                return None
            return TokenBucket(per_minute, max(1.0, per_minute * burst_s / 60.0), now)

        self.requests = bucket(requests_per_minute)
        self.tokens = bucket(tokens_per_minute)

    def acquire(self, tokens: int = 0) -> float:
        """Block until one request of about ``tokens`` tokens may go; return the seconds waited."""
        waited = 0.0
        while True:
            with self._lock:
                now = self._clock()
                delay = max(
                    self.requests.wait(1, now) if self.requests else 0.0,
                    self.tokens.wait(tokens, now) if self.tokens else 0.0,
                )
                if delay <= 0:
                    if self.requests:
                        self.requests.take(1, now)
                    if self.tokens:
                        self.tokens.take(tokens, now)
                    return waited
            self._sleep(delay)  # outside the lock: other threads may check (and wait) too
            waited += delay

    def settle(self, estimated: int, actual: int) -> None:
        """Correct the tokens charged for a request once the endpoint says what it used."""
        if self.tokens is not None:
            with self._lock:
                self.tokens.adjust(actual - estimated, self._clock())


# ---------------------------------------------------------------------------------------------
# The generator


@dataclass(frozen=True)
class RemoteAnswer:
    """One answer, with what it cost."""

    text: str
    prompt_tokens: int | None
    completion_tokens: int | None
    seconds: float
    """The endpoint's time for the request (for a cached answer: when it was first asked)."""
    cached: bool


@dataclass
class UsageTally:
    """What a generator has done so far: answers from the cache, requests and tokens paid."""

    cached: int = 0
    requested: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    retries: int = 0
    waited_s: float = 0.0
    """Seconds spent waiting for the rate limiter."""

    def summary(self) -> str:
        paid = self.prompt_tokens + self.completion_tokens
        return (
            f"{self.cached} answers from cache, {self.requested} requested, {paid:,} tokens paid "
            f"({self.prompt_tokens:,} prompt + {self.completion_tokens:,} completion), "
            f"{self.retries} retries, {self.waited_s:.1f} s waiting for the rate limit"
        )


class RemoteGenerator:
    """Satisfies :class:`~mentor.models.protocols.Generator` over an OpenAI-compatible endpoint.

    Build it with :func:`open_remote`; ``client`` is an ``openai.OpenAI`` with ``max_retries=0``
    (retries are done here, where the rate limiter and the tally see them)."""

    def __init__(
        self,
        settings: EndpointSettings,
        client: Any,
        *,
        cache: ResponseCache | None,
        limiter: RateLimiter | None = None,
        sleep: Callable[[float], None] = time.sleep,
        seed: int | None = None,
    ) -> None:
        self.settings = settings
        self.name = settings.model
        self.tally = UsageTally()
        self._client, self._cache, self._limiter, self._sleep = client, cache, limiter, sleep
        self._rng = random.Random(seed)
        self._lock = threading.Lock()

    def sampling(self, config: SamplingConfig) -> dict[str, Any]:
        """The request's sampling fields for ``config`` (also the cache key's)."""
        fields: dict[str, Any] = {
            "max_tokens": config.max_new_tokens,
            "temperature": config.temperature,
            "top_p": config.top_p,
        }
        if config.seed is not None:
            fields["seed"] = config.seed
        if config.stop:
            fields["stop"] = list(config.stop)
        if config.repetition_penalty != 1.0:  # not an OpenAI field: vLLM reads it, others may not
            fields["repetition_penalty"] = config.repetition_penalty
        return fields

    def answer(self, messages: Sequence[ChatMessage], config: SamplingConfig) -> RemoteAnswer:
        """The whole answer, from the cache if this exact request was answered before."""
        sampling = self.sampling(config)
        key = request_key(self.settings.base_url, self.settings.model, messages, sampling)
        if (hit := self._lookup(key)) is not None:
            return hit
        kwargs = self._create_kwargs(messages, sampling, stream=False)
        completion, seconds = self._send(kwargs, _estimate(messages, sampling))
        if not completion.choices:
            raise RemoteError(f"{self.settings.label}: the answer has no choices")
        text = completion.choices[0].message.content or ""
        return self._store(key, messages, sampling, text, completion.usage, seconds)

    def stream(self, messages: Sequence[ChatMessage], config: SamplingConfig) -> Iterator[str]:
        """Yield the answer as it arrives (a cached answer comes as one piece). Retries cover
        the request until the stream opens; a drop mid-stream raises :class:`RemoteError`."""
        sampling = self.sampling(config)
        key = request_key(self.settings.base_url, self.settings.model, messages, sampling)
        if (hit := self._lookup(key)) is not None:
            if hit.text:
                yield hit.text
            return
        kwargs = self._create_kwargs(messages, sampling, stream=True)
        kwargs["stream_options"] = {"include_usage": True}
        chunks, opened = self._send(kwargs, _estimate(messages, sampling))
        started = time.perf_counter()
        pieces: list[str] = []
        usage = None
        received = iter(chunks)
        try:
            while True:
                try:
                    chunk = next(received)
                except StopIteration:
                    break
                except Exception as exc:  # openai's or the HTTP library's: the connection dropped
                    raise RemoteError(
                        f"{self.settings.label}: the stream broke off ({exc})"
                    ) from None
                usage = chunk.usage or usage
                for choice in chunk.choices:
                    if choice.delta.content:
                        pieces.append(choice.delta.content)
                        yield choice.delta.content
        finally:
            chunks.close()
        seconds = opened + time.perf_counter() - started
        self._store(key, messages, sampling, "".join(pieces), usage, seconds)

    def answer_all(
        self,
        prompts: Sequence[Sequence[ChatMessage]],
        configs: SamplingConfig | Sequence[SamplingConfig],
        *,
        progress: Callable[[int], None] | None = None,
    ) -> list[RemoteAnswer]:
        """Answers to ``prompts`` in order, ``settings.concurrency`` requests at a time, each
        committed to the cache as it arrives. ``progress`` gets the count done so far. On a
        failure the requests not yet sent are dropped and the error is raised."""
        if isinstance(configs, SamplingConfig):
            configs = [configs] * len(prompts)
        if len(configs) != len(prompts):
            raise ValueError(f"{len(configs)} sampling configs for {len(prompts)} prompts")
        answers: list[RemoteAnswer | None] = [None] * len(prompts)
        with ThreadPoolExecutor(self.settings.concurrency, "remote") as pool:
            futures = {
                pool.submit(self.answer, p, c): i
                for i, (p, c) in enumerate(zip(prompts, configs, strict=True))
            }
            try:
                for done, future in enumerate(as_completed(futures), start=1):
                    answers[futures[future]] = future.result()
                    if progress is not None:
                        progress(done)
            except BaseException:
                pool.shutdown(wait=True, cancel_futures=True)  # the ones in flight are cached
                raise
        return [a for a in answers if a is not None]

    def complete_many(
        self, conversations: Sequence[Sequence[ChatMessage]], config: SamplingConfig
    ) -> list[str]:
        """Each conversation's answer text, ``settings.concurrency`` requests in flight
        (:class:`~mentor.models.protocols.BatchGenerator`)."""
        return [a.text for a in self.answer_all(conversations, config)]

    def close(self) -> None:
        self._client.close()
        if self._cache is not None:
            self._cache.close()

    # -- internals ----------------------------------------------------------------------------

    def _create_kwargs(
        self, messages: Sequence[ChatMessage], sampling: dict[str, Any], *, stream: bool
    ) -> dict[str, Any]:
        kwargs = {k: v for k, v in sampling.items() if k != "repetition_penalty"}
        if "repetition_penalty" in sampling:
            kwargs["extra_body"] = {"repetition_penalty": sampling["repetition_penalty"]}
        chat = [{"role": m["role"], "content": m["content"]} for m in messages]
        return kwargs | {"model": self.settings.model, "messages": chat, "stream": stream}

    def _lookup(self, key: str) -> RemoteAnswer | None:
        hit = self._cache.get(key) if self._cache is not None else None
        if hit is None:
            return None
        with self._lock:
            self.tally.cached += 1
        return RemoteAnswer(hit.text, hit.prompt_tokens, hit.completion_tokens, hit.seconds, True)

    def _store(
        self,
        key: str,
        messages: Sequence[ChatMessage],
        sampling: dict[str, Any],
        text: str,
        usage: Any,
        seconds: float,
    ) -> RemoteAnswer:
        prompt = getattr(usage, "prompt_tokens", None)
        completion = getattr(usage, "completion_tokens", None)
        response = StoredResponse(text, prompt, completion, seconds)
        if self._cache is not None:
            request = {"messages": [dict(m) for m in messages], **sampling}
            self._cache.put(
                key,
                base_url=self.settings.base_url,
                model=self.settings.model,
                request=request,
                response=response,
            )
        with self._lock:
            self.tally.prompt_tokens += prompt or 0
            self.tally.completion_tokens += completion or 0
        return RemoteAnswer(text, prompt, completion, seconds, False)

    def _send(self, kwargs: dict[str, Any], estimate: int) -> tuple[Any, float]:
        """``chat.completions.create(**kwargs)`` under the rate limits (``estimate``: tokens it
        may use) with retries; the result and the seconds the successful try took."""

        def before(attempt: int) -> None:
            if self._limiter is not None:
                waited = self._limiter.acquire(estimate)
                with self._lock:
                    self.tally.waited_s += waited
            with self._lock:
                if attempt == 0:
                    self.tally.requested += 1
                else:
                    self.tally.retries += 1

        result, seconds = call_with_retries(
            lambda: self._client.chat.completions.create(**kwargs),
            self.settings,
            rng=self._rng,
            sleep=self._sleep,
            before=before,
        )
        if self._limiter is not None and not kwargs["stream"]:
            used = getattr(result.usage, "total_tokens", None)
            self._limiter.settle(estimate, used if used is not None else estimate)
        return result, seconds


def call_with_retries(
    call: Callable[[], T],
    settings: EndpointSettings,
    *,
    rng: random.Random,
    sleep: Callable[[float], None] = time.sleep,
    before: Callable[[int], None] | None = None,
) -> tuple[T, float]:
    """``call()`` (one request of the ``openai`` client) with the settings' retries: 429, 5xx,
    timeouts and dropped connections are retried with backoff (or the server's ``Retry-After``),
    any other 4xx raises :class:`RemoteError` with the server's message at once. ``before(attempt)``
    runs ahead of every try (rate limits, counts). Returns the result and the seconds the
    successful try took."""
    import openai

    s = settings
    for attempt in range(s.max_retries + 1):
        if before is not None:
            before(attempt)
        started = time.perf_counter()
        try:
            result = call()
        except openai.APIStatusError as exc:
            code = exc.status_code
            if code not in RETRY_STATUSES and code < 500:
                raise RemoteError(
                    f"{s.label} refused the request (HTTP {code}): {_server_message(exc)}"
                ) from None
            problem = f"HTTP {code}: {_server_message(exc)}"
            wait = retry_after_s(exc.response.headers)
        except openai.APITimeoutError:
            problem, wait = f"no answer within {s.timeout_s:g} s", None
        except openai.APIConnectionError as exc:
            problem, wait = f"connection failed ({exc.__cause__ or exc})", None
        else:
            return result, time.perf_counter() - started
        if attempt == s.max_retries:
            break
        if wait is None:
            wait = backoff_delay(attempt, s.backoff_base_s, s.backoff_max_s, s.jitter, rng.random())
        log.warning("%s: %s; retry %d in %.1f s", s.label, problem, attempt + 1, wait)
        sleep(wait)
    raise RemoteError(f"{s.label}: gave up after {s.max_retries + 1} tries; last: {problem}")


def _estimate(messages: Sequence[ChatMessage], sampling: Mapping[str, Any]) -> int:
    """Tokens a request may use, before the endpoint says: the prompt's characters / 4 plus
    ``max_tokens`` (providers count the whole budget against the quota)."""
    return sum(len(m["content"]) for m in messages) // CHARS_PER_TOKEN + int(sampling["max_tokens"])


def _server_message(exc: Any) -> str:
    """The error text in an OpenAI-style (``{"error": {"message"}}``) or FastAPI body."""
    body = exc.body
    if isinstance(body, dict):
        inner = body.get("error", body)
        if isinstance(inner, dict) and (text := inner.get("message") or inner.get("detail")):
            return str(text)
        if isinstance(inner, str):
            return inner
    return str(exc.message)


def open_remote(
    settings: EndpointSettings,
    *,
    environ: Mapping[str, str] | None = None,
    sleep: Callable[[float], None] = time.sleep,
    use_cache: bool = True,
) -> RemoteGenerator:
    """A :class:`RemoteGenerator` for ``settings``: the key from the environment, the response
    cache opened, the rate limiter set up. Raises :class:`RemoteError` when the key is missing.

    ``use_cache=False``: every request goes to the endpoint (timing it, as the bakeoff does)."""
    import openai

    key = resolve_api_key(settings, os.environ if environ is None else environ)
    client = openai.OpenAI(
        base_url=settings.base_url,
        # The client insists on a key; a local server without one ignores this placeholder.
        api_key=key or "no-key",
        max_retries=0,
        timeout=settings.timeout_s,
    )
    limiter = None
    if settings.requests_per_minute or settings.tokens_per_minute:
        limiter = RateLimiter(settings.requests_per_minute, settings.tokens_per_minute, sleep=sleep)
    cache = ResponseCache(settings.cache or default_cache_path()) if use_cache else None
    return RemoteGenerator(settings, client, cache=cache, limiter=limiter, sleep=sleep)
