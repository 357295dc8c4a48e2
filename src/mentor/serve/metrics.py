"""What ``/metrics`` exposes, in the Prometheus text format (prometheus_client, own registry).

Counters and histograms per endpoint and model: requests by status, request seconds, time to
first token, prompt and generated tokens, searches run; gauges read live: the queue depth and
the number of adapters loaded. One registry per app, so two servers in one process (tests) never
share counts.
"""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

_SECONDS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)


class Metrics:
    def __init__(self, queue_depth: Callable[[], float], adapters: Callable[[], float]) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "mentor_requests", "Requests answered.", ["endpoint", "model", "status"], registry=r
        )
        self.seconds = Histogram(
            "mentor_request_seconds",
            "Seconds from arrival to the last byte.",
            ["endpoint"],
            buckets=_SECONDS,
            registry=r,
        )
        self.first_token = Histogram(
            "mentor_time_to_first_token_seconds",
            "Seconds from the start of decoding to the first token.",
            buckets=_SECONDS,
            registry=r,
        )
        self.prompt_tokens = Counter(
            "mentor_prompt_tokens", "Prompt tokens processed.", ["model"], registry=r
        )
        self.completion_tokens = Counter(
            "mentor_completion_tokens", "Tokens generated.", ["model"], registry=r
        )
        self.searches = Counter("mentor_searches", "search_documents calls run.", registry=r)
        Gauge("mentor_queue_depth", "Requests waiting for the model.", registry=r).set_function(
            queue_depth
        )
        Gauge("mentor_adapters_loaded", "LoRA adapters on the base.", registry=r).set_function(
            adapters
        )

    def render(self) -> bytes:
        return generate_latest(self.registry)
