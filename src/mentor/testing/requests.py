"""Synthetic request logs for monitoring tests and demos: steady traffic, then a drift.

``synthetic_records`` makes ``n`` requests a few seconds apart. Before ``drift_at`` (a share of
``n``) users ask about billing and accounts; from it on they ask about exports and
integrations the documents cover poorly, so top-1 retrieval scores drop and more answers are
refusals (``refusal_rate_after``); ``latency_after_s`` can slow the server down too. A few
requests fail. ``write_synthetic_log`` stores them with a :class:`RequestLog`.
"""

from __future__ import annotations

import random
from pathlib import Path

from mentor.monitor.log import LogSettings, RequestLog, RequestRecord

__all__ = ["synthetic_records", "write_synthetic_log"]

_BEFORE = (
    ("invoice", "refund", "billing address", "payment card", "subscription plan", "receipt"),
    ("change", "download", "update", "cancel", "find", "pay"),
)
_AFTER = (
    ("CSV export", "Slack integration", "webhook", "API rate limit", "SSO login", "Zapier sync"),
    ("configure", "debug", "enable", "troubleshoot", "connect", "automate"),
)
_TEMPLATES = (
    "How do I {verb} my {topic}?",
    "Can I {verb} the {topic} from the settings page?",
    "Why can't I {verb} the {topic}?",
    "What happens when I {verb} a {topic}?",
)


def synthetic_records(
    n: int = 400,
    *,
    start: float = 1_700_000_000.0,
    interval_s: float = 5.0,
    drift_at: float | None = 0.7,
    seed: int = 0,
    error_rate: float = 0.01,
    refusal_rate: float = 0.05,
    refusal_rate_after: float = 0.5,
    latency_s: float = 0.8,
    latency_after_s: float | None = None,
) -> list[RequestRecord]:
    """``n`` requests, ``interval_s`` apart from ``start``; from request ``drift_at * n`` on
    (never, when None) the queries change topic, retrieval weakens and refusals rise."""
    rng = random.Random(seed)
    first_drifted = n if drift_at is None else int(drift_at * n)
    records: list[RequestRecord] = []
    for i in range(n):
        drifted = i >= first_drifted
        topics, verbs = _AFTER if drifted else _BEFORE
        query = rng.choice(_TEMPLATES).format(verb=rng.choice(verbs), topic=rng.choice(topics))
        mean_latency = latency_after_s if drifted and latency_after_s is not None else latency_s
        latency = rng.lognormvariate(0.0, 0.35) * mean_latency
        top1 = rng.gauss(0.45 if drifted else 0.72, 0.06)
        scores = tuple(
            sorted((top1 - 0.05 * k + rng.gauss(0, 0.01) for k in range(5)), reverse=True)
        )
        endpoint = "/v1/retrieve" if rng.random() < 0.2 else "/v1/chat/completions"
        error = rng.random() < error_rate
        generation = endpoint != "/v1/retrieve" and not error
        refused = generation and rng.random() < (refusal_rate_after if drifted else refusal_rate)
        if refused:
            answer = "I cannot answer that from the documents."
        else:
            answer = f"To do that, open Settings and follow the steps in [1]. ({query})"
        if error:
            latency /= 10
        elif not generation:
            latency /= 20
        records.append(
            RequestRecord(
                time=start + i * interval_s + rng.uniform(0, interval_s / 2),
                endpoint=endpoint,
                model=rng.choice(("smollm2-135m-instruct", "smollm2-135m-instruct:support")),
                status=500 if error else 200,
                latency_s=latency,
                prompt_tokens=rng.randint(300, 700) if generation else 0,
                completion_tokens=(10 if refused else rng.randint(30, 120)) if generation else 0,
                stream=generation and rng.random() < 0.5,
                query=query,
                answer=answer if generation else None,
                retrieval_scores=scores,
                refused=refused if generation else None,
                error="RuntimeError: CUDA out of memory" if error else None,
            )
        )
    return records


def write_synthetic_log(path: Path, records: list[RequestRecord]) -> Path:
    """Store ``records`` (all of them: sample rate 1) in a request log at ``path``."""
    with RequestLog(LogSettings(path=path)) as log:
        for record in records:
            log.record(record)
    return path
