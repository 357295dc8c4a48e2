"""What a bakeoff measured: one :class:`ArmResult` per arm and the :class:`BakeoffResult` around
them. Plain dataclasses that go to and from JSON unchanged (``report.json``), so the HTML report,
the terminal summary and a resumed run all read the same thing.

Scores are shares in [0, 1]; "points" are those shares times 100. Every estimate is a
:class:`mentor.evaluate.stats.Estimate` (``value``, ``low``, ``high``): the value with its 95%
bootstrap interval over the held-out questions, stored in JSON as those three fields.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from mentor.evaluate.stats import Estimate as Estimate  # re-exported: an arm's measures are these
from mentor.utils.fs import atomic_write_text

Status = Literal["done", "failed"]


@dataclass
class ScoredAnswer:
    """One held-out question as one arm answered it."""

    id: str
    question: str
    reference: str
    answer: str
    scores: dict[str, float]  # metric -> score of this answer
    group: str | None = None
    support: float | None = None  # share of content words found in the retrieved passages
    invented: list[str] = field(default_factory=list)  # numbers no passage or question holds
    sources: list[str] = field(default_factory=list)  # doc ids of the passages it was given


@dataclass
class Grounding:
    """How far an arm's answers stay within the documents; see ``method``."""

    supported_share: float | None  # answers with >= 80% of content words in the passages
    invented_share: float  # answers stating a number that no passage (or the question) holds
    mean_support: float | None
    method: str


@dataclass
class Costs:
    """Money, from measured time and the configured prices."""

    training_usd: float  # training (and teacher answers, indexing) hours x train price
    serve_usd_per_1k: float  # mean seconds per answer x 1000 / 3600 x serve price / concurrency
    yearly_usd: float  # retrains a year x training + queries a year x serving
    usd_per_point: float | None  # extra yearly cost over the base per point gained; None: no gain
    serve_basis: str = "time"  # time: seconds x serve price; tokens: endpoint usage x token prices


@dataclass
class ArmResult:
    """Everything measured for one arm."""

    name: str
    model: str  # "base", a training entry or an incumbents entry
    methods: list[str]  # advisor method keys: prompting, rag, lora, full, distill, quantization
    description: str
    status: Status = "done"
    error: str | None = None
    questions: int = 0
    quality: dict[str, Estimate] = field(default_factory=dict)  # metric -> estimate
    vs_base: Estimate | None = None  # primary metric minus the base's, paired, in points
    groups: dict[str, dict[str, float]] = field(default_factory=dict)  # group -> {metric, n}
    updates: Estimate | None = None  # primary metric on the knowledge-update questions
    grounding: Grounding | None = None
    latency_ms: dict[str, float] = field(default_factory=dict)  # p50, p95, mean, queries
    tokens_per_answer: float = 0.0
    peak_memory_mb: float = 0.0  # weights + the peak rise of resident memory while answering
    model_memory_mb: float = 0.0  # weights (and index) held in memory
    artifact_mb: float = 0.0  # what the arm adds on disk: adapter, model copy, index
    training_s: float = 0.0  # wall time to build its model, once
    index_s: float = 0.0  # wall time to build its index, once
    costs: Costs | None = None
    curve: list[dict[str, float]] = field(default_factory=list)  # training steps: loss, val_loss
    answers: list[ScoredAnswer] = field(default_factory=list)
    seconds: float = 0.0  # wall time of the arm's evaluation in this run
    answer_engine: str = "builtin"  # what wrote the scored answers: builtin or vllm
    answer_batch_size: int = 0  # questions per generate call when answering for the scores
    latency_engine: str = "builtin"  # what answered the latency questions, one at a time
    engine_note: str | None = None  # why the answers are not on the configured engine
    incumbent: str | None = None  # model, adapter or endpoint: what is run today, not built here
    offsite: bool = False  # answered by an endpoint off this machine: the prompts leave the site
    usage: dict[str, float] = field(default_factory=dict)
    """Endpoint arms: mean prompt_tokens and completion_tokens per scored question (as the
    endpoint reported them) and the prices, input/output_usd_per_million."""

    @property
    def ok(self) -> bool:
        return self.status == "done"

    @property
    def engines(self) -> str:
        """Which engine wrote the answers and which measured latency, in one line."""
        batched = f" (batched {self.answer_batch_size})" if self.answer_batch_size else ""
        line = (
            f"answers: {self.answer_engine}{batched}, latency: {self.latency_engine}, one at a time"
        )
        return f"{line}; {self.engine_note}" if self.engine_note else line


@dataclass
class Watch:
    signal: str
    threshold: str
    action: str


@dataclass
class Exported:
    """The recommended arm as one GGUF file for llama.cpp, Ollama or LM Studio (the arm as it was
    measured: a quantized arm's codes carried over, a float arm at f16), or why it is not."""

    arm: str
    path: str | None  # the .gguf file; None when it could not be written
    gguf_type: str = ""
    size_mb: float = 0.0
    modelfile: str | None = None  # Ollama's Modelfile beside it
    quantized: str | None = None  # the arm's quantization (int8, int4), None for a float arm
    exact: int = 0  # quantized tensors carried over with the codes that were measured
    retrieval: bool = False  # the arm retrieves: the GGUF is its model, mentor's index the rest
    error: str | None = None  # why no file was written


@dataclass
class Verdict:
    """The recommendation: measured results and the advisor's reasoning, combined."""

    arm: str | None
    methods: list[str]
    paragraph: str  # what a manager reads
    reasons: list[str]  # the measured and the framework's reasons, one line each
    fallback: str  # the arm (or method) to switch to, with why
    fallback_arm: str | None
    monitoring: list[Watch]
    advisor_methods: list[str]
    advisor_summary: str
    agrees: bool  # measurement and framework point to the same methods
    eligible: list[str]  # arms that met the constraints, best first
    excluded: dict[str, str]  # arm -> why it was not eligible
    export: Exported | None = None  # the chosen arm as GGUF (config ``export``)


@dataclass
class Reference:
    """A published figure to read the arms against (PubMedQA's human and best model)."""

    name: str
    metric: str
    value: float
    source: str


@dataclass
class BakeoffResult:
    name: str
    profile: str | None
    primary: str
    metrics: list[str]
    base: str  # name of the base arm
    arms: list[ArmResult]
    verdict: Verdict | None = None
    references: list[Reference] = field(default_factory=list)
    data: dict[str, Any] = field(default_factory=dict)  # counts: docs, train, test, updates
    machine: dict[str, Any] = field(default_factory=dict)  # cpu, threads, torch
    config: dict[str, Any] = field(default_factory=dict)
    started: str = ""
    seconds: float = 0.0
    notes: list[str] = field(default_factory=list)

    def arm(self, name: str) -> ArmResult:
        for a in self.arms:
            if a.name == name:
                return a
        raise KeyError(name)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def save(self, path: Path) -> None:
        atomic_write_text(path, json.dumps(self.to_dict(), indent=1, default=str))


def _estimate(raw: Any) -> Estimate | None:
    return Estimate(**raw) if raw else None


def arm_from_dict(raw: dict[str, Any]) -> ArmResult:
    """An :class:`ArmResult` read back from its JSON form."""
    raw = dict(raw)
    raw["quality"] = {k: Estimate(**v) for k, v in raw.get("quality", {}).items()}
    raw["vs_base"] = _estimate(raw.get("vs_base"))
    raw["updates"] = _estimate(raw.get("updates"))
    raw["grounding"] = Grounding(**raw["grounding"]) if raw.get("grounding") else None
    raw["costs"] = Costs(**raw["costs"]) if raw.get("costs") else None
    raw["answers"] = [ScoredAnswer(**a) for a in raw.get("answers", [])]
    return ArmResult(**raw)


def result_from_dict(raw: dict[str, Any]) -> BakeoffResult:
    raw = dict(raw)
    raw["arms"] = [arm_from_dict(a) for a in raw["arms"]]
    verdict = raw.get("verdict")
    if verdict:
        verdict = dict(verdict)
        verdict["monitoring"] = [Watch(**w) for w in verdict["monitoring"]]
        if verdict.get("export"):
            verdict["export"] = Exported(**verdict["export"])
        raw["verdict"] = Verdict(**verdict)
    raw["references"] = [Reference(**r) for r in raw.get("references", [])]
    return BakeoffResult(**raw)


def load_result(path: Path) -> BakeoffResult:
    return result_from_dict(json.loads(Path(path).read_text()))
