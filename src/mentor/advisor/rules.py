"""The decision between RAG, fine-tuning, distillation and quantization, as small pure rules.

    Situation ─► knowledge ─► deployment ─► behaviour ─► data ─► Recommendation
                 RAG or not?  must the      tune, and     local or   methods, the branch taken,
                              model be      how? (knows   hosted?    fallback, monitoring,
                              small?        if distilling)           warnings

Each layer is a function of the situation that returns a :class:`Step`: the methods it adds and
the :class:`Reason` for the branch it took (a rule id from :data:`RULES`, the condition that fired,
why). :func:`mentor.advisor.plan.recommend` runs them and merges the methods: training first, then
compression, then retrieval (``["lora", "rag"]``). The thresholds are module constants below.
"""

from __future__ import annotations

from dataclasses import dataclass

from mentor.advisor.situation import Situation

METHODS: dict[str, str] = {
    "prompting": "few-shot prompting of a ready model",
    "rag": "retrieval-augmented generation over your documents",
    "lora": "LoRA fine-tuning: a low-rank adapter on a frozen base",
    "full_finetune": "full fine-tuning of every weight",
    "provider_finetune": "the hosting provider's fine-tuning service",
    "distillation": "distillation of a larger teacher into a small student",
    "quantization": "int8/int4 quantization of the weights",
}

RULES: dict[str, str] = {
    "knowledge.fresh": "knowledge changes weekly or faster: retrieve it",
    "knowledge.cited": "answers must cite sources: retrieve them",
    "knowledge.documents": "a stable document collection grounds the answers: retrieve it",
    "knowledge.none": "no documents and stable knowledge: nothing to retrieve",
    "deploy.hosted": "the provider serves the model",
    "deploy.classifier": "a small encoder classifier fits every hardware",
    "deploy.classifier-distill": "few labels for a classifier: a teacher labels unlabelled text",
    "deploy.server": "the hardware serves a 7-8B model in time",
    "deploy.device": "a laptop, edge or mobile device needs a small model",
    "deploy.latency": "the latency budget is too tight for a 7-8B model",
    "deploy.volume": "a low budget at high volume needs cheap queries",
    "deploy.quantize-only": "a small model is needed but there is no teacher: quantize one",
    "deploy.local-index": "retrieval on a device keeps its index there",
    "behaviour.provider-finetune": "hosted model with examples: the provider fine-tunes it",
    "behaviour.hosted-prompting": "hosted model, few examples, no documents: prompt it",
    "behaviour.capability-tune": "a new skill with enough examples: fine-tune",
    "behaviour.capability-distill": "a new skill, few examples: learn it from a teacher",
    "behaviour.capability-unmet": "a new skill with neither examples nor teacher",
    "behaviour.full": "thousands of examples and a high budget: full fine-tuning",
    "behaviour.lora": "enough examples for an adapter: LoRA",
    "behaviour.base-ok": "few examples, and retrieval supplies the knowledge",
    "behaviour.teacher-instead": "few examples, but the student learns from the teacher",
    "behaviour.few-shot": "few examples and no documents: prompt first",
    "data.local": "secret data: everything stays on your machines",
    "data.provider": "hosted model and nothing secret: data goes to the provider",
    "data.open": "nothing secret: hosted services may be used",
    "change.incumbent": "something runs today: keep it until a measured change beats it",
    "fallback.bigger-model": "distillation falls short: a larger model, quantized",
    "fallback.lora": "full fine-tuning misbehaves: LoRA",
    "fallback.base-model": "the adapter loses: the base with prompts (and retrieval)",
    "fallback.prompting": "the provider's tuned copy loses: prompting",
    "fallback.rag-provider": "hosted retrieval falls short: the provider's fine-tuning",
    "fallback.rag-tune": "retrieval falls short: LoRA on generated question-answer pairs",
    "fallback.synthetic": "prompting falls short: a teacher labels your unlabelled text",
    "fallback.collect": "prompting falls short: collect examples, then fine-tune",
    "fallback.distil-later": "an off-the-shelf small model falls short: distil one",
}

LORA_MIN_EXAMPLES = 100  # a LoRA adapter starts paying off from ~100 good examples
FULL_MIN_EXAMPLES = 5_000  # full fine-tuning wants thousands (else it overfits or forgets)
PROVIDER_MIN_EXAMPLES = 50  # hosted fine-tuning APIs accept 10, show clear gains from ~50-100
FRESH = {"weekly": "every week", "daily": "every day", "realtime": "by the minute"}
ON_DEVICE = ("laptop", "edge", "mobile")
SMALL_MEMORY_GB = 8.0  # under this, a 7-8B model does not fit even at int8
HIGH_VOLUME_QUERIES = 50_000  # per day: where per-query price dominates everything else

# Decoding reads every weight once per token, so tokens/s ≈ memory bandwidth / model bytes.
# Typical bandwidths (GB/s): an H100/A100 (HBM), a server's DDR5 channels, a laptop's LPDDR5,
# a single-board computer's LPDDR4 (Raspberry Pi 5 class), a phone's LPDDR5.
BANDWIDTH_GBPS = {
    "server_gpu": 2000.0,
    "cpu_server": 150.0,
    "laptop": 60.0,
    "edge": 15.0,
    "mobile": 40.0,
}
ANSWER_TOKENS = 100  # a short answer, for latency arithmetic
REFERENCE_MODEL_GB = 15.0  # a 7-8B model in bf16
BYTES_PER_PARAM = {"int8": 1.0, "int4": 0.53}  # int4: 4 bits plus a scale and offset per 128
WEIGHT_SHARE = 0.5  # of the memory, for weights; the rest is the runtime, cache and the OS
INDEX_LAG = {"monthly": "1 week", "weekly": "1 day", "daily": "2 hours", "realtime": "1 minute"}


@dataclass(frozen=True)
class Reason:
    """One branch the decision took."""

    rule: str  # an id from RULES
    condition: str  # the facts that made it fire, e.g. "freshness=daily"
    because: str  # the reasoning in plain language


@dataclass(frozen=True)
class Step:
    """One layer's decision: methods to add, why, and any warnings."""

    methods: tuple[str, ...]
    reason: Reason
    warnings: tuple[str, ...] = ()


def _step(rule: str, condition: str, because: str, methods: tuple[str, ...] = ()) -> Step:
    return Step(methods, Reason(rule, condition, because))


def serves_hosted(s: Situation) -> bool:
    """Only a hosted API may serve, and nothing secret forbids it (secret data wins)."""
    return s.hosted_model_only and not s.secret_documents


def knowledge(s: Situation) -> Step:
    """Does the knowledge belong in an index? Fresh, cited or document-bound knowledge does."""
    if s.freshness in FRESH:
        warnings = []
        if s.freshness == "realtime":
            warnings.append(
                "Realtime data: ingest the feed continuously (streaming upserts, or a tool call "
                "to the feed per query); an index rebuilt nightly is already stale."
            )
        if not s.documents:
            warnings.append(
                f"Knowledge changes {FRESH[s.freshness]}, but no documents or feed were named: "
                "retrieval needs a source to search."
            )
        step = _step(
            "knowledge.fresh",
            f"freshness={s.freshness}",
            f"Knowledge that changes {FRESH[s.freshness]} belongs in an index updated in "
            "minutes; facts trained into weights go stale at the next change and need a new "
            "training run.",
            ("rag",),
        )
        return Step(step.methods, step.reason, tuple(warnings))
    if s.citations_required:
        step = _step(
            "knowledge.cited",
            "citations_required",
            "Answers must cite their source, and only retrieval knows which passage an answer "
            "came from; a fine-tuned model cannot point to where it learnt a fact.",
            ("rag",),
        )
        if s.documents:
            return step
        return Step(step.methods, step.reason, ("Citations need documents to cite.",))
    if s.documents:
        return _step(
            "knowledge.documents",
            f"documents, freshness={s.freshness}",
            "The answers must come from your documents: retrieval grounds them in the text, "
            "updates with a re-index, and beats training facts into weights, which models "
            "recall unreliably.",
            ("rag",),
        )
    return _step(
        "knowledge.none",
        f"no documents, freshness={s.freshness}",
        "There is no document collection and the knowledge is stable: what the model needs is "
        "in its weights or in the examples, so there is nothing to retrieve.",
    )


def quant_level(s: Situation) -> str:
    return "int4" if s.hardware in ON_DEVICE and s.memory() < SMALL_MEMORY_GB else "int8"


def reference_latency_ms(s: Situation) -> float:
    """Time for a 7-8B bf16 model to decode a short answer on the situation's hardware."""
    return ANSWER_TOKENS * REFERENCE_MODEL_GB / BANDWIDTH_GBPS[s.hardware] * 1000


def max_params_b(s: Situation, level: str) -> float:
    """The largest model (billions of parameters) at ``level`` whose weights fit in half the
    memory and, given a latency budget, decode a short answer within it."""
    budget_gb = s.memory() * WEIGHT_SHARE
    if s.latency_budget_ms is not None:
        speed_gb = BANDWIDTH_GBPS[s.hardware] * s.latency_budget_ms / 1000 / ANSWER_TOKENS
        budget_gb = min(budget_gb, speed_gb)
    return budget_gb / BYTES_PER_PARAM[level]


def _small_model_need(s: Situation) -> tuple[str, str, str] | None:
    """(rule, condition, because) when the served model must be small, else None."""
    memory = s.memory()
    if s.hardware in ON_DEVICE or memory < SMALL_MEMORY_GB:
        return (
            "deploy.device",
            f"hardware={s.hardware}, {memory:g} GB",
            f"The {s.hardware} has {memory:g} GB for the model: too little to hold or quickly "
            "run a 7-8B model, so it needs a small one.",
        )
    reference = reference_latency_ms(s)
    if s.latency_budget_ms is not None and s.latency_budget_ms < reference:
        return (
            "deploy.latency",
            f"latency_budget_ms={s.latency_budget_ms} < {reference:.0f}",
            f"A 7-8B model needs about {reference:.0f} ms for a {ANSWER_TOKENS}-token answer on "
            f"the {s.hardware} (decoding is bound by memory bandwidth): only a smaller model "
            "meets the budget.",
        )
    if s.budget_tier() == "low" and s.queries_per_day >= HIGH_VOLUME_QUERIES:
        return (
            "deploy.volume",
            f"budget=low, queries_per_day={s.queries_per_day}",
            "At this volume the price per query dominates and the budget is low: a small "
            "model costs a fraction per query of a large one.",
        )
    return None


def deployment(s: Situation, has_rag: bool) -> tuple[Step, ...]:
    """Must the served model be small, and how does it get small: distil, or just quantize?"""
    if serves_hosted(s):
        warnings = []
        if s.latency_budget_ms is not None and s.latency_budget_ms < 1000:
            warnings.append("Hosted API round trips often take over a second for a full answer.")
        if s.hardware in ON_DEVICE:
            warnings.append(
                f"A device ({s.hardware}) calling a hosted API works only while online."
            )
        step = _step(
            "deploy.hosted",
            "hosted_model_only",
            "The provider serves the model: the levers are the prompt, retrieval and the "
            "provider's fine-tuning service; no local weights to train or compress.",
        )
        return (Step((), step.reason, tuple(warnings)),)
    if s.task == "classification":
        small = (
            "A small encoder with a classification head (MiniLM/BERT size, ≤110M parameters) "
            "labels a text in milliseconds on a CPU and fits any hardware here"
        )
        few = s.labelled_examples < LORA_MIN_EXAMPLES
        if few and s.teacher_available and s.unlabelled_text:
            return (
                _step(
                    "deploy.classifier-distill",
                    f"task=classification, labelled_examples={s.labelled_examples}, teacher, "
                    "unlabelled_text",
                    f"{small}. With few labels, the teacher labels your unlabelled texts and the "
                    "classifier learns from its answers (distillation).",
                    ("distillation",),
                ),
            )
        return (
            _step(
                "deploy.classifier",
                "task=classification",
                f"{small}: no distillation or quantization needed.",
            ),
        )
    need = _small_model_need(s)
    if need is None:
        return (
            _step(
                "deploy.server",
                f"hardware={s.hardware}, {s.memory():g} GB",
                f"The {s.hardware} serves a 7-8B model within the budget: no compression needed.",
            ),
        )
    rule, condition, because = need
    level = quant_level(s)
    size = f"a student of ≤{max_params_b(s, level):.1f}B parameters at {level}"
    if s.teacher_available:
        source = "your unlabelled text" if s.unlabelled_text else "prompts it writes itself"
        steps = [
            _step(
                rule,
                condition,
                f"{because} Distil a larger teacher into {size}: the student learns the "
                f"teacher's answers on {source}, keeping most of its quality.",
                ("distillation", "quantization"),
            )
        ]
    else:
        steps = [
            Step(
                ("quantization",),
                Reason(
                    "deploy.quantize-only",
                    f"{condition}, no teacher",
                    f"{because} With no teacher to distil from, take the best off-the-shelf "
                    f"small model and quantize it ({level}, ≤{max_params_b(s, level):.1f}B).",
                ),
                ("No teacher model: distillation, usually the stronger small model, is out.",),
            )
        ]
    if has_rag and s.hardware in ON_DEVICE:
        steps.append(
            _step(
                "deploy.local-index",
                f"rag, hardware={s.hardware}",
                "The index lives on the device beside the model (an embedded store such as "
                "LanceDB and a small embedder) and syncs when the documents change.",
            )
        )
    return tuple(steps)


def _tune(s: Situation, rule: str, why: str) -> Step:
    """LoRA, or full fine-tuning when the data is large and the budget high."""
    n = s.labelled_examples
    target = "a small encoder classifier" if s.task == "classification" else "the base model"
    if n >= FULL_MIN_EXAMPLES and s.budget_tier() == "high":
        return _step(
            "behaviour.full" if rule == "behaviour.lora" else rule,
            f"{why}, labelled_examples={n} ≥ {FULL_MIN_EXAMPLES}, budget=high",
            f"{n:,} examples and a high budget justify full fine-tuning of {target}: every "
            "weight adapts, the most a model can learn from the data.",
            ("full_finetune",),
        )
    if n < FULL_MIN_EXAMPLES:
        warning = (
            f"{n:,} labelled examples is enough for LoRA but not for full fine-tuning "
            f"(about {FULL_MIN_EXAMPLES:,}+)."
        )
    else:
        warning = (
            f"{n:,} examples would support full fine-tuning, but the budget is "
            f"{s.budget_tier()}: LoRA gets most of the gain for a fraction of the GPU time."
        )
    step = _step(
        rule,
        f"{why}, labelled_examples={n} ≥ {LORA_MIN_EXAMPLES}",
        f"{n:,} examples teach {target} the behaviour, style and format reliably through a "
        "LoRA adapter: cheap to train, small to store, and the base stays intact.",
        ("lora",),
    )
    return Step(step.methods, step.reason, (warning,))


def behaviour(s: Situation, has_rag: bool, distilling: bool) -> Step:
    """Does the model's behaviour need training, and how?"""
    n = s.labelled_examples
    if serves_hosted(s):
        if s.new_capability or n >= PROVIDER_MIN_EXAMPLES:
            step = _step(
                "behaviour.provider-finetune",
                f"hosted_model_only, labelled_examples={n}"
                + (", new_capability" if s.new_capability else ""),
                "Without local weights, the provider's fine-tuning service is the way to teach "
                "the model behaviour: it trains and serves a private copy you never download.",
                ("provider_finetune",),
            )
            if n >= PROVIDER_MIN_EXAMPLES:
                return step
            warning = f"Collect at least {PROVIDER_MIN_EXAMPLES} examples of the new skill."
            return Step(step.methods, step.reason, (warning,))
        if not has_rag:
            return _step(
                "behaviour.hosted-prompting",
                f"hosted_model_only, labelled_examples={n} < {PROVIDER_MIN_EXAMPLES}",
                "Too few examples for the provider's fine-tuning: put the best ones in the "
                "prompt as few-shot examples.",
                ("prompting",),
            )
    elif s.new_capability:
        if n >= LORA_MIN_EXAMPLES:
            return _tune(s, "behaviour.capability-tune", "new_capability")
        if s.teacher_available:
            return _step(
                "behaviour.capability-distill",
                f"new_capability, labelled_examples={n} < {LORA_MIN_EXAMPLES}, teacher",
                "Retrieval cannot teach a skill, and there are too few examples to train one: "
                "a teacher that has the skill writes the training data and the model learns "
                "it by distillation.",
                ("distillation",),
            )
        step = _step(
            "behaviour.capability-unmet",
            f"new_capability, labelled_examples={n} < {LORA_MIN_EXAMPLES}, no teacher",
            "A new skill must be trained (retrieval only adds facts), but there are neither "
            "enough examples nor a teacher: prompt with the examples you have while you collect "
            "more.",
            ("prompting",),
        )
        warning = f"To learn the skill, collect {LORA_MIN_EXAMPLES}+ examples or find a teacher."
        return Step(step.methods, step.reason, (warning,))
    elif n >= LORA_MIN_EXAMPLES:
        return _tune(s, "behaviour.lora", "stable behaviour")
    if has_rag:
        return _step(
            "behaviour.base-ok",
            f"labelled_examples={n}, retrieval",
            "The base model's behaviour is adequate and the gap is knowledge, which retrieval "
            "supplies: no training needed for behaviour.",
        )
    if distilling:
        return _step(
            "behaviour.teacher-instead",
            f"labelled_examples={n} < {LORA_MIN_EXAMPLES}, distilling",
            "Too few labelled examples to fine-tune on, but distillation needs none: the "
            "teacher's answers are the labels.",
        )
    step = _step(
        "behaviour.few-shot",
        f"labelled_examples={n} < {LORA_MIN_EXAMPLES}, no documents",
        "Too few examples to train on and no documents to retrieve: start with few-shot "
        "prompting, and grow the examples (by hand, or synthetic ones from a teacher) to "
        f"{LORA_MIN_EXAMPLES}+ before training.",
        ("prompting",),
    )
    return Step(step.methods, step.reason, (f"Fine-tuning needs {LORA_MIN_EXAMPLES}+ examples.",))


def data_handling(s: Situation, methods: tuple[str, ...]) -> Step:
    """Where the data may go: secret data keeps everything local."""
    if s.secret_documents:
        teacher = " and the teacher" if "distillation" in methods else ""
        step = _step(
            "data.local",
            "secret_documents",
            f"The data must not leave your machines: the index, the training, the weights"
            f"{teacher} all run there, and no hosted API ever sees a document.",
        )
        if not s.hosted_model_only:
            return step
        warning = (
            "hosted_model_only conflicts with secret documents: this advice keeps the data "
            "local. Use a provider only under terms that cover this data (no retention, your "
            "region), then rerun without secret_documents."
        )
        return Step(step.methods, step.reason, (warning,))
    if s.hosted_model_only:
        return _step(
            "data.provider",
            "hosted_model_only, nothing secret",
            "Prompts, retrieved passages and training examples go to the provider; acceptable "
            "as nothing is secret, but check its retention terms.",
        )
    return _step(
        "data.open",
        "nothing secret",
        "Nothing must stay local: hosted teachers and embedding APIs may be used where they "
        "are cheaper.",
    )


def change(s: Situation, methods: tuple[str, ...]) -> Step | None:
    """What runs today stays until a measurement beats it (None when nothing runs yet)."""
    if not s.incumbent:
        return None
    return _step(
        "change.incumbent",
        f"incumbent={s.incumbent}",
        f"You run {s.incumbent} today. Switching costs what no estimate here counts (migration, "
        "validation, new ways to fail), so keep it until "
        f"{' + '.join(methods)} measurably beats it on your own held-out questions: a "
        "`mentor bakeoff` with it as an incumbent arm tells you, with the interval.",
    )
