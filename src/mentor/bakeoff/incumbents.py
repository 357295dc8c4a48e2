"""Incumbents: what a team runs today, measured beside mentor's arms as it is.

Three kinds (:class:`~mentor.bakeoff.config.IncumbentSpec`):

- a model (folder, ``hf:ORG/NAME`` or registry name) and a PEFT adapter trained elsewhere on the
  run's base become a :class:`~mentor.bakeoff.stages.Built` with nothing built (0 s of
  training: the money was spent before), and from there load, answer and time like any arm. An
  adapter recorded for other base weights is refused when it loads, naming the field;
- an OpenAI-compatible endpoint (hosted, vLLM, ``mentor serve``) answers through
  :class:`~mentor.models.remote.RemoteGenerator`: the scored answers go through the response
  cache in the run folder (a rerun pays for nothing twice), the latency questions bypass it so
  every one is a real round trip timed by the client, and the endpoint's reported ``usage``
  times the configured prices is its serving cost (:func:`mentor.bakeoff.scoring.token_usd_per_1k`).

:func:`preflight` checks what can be checked cheaply before anything trains: the key's variable is
set, the adapter folder is one, the model exists.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from mentor.bakeoff.arms import Retrieval
from mentor.bakeoff.config import BakeoffConfig, EndpointSpec, IncumbentSpec
from mentor.bakeoff.data import Question
from mentor.bakeoff.stages import Built, closed_book_prompt, fingerprint
from mentor.models.protocols import ChatMessage, SamplingConfig
from mentor.models.remote import EndpointSettings, RemoteError, RemoteGenerator, open_remote

KINDS = {"model": "incumbent-model", "adapter": "incumbent-lora"}
"""An incumbent's kind -> the :class:`Built` kind it loads as."""


def preflight(config: BakeoffConfig, environ: Mapping[str, str] | None = None) -> None:
    """Raise ValueError naming the field of the first incumbent that the arms use and that
    cannot work: a missing key variable, a folder that is not an adapter or a model, an unknown
    model name."""
    from mentor.models.registry import REGISTRY
    from mentor.models.remote import resolve_api_key
    from mentor.train.adapters import AdapterError, read_info

    env = os.environ if environ is None else environ
    used = {a.model for a in config.arms}
    for name, spec in config.incumbents.items():
        if name not in used:
            continue
        where = f"incumbents.{name}"
        if spec.endpoint is not None:
            try:
                resolve_api_key(endpoint_settings(spec.endpoint, None), env)
            except RemoteError as exc:
                raise ValueError(f"{where}.endpoint.api_key_env: {exc}") from None
        elif spec.adapter is not None:
            try:
                read_info(spec.adapter)
            except (AdapterError, OSError) as exc:
                raise ValueError(f"{where}.adapter: {exc}") from None
        elif spec.model is not None:
            model = spec.model
            if model.startswith("hf:") or model in REGISTRY:
                continue
            path = Path(model).expanduser()
            if not (path / "config.json").is_file():
                raise ValueError(
                    f"{where}.model: {model!r} is not a model folder (with config.json), an "
                    "hf:ORG/NAME id or a registry name (see: mentor models list)"
                )


def incumbent_built(spec: IncumbentSpec, config: BakeoffConfig) -> Built:
    """The model or adapter incumbent as a :class:`Built` that took no time to build."""
    if spec.adapter is not None:
        return Built(
            path=spec.adapter,
            seconds=0.0,
            kind=KINDS["adapter"],
            base=config.models.base,
            curve=[],
            notes=["trained elsewhere, measured as it is"],  # the description names the folder
            fingerprint=fingerprint(config.models.base, spec.adapter),
        )
    assert spec.model is not None  # IncumbentSpec names exactly one
    folder = Path(spec.model).expanduser()
    # a folder by its files' names, sizes and times: hashing gigabytes of weights would take
    # longer than measuring the arm
    files = sorted(p for p in folder.rglob("*") if p.is_file()) if folder.is_dir() else []
    stamp = [(str(p.relative_to(folder)), p.stat().st_size, p.stat().st_mtime_ns) for p in files]
    return Built(
        path=folder,
        seconds=0.0,
        kind=KINDS["model"],
        base=spec.model,
        curve=[],
        notes=["made elsewhere, measured as it is"],
        fingerprint=fingerprint(spec.model, stamp),
    )


def endpoint_settings(spec: EndpointSpec, cache: Path | None) -> EndpointSettings:
    """The remote client's settings for an endpoint arm."""
    return EndpointSettings(
        base_url=spec.base_url,
        model=spec.model,
        api_key_env=spec.api_key_env,
        timeout_s=spec.timeout_s,
        concurrency=spec.concurrency,
        requests_per_minute=spec.requests_per_minute,
        cache=cache,
    )


def endpoint_fingerprint(spec: EndpointSpec) -> list[str]:
    """What an endpoint arm's answers depend on (prices change costs, not answers)."""
    return [spec.base_url, spec.model]


@dataclass
class EndpointWriter:
    """:data:`mentor.bakeoff.arms.Write` over an endpoint; keeps each answer's reported usage."""

    generator: RemoteGenerator
    sampling: SamplingConfig
    prompt_tokens: list[int | None] = field(default_factory=list)
    completion_tokens: list[int | None] = field(default_factory=list)

    def __call__(self, prompts: Sequence[Sequence[ChatMessage]]) -> list[str]:
        answers = self.generator.answer_all(prompts, self.sampling)
        self.prompt_tokens += [a.prompt_tokens for a in answers]
        self.completion_tokens += [a.completion_tokens for a in answers]
        return [a.text.strip() for a in answers]

    def usage(self, spec: EndpointSpec, first: int | None = None) -> dict[str, float]:
        """Mean tokens per answer as reported (of the ``first`` answers: the test questions),
        the share of answers that reported them, and the prices: what
        :func:`mentor.bakeoff.scoring.token_usd_per_1k` turns into money."""
        pairs = list(zip(self.prompt_tokens, self.completion_tokens, strict=True))[:first]
        reported = [(p, c) for p, c in pairs if p is not None and c is not None]
        n = max(1, len(reported))
        return {
            "prompt_tokens": sum(p for p, _ in reported) / n,
            "completion_tokens": sum(c for _, c in reported) / n,
            "reported_share": len(reported) / max(1, len(pairs)),
            "input_usd_per_million": spec.input_usd_per_million,
            "output_usd_per_million": spec.output_usd_per_million,
        }


@dataclass
class EndpointArm:
    """An endpoint opened for one arm: the cached writer for the scores, an uncached generator
    for the latency."""

    spec: EndpointSpec
    writer: EndpointWriter
    live: RemoteGenerator

    @property
    def offsite(self) -> bool:
        return not endpoint_settings(self.spec, None).is_local

    def time_answers(
        self, questions: Sequence[Question], retrieval: Retrieval | None, config: BakeoffConfig
    ) -> tuple[list[float], float]:
        """End-to-end seconds per question asked alone (retrieval, request, answer), as the
        client waits for them, and the mean completion tokens the endpoint reported."""
        sampling = self.writer.sampling
        warm = closed_book_prompt(config.answer.system, questions[0].question)
        self.live.answer(warm, SamplingConfig(max_new_tokens=4))  # open the connection untimed
        seconds, tokens = [], []
        for q in questions:
            started = time.perf_counter()
            if retrieval is not None:
                prompt = retrieval.search(q.question)[0]
            else:
                prompt = closed_book_prompt(config.answer.system, q.question)
            answer = self.live.answer(prompt, sampling)
            seconds.append(time.perf_counter() - started)
            if answer.completion_tokens is not None:
                tokens.append(answer.completion_tokens)
        return seconds, sum(tokens) / max(1, len(tokens))


@contextmanager
def open_endpoint_arm(
    spec: EndpointSpec,
    folder: Path,
    config: BakeoffConfig,
    environ: Mapping[str, str] | None = None,
) -> Iterator[EndpointArm]:
    """The endpoint ready to answer; the scored answers are cached under ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    sampling = SamplingConfig(max_new_tokens=config.answer.max_new_tokens)
    cached = open_remote(endpoint_settings(spec, folder / "responses.sqlite"), environ=environ)
    live = open_remote(endpoint_settings(spec, None), environ=environ, use_cache=False)
    try:
        yield EndpointArm(spec, EndpointWriter(cached, sampling), live)
    finally:
        cached.close()
        live.close()
