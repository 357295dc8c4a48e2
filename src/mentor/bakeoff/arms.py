"""One arm, measured: load its model, answer every held-out question, and time it.

An arm is a model (the base, a LoRA adapter merged into it, a fully tuned copy, a distilled
student, or an incumbent model or adapter made elsewhere; an endpoint arm is answered by
:mod:`mentor.bakeoff.incumbents`), optionally quantized (``run_quantize``, with any adapter merged
first), optionally with retrieval. Every arm answers the same questions with the same system
prompt, greedy, at most ``answer.max_new_tokens`` tokens:

- quality: all questions in batches of ``answer.batch_size``, on the engine ``engine`` picks
  (:func:`answer_engine`: builtin, or vLLM where it can run the arm's model);
- latency: ``answer.latency_queries`` questions one at a time, end to end (retrieval, prompt,
  generation), as a user would wait for them, always on the builtin engine;
- memory: the process's peak resident set while the arm answers, sampled every 20 ms, and the
  bytes of the weights (and index) it holds.
"""

from __future__ import annotations

import contextlib
import ctypes
import gc
import json
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from rich.console import Console

from mentor.bakeoff.config import ArmSpec, BakeoffConfig, RetrievalSettings
from mentor.bakeoff.data import Question
from mentor.bakeoff.stages import Built, closed_book_prompt, cut_answer
from mentor.models.backends import EngineChoice, EngineSettings, open_engine, resolve_engine
from mentor.models.engine import HFEngine, TextEngine
from mentor.models.protocols import ChatMessage, SamplingConfig
from mentor.utils.fs import atomic_write_text
from mentor.utils.progress import progress_bar


@dataclass
class LoadedModel:
    model: Any
    tokenizer: Any
    description: str
    artifact_mb: float  # what this arm adds on disk (adapter, model copy, quantized weights)
    extra_build_s: float = 0.0  # quantization time
    notes: list[str] = field(default_factory=list)
    source: str | None = None  # the folder (or registry name) of the weights, for vLLM
    adapter: Path | None = None  # the LoRA adapter merged into ``model``; vLLM serves it apart

    @property
    def engine(self) -> HFEngine:
        """The builtin engine over the model in memory (latency is measured on it)."""
        return HFEngine(self.model, self.tokenizer)


LATENCY_ENGINE: EngineChoice = "builtin"
"""What latency is measured on: mentor's own loop, one question at a time."""


def answer_engine(
    arm: ArmSpec, built: Built | None, config: BakeoffConfig
) -> tuple[EngineChoice, str | None]:
    """The engine that answers ``arm``'s questions and, when it is not the configured one, why.

    vLLM cannot run a model quantized by mentor (its own format): such an arm falls back to the
    builtin engine rather than stop the bakeoff."""
    if config.engine.kind == "builtin":
        return "builtin", None
    if arm.quantize is not None:
        return "builtin", (
            f"vllm cannot run it (quantized to {arm.quantize} by mentor, its own format): "
            "answered by the builtin engine"
        )
    source = built.path if built is not None and built.kind == "full" else None
    base = built.base if built is not None else config.models.base
    return resolve_engine(config.engine, source or base, fallback=True)


@contextmanager
def arm_engine(
    loaded: LoadedModel, choice: EngineChoice, config: BakeoffConfig
) -> Iterator[TextEngine]:
    """The engine that answers the arm's questions (:func:`answer_engine` chose it)."""
    settings = config.engine if choice == "vllm" else EngineSettings()
    with open_engine(
        loaded.source,
        settings=settings,
        loaded=(loaded.model, loaded.tokenizer),
        adapter=loaded.adapter,
        device=config.device,
    ) as engine:
        yield engine


def folder_mb(path: Path) -> float:
    if path.is_file():
        return path.stat().st_size / 2**20
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) / 2**20


def weights_mb(model: Any) -> float:
    tensors = [*model.parameters(), *model.buffers()]
    seen: set[int] = set()
    total = 0
    for t in tensors:
        if t.data_ptr() in seen:
            continue
        seen.add(t.data_ptr())
        total += t.numel() * t.element_size()
    return total / 2**20


def release() -> None:
    """Give freed model memory back to the system, so the next arm's peak is its own."""
    gc.collect()
    with contextlib.suppress(OSError, AttributeError):  # not glibc
        ctypes.CDLL("libc.so.6").malloc_trim(0)


@contextmanager
def peak_rss(every_s: float = 0.02) -> Iterator[list[float]]:
    """Yields a one-item list that holds the peak resident memory (MB) seen while inside."""
    import psutil

    process = psutil.Process()
    peak = [process.memory_info().rss / 2**20]
    stop = threading.Event()

    def sample() -> None:
        while not stop.wait(every_s):
            peak[0] = max(peak[0], process.memory_info().rss / 2**20)

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    try:
        yield peak
    finally:
        stop.set()
        thread.join()
        peak[0] = max(peak[0], process.memory_info().rss / 2**20)


def load_arm_model(
    arm: ArmSpec,
    built: Built | None,
    config: BakeoffConfig,
    quant_folder: Path,
    console: Console,
) -> LoadedModel:
    """The arm's model, ready to generate."""
    from mentor.models.loading import load_causal_lm, load_tokenizer

    base = built.base if built is not None else config.models.base
    kind = built.kind if built is not None else None
    adapter = built.path if built is not None and kind in ("lora", "incumbent-lora") else None
    weights = built.path if built is not None and kind == "full" else None
    source = str(weights) if weights is not None else base
    what = {
        None: "",
        "lora": " + LoRA adapter",
        "full": " (all weights tuned)",
        "incumbent-lora": f" + the incumbent adapter {adapter}",
        "incumbent-model": " (incumbent model)",
    }
    description = f"{base}{what[kind]}"
    if arm.quantize is not None:
        return _quantized(
            arm.quantize, source, adapter, description, quant_folder, config.device, console
        )
    with console.status(f"loading {description}"):
        tokenizer = load_tokenizer(source)
        artifact = 0.0
        if adapter is not None:
            model = load_merged(source, adapter, config.device)
            artifact = folder_mb(adapter)
        else:
            model = load_causal_lm(source, device=config.device)
            if weights is not None:
                artifact = folder_mb(weights)
            elif kind == "incumbent-model" and built is not None and built.path.is_dir():
                artifact = folder_mb(built.path)
    return LoadedModel(model, tokenizer, description, artifact, source=source, adapter=adapter)


MERGED_FROM = "adapter merged from float32 weights"
"""In the fingerprint of every arm whose adapter is merged at load: arms measured when it was
merged into bf16 weights (twice rounded) are measured again."""


def merges_adapter(arm: ArmSpec, built: Built | None) -> bool:
    """Whether the arm's model is loaded with a LoRA adapter merged in (not quantized: the
    quantizer merges in float32 itself)."""
    return arm.quantize is None and built is not None and built.kind in ("lora", "incumbent-lora")


def load_merged(source: str, adapter: Path, device: str) -> Any:
    """``source`` with ``adapter`` merged as ``mentor adapters merge`` merges it: W + s·BA from
    the stored float32 weights, then cast once to the device's dtype. Merging into weights
    already cast to bf16 rounds twice, which moved SmolLM2 + a Tidepool LoRA's first greedy token
    (and the arm measured) away from the merged model a user deploys."""
    from mentor.models.loading import load_causal_lm, preferred_dtype, resolve_device
    from mentor.quantize.recipe import merge_adapter

    target = resolve_device(device)
    model: Any = load_causal_lm(source, dtype="float32", device=device)
    merge_adapter(model, adapter)
    return model.to(preferred_dtype(target))


def _quantized(
    level: str,
    source: str,
    adapter: Path | None,
    description: str,
    folder: Path,
    device: str,
    console: Console,
) -> LoadedModel:
    """Quantize (once; the folder is reused) and load on the bakeoff's device like every other
    arm, where each quantized layer runs that device's kernel (tinygemm / Triton on CUDA, see
    ``mentor.quantize.kernels``); on the CPU's kernels a GPU bakeoff's arm looked slower than it
    is."""
    from mentor.models.loading import load_tokenizer, resolve_device
    from mentor.quantize.io import WEIGHTS_FILE, load_quantized
    from mentor.quantize.recipe import QuantizeSettings, quantize_to_folder

    device = str(resolve_device(device))  # "auto" as every other arm resolves it

    done, timing = folder / WEIGHTS_FILE, folder / "build_seconds.json"
    if not (done.exists() and timing.exists()):
        started = time.perf_counter()
        quantize_to_folder(
            QuantizeSettings(
                model=source, method=level, adapter=adapter, out=folder, device=device
            ),
            console=console,
        )
        atomic_write_text(timing, json.dumps({"seconds": time.perf_counter() - started}))
    seconds = float(json.loads(timing.read_text())["seconds"])
    with console.status(f"loading the {level} model"):
        model = load_quantized(folder, device=device)
        tokenizer = load_tokenizer(folder)
    return LoadedModel(
        model,
        tokenizer,
        f"{description}, {level}",
        folder_mb(done),
        extra_build_s=seconds,
        notes=[f"quantized to {level} ({folder})"],
    )


@dataclass
class Retrieval:
    """An arm's retriever over one index, and how it searches."""

    searcher: Any  # mentor.rag.Retriever
    settings: RetrievalSettings
    rag_system: str
    _chosen: tuple[Any, int | None] | None = field(default=None, init=False, repr=False)

    def search(self, question: str) -> tuple[list[ChatMessage], list[str], list[str]]:
        """The RAG prompt, the passages' texts and their doc ids."""
        from mentor.rag.answer import build_messages
        from mentor.rag.tune import resolve_search

        folder = getattr(self.searcher, "folder", None)  # a Retriever's index: its tuned setting
        config = resolve_search(folder, {"mode": self.settings.mode, "k": self.settings.k})
        reranker, depth = self._reranker(folder)
        config = replace(config, rerank_depth=depth or config.rerank_depth)
        hits = self.searcher.search(question, config, reranker=reranker).hits
        prompt = build_messages(question, hits, system=self.rag_system)
        return prompt, [h.chunk.text for h in hits], [h.chunk.doc_id for h in hits]

    def _reranker(self, folder: Path | None) -> tuple[Any, int | None]:
        """The index's kept reranker and its depth (the rule search and ask follow), loaded
        once per arm."""
        if self._chosen is None:
            from mentor.rag.rerank_gate import chosen_reranker

            self._chosen = chosen_reranker(folder, None, None)
        return self._chosen


@dataclass
class Answered:
    """Answers to a question set, in order, with what each was given."""

    texts: list[str]
    evidence: list[list[str]]  # passages given (retrieval) or gold documents (closed-book)
    sources: list[list[str]]


Write = Callable[[Sequence[Sequence[ChatMessage]]], list[str]]
"""Answers to a list of prompts, in order: a local engine's batches or an endpoint's requests."""


def engine_writer(engine: TextEngine, config: BakeoffConfig) -> Write:
    """:data:`Write` over a local engine: greedy, ``answer.batch_size`` rows at a time."""
    from mentor.evaluate.answers import generate_answers

    sampling = SamplingConfig(max_new_tokens=config.answer.max_new_tokens)

    def write(prompts: Sequence[Sequence[ChatMessage]]) -> list[str]:
        return generate_answers(engine, prompts, sampling, batch_size=config.answer.batch_size)

    return write


def answer_all(
    write: Write,
    questions: Sequence[Question],
    retrieval: Retrieval | None,
    config: BakeoffConfig,
    gold: Callable[[Question], list[str]],
    console: Console,
    label: str,
) -> Answered:
    """Every question answered by ``write``, with a progress bar."""
    prompts, evidence, sources = [], [], []
    for q in questions:
        if retrieval is not None:
            prompt, passages, ids = retrieval.search(q.question)
        else:
            prompt, passages, ids = (
                closed_book_prompt(config.answer.system, q.question),
                gold(q),
                [],
            )
        prompts.append(prompt)
        evidence.append(passages)
        sources.append(ids)
    texts: list[str] = []
    # Large calls: within one the engine keeps batch_size rows running and a finished row's
    # place goes to the next question at once; at a call's end the batch drains. The bar moves
    # once per call.
    step = config.answer.batch_size * 8
    with progress_bar(console) as bar:
        task = bar.add_task(label, total=len(prompts))
        for start in range(0, len(prompts), step):
            texts += write(prompts[start : start + step])
            bar.update(task, completed=len(texts))
    first = config.answer.first_paragraph
    if first is None:
        first = not config.data.labels
    kept = [cut_answer(t) if first else " ".join(t.split()) for t in texts]
    return Answered(kept, evidence, sources)


def time_answers(
    loaded: LoadedModel,
    questions: Sequence[Question],
    retrieval: Retrieval | None,
    config: BakeoffConfig,
) -> tuple[list[float], float]:
    """End-to-end seconds per question answered alone, and mean tokens per answer, on the
    builtin engine (:data:`LATENCY_ENGINE`): one request at a time is what a user waits for."""
    from mentor.evaluate.answers import generate_answers

    seconds, tokens = [], []
    # one untimed warm-up, so the first timing does not pay for lazy initialisation
    warm = closed_book_prompt(config.answer.system, questions[0].question)
    engine, sampling = loaded.engine, SamplingConfig(max_new_tokens=config.answer.max_new_tokens)
    generate_answers(engine, [warm], SamplingConfig(max_new_tokens=4), batch_size=1)
    for q in questions:
        started = time.perf_counter()
        if retrieval is not None:
            prompt = retrieval.search(q.question)[0]
        else:
            prompt = closed_book_prompt(config.answer.system, q.question)
        text = generate_answers(engine, [prompt], sampling, batch_size=1)[0]
        seconds.append(time.perf_counter() - started)
        tokens.append(len(loaded.tokenizer(text, add_special_tokens=False)["input_ids"]))
    return seconds, sum(tokens) / max(1, len(tokens))
