"""The bakeoff's configuration: the data, the models, what to train and the arms to compare.

One YAML file names all of it (``mentor bakeoff examples/bakeoff/tidepool.yaml``); paths in it are
relative to the file. ``profiles`` holds named sets of overrides (``quick``, ``full``) applied on
top with dotted keys, the same way command-line overrides are::

    profiles:
      quick: {answer.test_limit: 24, training.lora.epochs: 1, arms: [closed-book, rag, lora]}

An arm is a model (``base``, the name of an entry of ``training`` or of ``incumbents``) answering
the held-out questions, optionally with retrieval and optionally quantized. Trained models are
built once and shared: the ``lora`` adapter serves both the ``lora`` and the ``lora+rag`` arm.

``incumbents`` names what the user runs today, to measure beside mentor's arms: a model folder or
hub id, a PEFT adapter trained elsewhere on the run's base, or an OpenAI-compatible endpoint (a
hosted model, a vLLM or ``mentor serve`` server) with its token prices::

    incumbents:
      current-ft: {adapter: adapters/support-v3}
      hosted: {endpoint: {base_url: https://api.openai.com/v1, model: gpt-4o-mini,
               input_usd_per_million: 0.15, output_usd_per_million: 0.60}}
    arms: [{name: closed-book}, {name: current-ft, model: current-ft},
           {name: hosted+rag, model: hosted, retrieval: {}}]
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlparse

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_core import ErrorDetails

from mentor.advisor.situation import BudgetTier, Freshness, Hardware
from mentor.evaluate.labels import LABEL_METRICS
from mentor.evaluate.stats import RESAMPLES
from mentor.models.backends import EngineSettings
from mentor.utils.config import read_yaml_mapping
from mentor.utils.tracking import ReportTo

Metric = Literal["exact_match", "token_f1", "rouge_l", "contains", "accuracy", "macro_f1"]
"""The names in :data:`mentor.evaluate.text.TEXT_METRICS` and
:data:`mentor.evaluate.labels.LABEL_METRICS` (``tests/bakeoff/test_config.py`` keeps them equal)."""
BASE = "base"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class UpdateSettings(_Strict):
    """Documents that changed after training, and questions about the new facts."""

    docs: Path = Field(description="Folder of replacement documents (same file names replace).")
    questions: Path = Field(description="qa JSONL of questions whose answers are the new facts.")


class DataSettings(_Strict):
    """What the arms learn from and are scored on."""

    docs: Path | None = Field(
        default=None, description="Folder of documents to retrieve from (md, txt, pdf, html...)."
    )
    train: Path | None = Field(
        default=None,
        description="qa records of training questions with answers (none: no labels); JSONL, "
        "CSV, Parquet, Arrow, a folder or hf:ORG/NAME[:split]; Alpaca, ShareGPT and TRL "
        "prompt/completion single exchanges are read as qa.",
    )
    validation: Path | None = Field(
        default=None, description="qa JSONL used for early stopping and calibration."
    )
    test: Path | None = Field(
        default=None,
        description="qa JSONL of held-out questions every arm is scored on (required unless "
        "`prepare` makes it).",
    )
    updates: UpdateSettings | None = Field(
        default=None,
        description="A knowledge update: every arm is also scored on questions about documents "
        "that changed after training (retrieval arms read the new documents).",
    )
    group_by: str | None = Field(
        default=None,
        description="A field of the test records to report scores by group as well "
        "(for example seen_in_training).",
    )
    labels: list[str] | None = Field(
        default=None,
        description="Answers are one of these labels (yes/no/maybe): the first label a reply "
        "names is its answer, scored by accuracy and macro-F1.",
    )
    prepare: Literal["pubmedqa"] | None = Field(
        default=None,
        description="Build docs/train/validation/test from a raw public set first: pubmedqa reads "
        "the file in `source` and writes a seeded split under the run folder.",
    )
    source: Path | None = Field(default=None, description="The raw file `prepare` reads.")
    split_seed: int = Field(default=0, description="Seed of the split `prepare` makes.")


class ModelSettings(_Strict):
    """The models the arms use (registry names, folders or hf:ORG/NAME)."""

    base: str = Field(
        default="smollm2-135m-instruct", description="The model every arm starts from."
    )
    embedder: str = Field(default="minilm-l6", description="Sentence embedder of the RAG index.")
    teacher: str | None = Field(
        default=None, description="The larger model distillation learns from (default: base)."
    )
    student: str | None = Field(
        default=None, description="The small model distillation trains (default: base)."
    )


class AnswerSettings(_Strict):
    """How every arm answers, so that arms differ only in what they are."""

    system: str = Field(
        default="Answer the question briefly.", description="System prompt of every arm."
    )
    max_new_tokens: int = Field(default=48, ge=1, description="Longest answer, in tokens.")
    batch_size: int = Field(default=8, ge=1, description="Questions answered per generate call.")
    test_limit: int | None = Field(
        default=None, ge=1, description="Score at most this many test questions (spread evenly)."
    )
    updates_limit: int | None = Field(
        default=None, ge=1, description="Score at most this many knowledge-update questions."
    )
    first_paragraph: bool | None = Field(
        default=None,
        description="Score only the answer's first paragraph (small models ramble on after a "
        "blank line); default: yes for free text, no with labels, whose label may follow a "
        "lead-in such as 'The answer is:'.",
    )
    latency_queries: int = Field(
        default=8,
        ge=1,
        description="Questions answered one at a time, end to end, to measure latency.",
    )
    bootstrap: int = Field(default=RESAMPLES, ge=100, description="Bootstrap resamples of each CI.")
    seed: int = Field(default=0, description="Seed of the bootstrap and of training.")


class RetrievalSettings(_Strict):
    """Retrieval of an arm; the index is built once per document set and embedder."""

    mode: Literal["hybrid", "dense", "bm25"] | None = Field(
        default=None,
        description="Dense + BM25 fused, dense only or BM25 only (default: the index's tuned "
        "setting from `mentor rag tune`, else hybrid).",
    )
    k: int = Field(default=3, ge=1, description="Passages put in the prompt.")
    chunk_tokens: int = Field(default=200, ge=16, description="Passage size in tokens.")
    tune: Literal["off", "fast", "auto", "full"] = Field(
        default="fast",
        description="Tune the index after building it, as `mentor rag index` does, with the base "
        "model writing the synthetic questions: fast (fusion and refusal threshold), auto or "
        "full (also BM25, the embedder, chunk size and a reranker), off (the fixed recipe).",
    )
    tune_minutes: float = Field(
        default=10.0, gt=0, description="Time budget of that tuning (auto skips what won't fit)."
    )


class TrainingSpec(_Strict):
    """One trained model: an adapter, a fully tuned copy, or a distilled student."""

    method: Literal["lora", "full", "distill"] = Field(
        description="lora: adapter on the base; full: every weight; distill: the student learns "
        "from the teacher."
    )
    epochs: float = Field(default=3.0, gt=0, description="Passes over the training questions.")
    lr: float | None = Field(
        default=None, gt=0, description="Peak learning rate (default 2e-4 LoRA, 2e-5 full)."
    )
    batch_size: int = Field(default=8, ge=1, description="Examples per step.")
    max_steps: int | None = Field(default=None, ge=1, description="Stop after this many steps.")
    r: int = Field(default=16, ge=1, description="LoRA rank (lora, and a LoRA student).")
    distill: Literal["sequence", "logits"] = Field(
        default="sequence",
        description="sequence: the student fine-tunes on the teacher's answers (any tokenizers); "
        "logits: on its token distributions (same tokenizer).",
    )
    teacher_retrieval: bool = Field(
        default=True,
        description="Sequence distillation: the teacher answers with the retrieved passages, so "
        "the student learns grounded answers closed-book.",
    )
    student_method: Literal["lora", "full"] = Field(
        default="lora", description="Train an adapter on the student, or every weight."
    )
    teacher_limit: int | None = Field(
        default=None, ge=1, description="Distill from at most this many training questions."
    )


class EndpointSpec(_Strict):
    """An OpenAI-compatible ``/v1/chat/completions`` endpoint answering as an arm, and its prices.

    Its cost is the tokens the endpoint reports in ``usage`` times these prices; its latency is
    what the client waits, one question at a time."""

    base_url: str = Field(
        description="The endpoint's OpenAI-compatible root, usually ending in /v1 "
        "(https://api.openai.com/v1, http://localhost:8000/v1 for vLLM or mentor serve)."
    )
    model: str = Field(min_length=1, description="The model name the endpoint serves.")
    api_key_env: str = Field(
        default="OPENAI_API_KEY",
        description="Environment variable holding the key (never the key itself); empty for a "
        "server on this machine that needs none.",
    )
    input_usd_per_million: float = Field(
        default=0.0, ge=0, description="Price of a million prompt tokens, in USD (0: self-hosted)."
    )
    output_usd_per_million: float = Field(
        default=0.0, ge=0, description="Price of a million completion tokens, in USD."
    )
    concurrency: int = Field(
        default=4, ge=1, description="Requests in flight at once while answering for the scores."
    )
    timeout_s: float = Field(default=120.0, gt=0, description="Seconds one request may take.")
    requests_per_minute: float | None = Field(
        default=None, gt=0, description="The endpoint's requests-per-minute quota, if any."
    )

    @field_validator("base_url")
    @classmethod
    def _http(cls, value: str) -> str:
        parsed = urlparse(value)
        if parsed.scheme not in ("http", "https") or not parsed.hostname:
            raise ValueError(f"expected an http:// or https:// URL, got {value!r}")
        return value.rstrip("/")


class IncumbentSpec(_Strict):
    """What is run today, measured as it is: exactly one of model, adapter or endpoint."""

    model: str | None = Field(
        default=None,
        description="A model folder (relative to this file), an hf:ORG/NAME id or a registry "
        "name, answered by mentor's engine like the other arms.",
    )
    adapter: Path | None = Field(
        default=None,
        description="A PEFT LoRA adapter folder trained elsewhere on models.base (relative to "
        "this file); refused when its recorded base weights are not models.base's.",
    )
    endpoint: EndpointSpec | None = Field(
        default=None, description="An OpenAI-compatible endpoint: hosted model or a server."
    )
    description: str | None = Field(
        default=None, description="What it is, in the report ('support bot v3, in production')."
    )

    @model_validator(mode="after")
    def _one(self) -> IncumbentSpec:
        named = [k for k in ("model", "adapter", "endpoint") if getattr(self, k) is not None]
        if len(named) != 1:
            got = ", ".join(named) or "none"
            raise ValueError(f"name exactly one of model, adapter, endpoint (got {got})")
        if self.model is not None and self.model.startswith("hf:"):
            org, _, name = self.model.removeprefix("hf:").partition("/")
            if not org or not name:
                raise ValueError(f"model: expected hf:ORG/NAME, got {self.model!r}")
        return self

    @property
    def kind(self) -> Literal["model", "adapter", "endpoint"]:
        if self.endpoint is not None:
            return "endpoint"
        return "adapter" if self.adapter is not None else "model"


class ArmSpec(_Strict):
    """One way of answering: a model, optionally with retrieval, optionally quantized."""

    name: str = Field(description="Name in the report.")
    model: str = Field(
        default=BASE, description="base, or the name of a training or an incumbents entry."
    )
    retrieval: RetrievalSettings | None = Field(
        default=None, description="Retrieve passages and answer from them (RAG)."
    )
    quantize: Literal["int8", "int4"] | None = Field(
        default=None, description="Quantize the model (with any adapter merged) first."
    )


class CostSettings(_Strict):
    """Prices that turn measured time into money; edit them to your own."""

    train_usd_per_hour: float = Field(
        default=0.10,
        ge=0,
        description="Price of an hour of the machine that trains and indexes (default: a 2-vCPU "
        "cloud VM).",
    )
    serve_usd_per_hour: float = Field(
        default=0.10, ge=0, description="Price of an hour of the machine that serves."
    )
    concurrency: int = Field(
        default=1, ge=1, description="Queries one server answers at once (batching)."
    )


class SituationFacts(_Strict):
    """What the data cannot tell the advisor; the rest (labels, documents) is read from it."""

    freshness: Freshness = Field(default="monthly", description="How often the knowledge changes.")
    hardware: Hardware = Field(default="cpu_server", description="Where the model will serve.")
    memory_gb: float | None = Field(default=None, gt=0, description="Memory for the model (GB).")
    latency_budget_ms: int | None = Field(
        default=None, gt=0, description="Longest acceptable answer time (p95), in ms."
    )
    secret_documents: bool = Field(default=False, description="Documents may not leave the site.")
    citations_required: bool = Field(default=False, description="Answers must cite sources.")
    new_capability: bool = Field(default=False, description="The model must learn a new skill.")
    budget: BudgetTier | float = Field(default="medium", description="low, medium, high or USD/y.")
    queries_per_day: int = Field(default=1000, ge=0, description="Expected queries per day.")


class BakeoffConfig(_Strict):
    """One bakeoff."""

    name: str = Field(default="bakeoff", description="Title of the report.")
    data: DataSettings = Field(description="Documents, training and held-out questions.")
    models: ModelSettings = Field(default_factory=ModelSettings, description="The models.")
    answer: AnswerSettings = Field(default_factory=AnswerSettings, description="How arms answer.")
    primary: Metric = Field(
        default="token_f1",
        description="The quality measure the recommendation ranks by (labels: accuracy).",
    )
    training: dict[str, TrainingSpec] = Field(
        default_factory=dict, description="Trained models, by name; arms refer to them."
    )
    incumbents: dict[str, IncumbentSpec] = Field(
        default_factory=dict,
        description="What is run today (a model, an adapter trained elsewhere, an endpoint), by "
        "name; arms refer to them and the verdict may recommend keeping one.",
    )
    arms: list[ArmSpec] = Field(description="The arms, in report order; the first is the base.")
    costs: CostSettings = Field(default_factory=CostSettings, description="Prices.")
    situation: SituationFacts = Field(
        default_factory=SituationFacts, description="Facts for the advisor."
    )
    out: Path = Field(default=Path("runs/bakeoff"), description="Folder of the run.")
    export: Literal["auto", "always", "never"] = Field(
        default="auto",
        description="Write the recommended arm as a GGUF file for llama.cpp, Ollama or LM Studio "
        "(out/export/ARM/, with a Modelfile): auto when it is quantized or serves on a laptop, "
        "edge box or phone; always; never.",
    )
    report_to: ReportTo = Field(
        default_factory=list,
        description="Trackers that get the run's config, per-step metrics, report and "
        "scores table: trackio, wandb, mlflow, tensorboard (each needs its extra, e.g. "
        "mentor[mlflow]).",
    )
    device: str = Field(default="cpu", description="cpu, cuda or auto.")
    engine: EngineSettings = Field(
        default_factory=EngineSettings,
        description="What writes the answers that are scored (and a distillation teacher's): "
        "builtin or vllm. Latency is always measured on the builtin engine, one question at a "
        "time; an arm vLLM cannot run (quantized by mentor) is answered by the builtin engine "
        "and the report says so.",
    )
    profiles: dict[str, dict[str, Any]] = Field(
        default_factory=dict,
        description="The file's profiles (overrides by name), kept so that a report on one "
        "profile can point to another.",
    )

    @model_validator(mode="after")
    def _consistent(self) -> BakeoffConfig:
        names = [a.name for a in self.arms]
        if not names:
            raise ValueError("arms: name at least one arm")
        if len(set(names)) != len(names):
            raise ValueError(f"arms: names repeat ({', '.join(names)})")
        clash = sorted(set(self.incumbents) & {BASE, *self.training})
        if clash:
            raise ValueError(f"incumbents.{clash[0]}: the name is taken (base or a training entry)")
        for arm in self.arms:
            if arm.model not in {BASE, *self.training, *self.incumbents}:
                known = ", ".join([BASE, *self.training, *self.incumbents])
                raise ValueError(f"arms.{arm.name}.model: {arm.model!r} is not one of {known}")
            incumbent = self.incumbents.get(arm.model)
            if incumbent is not None and incumbent.kind == "endpoint" and arm.quantize:
                raise ValueError(
                    f"arms.{arm.name}.quantize: {arm.model} is an endpoint; mentor cannot "
                    "quantize a model it does not hold"
                )
            if arm.retrieval is not None and self.data.docs is None and self.data.prepare is None:
                raise ValueError(f"arms.{arm.name}: retrieval needs data.docs")
        used = {a.model for a in self.arms}
        for name, spec in self.training.items():
            if name in used and self.data.train is None and self.data.prepare is None:
                raise ValueError(f"training.{name}: needs data.train (labelled questions)")
            rag_teacher = spec.method == "distill" and spec.distill == "sequence"
            rag_teacher = rag_teacher and spec.teacher_retrieval
            if rag_teacher and self.data.docs is None and self.data.prepare is None:
                raise ValueError(f"training.{name}: teacher_retrieval needs data.docs")
        if self.data.test is None and self.data.prepare is None:
            raise ValueError("data.test: name the held-out questions (or data.prepare)")
        if self.data.prepare is not None and self.data.source is None:
            raise ValueError("data.source: prepare needs the raw file to read")
        if self.primary in LABEL_METRICS and not self.data.labels:
            raise ValueError(f"primary: {self.primary} needs data.labels")
        return self

    def incumbent(self, arm: ArmSpec) -> IncumbentSpec | None:
        """The incumbents entry ``arm`` measures, if it measures one."""
        return self.incumbents.get(arm.model)

    def trained(self) -> dict[str, TrainingSpec]:
        """The training entries some arm uses, in config order."""
        used = {a.model for a in self.arms}
        return {n: s for n, s in self.training.items() if n in used}


_PATHS = ("docs", "train", "validation", "test", "source")


def _resolve(data: dict[str, Any], base: Path) -> None:
    section = data.get("data")
    if not isinstance(section, dict):
        return
    for key in _PATHS:
        value = section.get(key)
        # hf:ORG/NAME is a Hugging Face dataset id, not a path relative to the file
        if isinstance(value, str) and not value.startswith("hf:") and not Path(value).is_absolute():
            section[key] = str((base / value).resolve())
    for spec in (data.get("incumbents") or {}).values():
        if not isinstance(spec, dict):
            continue
        if isinstance(spec.get("adapter"), str) and not Path(spec["adapter"]).is_absolute():
            spec["adapter"] = str((base / spec["adapter"]).resolve())
        model = spec.get("model")
        # a folder next to the file; registry names and hf: ids stay as they are
        if isinstance(model, str) and not model.startswith("hf:") and (base / model).is_dir():
            spec["model"] = str((base / model).resolve())
    updates = section.get("updates")
    if isinstance(updates, dict):
        for key in ("docs", "questions"):
            if isinstance(updates.get(key), str) and not Path(updates[key]).is_absolute():
                updates[key] = str((base / updates[key]).resolve())


def _set(data: dict[str, Any], dotted: str, value: Any) -> None:
    *sections, leaf = dotted.split(".")
    target = data
    for section in sections:
        nxt = target.setdefault(section, {})
        if not isinstance(nxt, dict):
            raise ValueError(f"{dotted}: {section} is not a section")
        target = nxt
    target[leaf] = value


def _pick_arms(data: dict[str, Any], wanted: list[str], where: str) -> None:
    arms = data.get("arms") or []
    by_name = {a.get("name"): a for a in arms if isinstance(a, dict)}
    missing = [w for w in wanted if w not in by_name]
    if missing:
        raise ValueError(f"{where}: no arm named {', '.join(missing)}")
    data["arms"] = [by_name[w] for w in wanted]


def load_bakeoff_config(
    path: Path, *, profile: str | None = None, overrides: dict[str, Any] | None = None
) -> BakeoffConfig:
    """The YAML at ``path``, with the named profile's overrides, then ``overrides``, applied.

    A profile's ``arms`` entry is a list of arm names to keep, in order. Errors name the file and
    the field."""
    loaded = read_yaml_mapping(path)
    profiles = loaded.pop("profiles", None) or {}
    if profile is not None:
        if profile not in profiles:
            known = ", ".join(profiles) or "none"
            raise ValueError(f"{path}: no profile {profile!r} (profiles: {known})")
        for key, value in (profiles[profile] or {}).items():
            if key == "arms":
                _pick_arms(loaded, list(value), f"{path}: profiles.{profile}.arms")
            else:
                _set_or_fail(loaded, key, value, f"{path}: profiles.{profile}")
    # after the profile, so that its paths are relative to the file too; before the overrides,
    # whose paths are typed on the command line and so relative to where it runs
    _resolve(loaded, Path(path).parent)
    for key, value in (overrides or {}).items():
        if value is not None:
            _set_or_fail(loaded, key, value, str(path))
    loaded["profiles"] = {name: dict(p or {}) for name, p in profiles.items()}
    try:
        return BakeoffConfig.model_validate(loaded)
    except ValidationError as exc:
        raise ValueError(f"{path}: {'; '.join(_problem(e) for e in exc.errors())}") from None


def _set_or_fail(data: dict[str, Any], dotted: str, value: Any, where: str) -> None:
    try:
        _set(data, dotted, value)
    except ValueError as exc:
        raise ValueError(f"{where}: {exc}") from None


def _problem(error: ErrorDetails) -> str:
    """``field: message``; a check of the whole config names its field in the message."""
    where = ".".join(str(p) for p in error["loc"])
    message = error["msg"].removeprefix("Value error, ")
    return f"{where}: {message}" if where else message
