"""The bakeoff's building steps, each done once and kept: the RAG indexes and the trained models.

Every step goes through the project's own recipe (``build_index``, ``run_sft``, ``run_distill``,
``generate_dataset``) and leaves a ``stage.json`` beside its output with the wall time it took,
its training curve and a fingerprint of what it was built from. A later run with the same
fingerprint reuses the output; a changed config or data file rebuilds it; an interrupted training
resumes from its last checkpoint.

Fine-tuned arms train on exactly the prompt the closed-book arms are scored with (the bakeoff's
system prompt, then the question). Sequence distillation with ``teacher_retrieval`` lets the
teacher answer each training question from the retrieved passages, then fine-tunes the student
on those answers closed-book: the student learns grounded answers it will give without retrieval.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from rich.console import Console

from mentor.bakeoff.config import BakeoffConfig, RetrievalSettings, TrainingSpec
from mentor.bakeoff.data import Question
from mentor.models.backends import EngineChoice
from mentor.models.protocols import ChatMessage
from mentor.utils.fs import atomic_write_text
from mentor.utils.tracking import Tracker

STAGE_FILE = "stage.json"


@dataclass
class Built:
    """What a building step made, and what it cost."""

    path: Path  # the index folder, adapter folder or model folder
    seconds: float  # wall time to build it (the first time)
    kind: str  # index, lora, full
    base: str  # the model an adapter sits on (or the model itself)
    curve: list[dict[str, float]]
    notes: list[str]
    fingerprint: str

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "path": str(self.path)}


def fingerprint(*parts: Any) -> str:
    """A short hash of JSON-able ``parts`` (Paths by their content hash)."""

    def encode(value: Any) -> Any:
        if isinstance(value, Path):
            if value.is_file():
                return hashlib.sha256(value.read_bytes()).hexdigest()
            if value.is_dir():
                files = sorted(p for p in value.rglob("*") if p.is_file())
                return [(str(p.relative_to(value)), encode(p)) for p in files]
            return str(value)
        if isinstance(value, dict):
            return {str(k): encode(v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [encode(v) for v in value]
        return value

    text = json.dumps(encode(list(parts)), sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _reuse(folder: Path, wanted: str) -> Built | None:
    stage = folder / STAGE_FILE
    if not stage.exists():
        return None
    raw = json.loads(stage.read_text())
    if raw.get("fingerprint") != wanted:
        return None
    return Built(**{**raw, "path": Path(raw["path"])})


def _record(built: Built, folder: Path) -> Built:
    atomic_write_text(folder / STAGE_FILE, json.dumps(built.to_dict(), indent=1))
    return built


def _fresh(folder: Path, wanted: str) -> None:
    """Clear ``folder`` when it holds a run of other settings, so it cannot be resumed."""
    stage = folder / "fingerprint"
    if stage.exists() and stage.read_text() != wanted:
        shutil.rmtree(folder)
    folder.mkdir(parents=True, exist_ok=True)
    atomic_write_text(stage, wanted)


# --- retrieval -------------------------------------------------------------------------------


def merged_docs(docs: Path, updates: Path, out: Path) -> Path:
    """A copy of ``docs`` with the files of ``updates`` replacing (or adding to) it."""
    if out.exists():
        shutil.rmtree(out)
    shutil.copytree(docs, out)
    for path in sorted(updates.iterdir()):
        document = path.suffix.lower() in {".md", ".txt", ".html", ".pdf", ".json"}
        if path.is_file() and document and path.name.lower() != "readme.md":
            shutil.copy2(path, out / path.name)
    return out


def build_rag_index(
    docs: Path,
    embedder_name: str,
    settings: RetrievalSettings,
    folder: Path,
    console: Console,
    writer: str | None = None,
) -> Built:
    """The index of ``docs`` for ``settings`` (built once; ``build_index`` skips what is there),
    then tuned as ``settings.tune`` says, ``writer`` (a model) writing the synthetic questions."""
    from mentor.models.loading import load_embedder
    from mentor.rag import build_index
    from mentor.rag.index import IndexConfig

    tune = settings.tune if writer is not None else "off"
    wanted = fingerprint(
        docs, embedder_name, settings.chunk_tokens, tune, settings.tune_minutes, writer
    )
    if (done := _reuse(folder, wanted)) is not None:
        return done
    _fresh(folder, wanted)
    started = time.perf_counter()
    problems: list[str] = []
    with console.status(f"indexing {docs.name} with {embedder_name} + BM25"):
        embedder = load_embedder(embedder_name)
        report = build_index(
            folder / "index",
            [docs],
            embedder,
            config=IndexConfig(embedder=embedder_name, chunk_tokens=settings.chunk_tokens),
            on_problem=problems.append,
        )
    notes = [f"{report.documents} documents, {report.chunks} chunks", *problems]
    console.print(
        f"index of {docs.name}: {notes[0]}" + (f"; {len(problems)} problems" if problems else "")
    )
    if tune != "off" and report.chunks:
        assert writer is not None
        notes.append(_tune_index(folder / "index", embedder, tune, settings.tune_minutes, writer))
        console.print(f"index of {docs.name}: {notes[-1]}", highlight=False)
    built = Built(
        folder / "index", time.perf_counter() - started, "index", embedder_name, [], notes, wanted
    )
    return _record(built, folder)


def _tune_index(index: Path, embedder: Any, profile: str, minutes: float, writer: str) -> str:
    """Tune the bakeoff's index as ``mentor rag index`` does; one line saying what was chosen."""
    from mentor.models.backends import EngineSettings, open_engine
    from mentor.models.generation import EngineGenerator
    from mentor.rag.autotune import TuneOptions, autotune

    @contextmanager
    def questions_writer() -> Iterator[EngineGenerator]:
        with open_engine(writer, settings=EngineSettings()) as engine:
            yield EngineGenerator(engine)

    options = TuneOptions(profile=profile, budget_s=minutes * 60)  # type: ignore[arg-type]
    report = autotune(index, embedder, questions_writer, options)
    ran = ", ".join(s.name for s in report.steps if s.status in ("done", "reused")) or "nothing"
    search = report.settings.get("search_chosen") or "default hybrid"
    return f"tuned ({profile}, {report.seconds:.0f} s): {ran}; search: {search}"


# --- training data ---------------------------------------------------------------------------


def teacher_and_student(config: BakeoffConfig) -> tuple[str, str]:
    """Distillation's teacher and student; each defaults to the base model."""
    return config.models.teacher or config.models.base, config.models.student or config.models.base


def teacher_answer_engine(config: BakeoffConfig) -> tuple[EngineChoice, str | None]:
    """The engine that writes sequence distillation's teacher answers, and why it is not the
    configured one (vLLM cannot run the teacher: the builtin engine writes them instead)."""
    from mentor.models.backends import resolve_engine

    return resolve_engine(config.engine, teacher_and_student(config)[0], fallback=True)


def closed_book_prompt(system: str, question: str) -> list[ChatMessage]:
    return [{"role": "system", "content": system}, {"role": "user", "content": question}]


def write_chat(path: Path, rows: Sequence[tuple[list[ChatMessage], str]]) -> Path:
    """Conversations (prompt, answer) as chat JSONL, written atomically."""
    lines = [
        json.dumps({"messages": [*prompt, {"role": "assistant", "content": answer}]})
        for prompt, answer in rows
    ]
    atomic_write_text(path, "\n".join(lines) + "\n")
    return path


def _curve(run: Path) -> list[dict[str, float]]:
    metrics = run / "metrics.jsonl"
    if not metrics.exists():
        return []
    keep = ("step", "loss", "val_loss")
    return [
        {k: float(v) for k, v in json.loads(line).items() if k in keep}
        for line in metrics.read_text().splitlines()
        if line.strip()
    ]


def _train_settings(spec: TrainingSpec, full: bool, seed: int) -> dict[str, Any]:
    lr = spec.lr if spec.lr is not None else (2e-5 if full else 2e-4)
    settings: dict[str, Any] = {
        "epochs": spec.epochs,
        "lr": lr,
        "batch_size": spec.batch_size,
        "eval_every": 10,
        "save_every": 20,
        "seed": seed,
        "warmup": 0.1,
    }
    if spec.max_steps is not None:
        settings["max_steps"] = spec.max_steps
    return settings


def _sft(
    model: str,
    method: str,
    train: Path,
    val: Path | None,
    out: Path,
    spec: TrainingSpec,
    config: BakeoffConfig,
    console: Console,
    tracker: Tracker | None = None,
) -> Path:
    from mentor.finetune.config import FinetuneConfig
    from mentor.finetune.recipe import run_sft

    settings = FinetuneConfig(
        model=model,
        data=train,
        method=method,
        task="sft",
        val=val,
        val_share=0.0 if val is None else 0.1,
        out=out,
        max_length=512,
        device=config.device,
        lora={"r": spec.r, "alpha": 2.0 * spec.r},
        train=_train_settings(spec, method == "full", config.answer.seed),
    )
    return run_sft(settings, resume=True, console=console, tracker=tracker).saved


def train_model(
    name: str,
    spec: TrainingSpec,
    config: BakeoffConfig,
    train: list[Question],
    validation: list[Question],
    folder: Path,
    console: Console,
    *,
    rag_prompt: Any = None,
    docs: Path | None = None,
    tracker: Tracker | None = None,
) -> Built:
    """Fine-tune (lora, full) or distil (distill) the model named ``name``; reuse it if built.

    ``rag_prompt(question) -> messages`` gives the teacher's prompt with retrieved passages
    from ``docs`` (sequence distillation with ``teacher_retrieval``). ``tracker`` gets every
    training step's metrics as the model trains (not when it is reused)."""
    system = config.answer.system
    base = config.models.base
    teacher, student = teacher_and_student(config)
    sequence = spec.method == "distill" and spec.distill == "sequence"
    # the teacher's greedy answers may differ between engines; builtin adds nothing (older runs)
    teacher_engine = teacher_answer_engine(config)[0] if sequence else "builtin"
    wanted = fingerprint(
        name,
        spec.model_dump(),
        base,
        student if spec.method == "distill" else None,
        teacher if spec.method == "distill" else None,
        system,
        config.answer.max_new_tokens if spec.method == "distill" else None,  # teacher answers
        [(q.question, q.answer) for q in train],
        [(q.question, q.answer) for q in validation],
        config.models.embedder if spec.teacher_retrieval else None,
        docs if spec.method == "distill" and spec.teacher_retrieval else None,
        *([] if teacher_engine == "builtin" else [f"teacher answers: {teacher_engine}"]),
    )
    if (done := _reuse(folder, wanted)) is not None:
        console.print(f"{name}: trained model reused ({done.path})")
        return done
    _fresh(folder, wanted)
    started = time.perf_counter()
    val_file = None
    if validation:
        val_file = write_chat(
            folder / "validation.jsonl",
            [(closed_book_prompt(system, q.question), q.answer) for q in validation],
        )
    notes: list[str] = []
    if spec.method in ("lora", "full"):
        train_file = write_chat(
            folder / "train.jsonl",
            [(closed_book_prompt(system, q.question), q.answer) for q in train],
        )
        saved = _sft(
            base, spec.method, train_file, val_file, folder / "run", spec, config, console, tracker
        )
        kind, on = spec.method, base
        notes.append(f"{spec.method} on {base}: {len(train)} training questions")
    elif spec.distill == "logits":
        saved, notes = _distill_logits(spec, config, train, val_file, folder, console, tracker)
        kind, on = spec.student_method, student
    else:
        saved, notes = _distill_sequence(
            spec, config, train, val_file, folder, console, rag_prompt=rag_prompt, tracker=tracker
        )
        kind, on = spec.student_method, student
    built = Built(
        saved, time.perf_counter() - started, kind, on, _curve(folder / "run"), notes, wanted
    )
    return _record(built, folder)


def _distill_logits(
    spec: TrainingSpec,
    config: BakeoffConfig,
    train: list[Question],
    val_file: Path | None,
    folder: Path,
    console: Console,
    tracker: Tracker | None = None,
) -> tuple[Path, list[str]]:
    from mentor.distill.config import DistillConfig
    from mentor.distill.recipe import run_distill

    system = config.answer.system
    teacher, student = teacher_and_student(config)
    train_file = write_chat(
        folder / "train.jsonl", [(closed_book_prompt(system, q.question), q.answer) for q in train]
    )
    settings = DistillConfig(
        teacher=teacher,
        student=student,
        data=train_file,
        method="logits",
        student_method=spec.student_method,
        val=val_file,
        val_share=0.0 if val_file is None else 0.1,
        similarity_embedder=None,
        out=folder / "run",
        max_length=512,
        device=config.device,
        lora={"r": spec.r, "alpha": 2.0 * spec.r},
        train=_train_settings(spec, spec.student_method == "full", config.answer.seed),
    )
    report = run_distill(settings, resume=True, console=console, tracker=tracker)
    saved = report.saved
    return saved, [f"logit distillation {teacher} -> {student} on {len(train)} questions"]


def _distill_sequence(
    spec: TrainingSpec,
    config: BakeoffConfig,
    train: list[Question],
    val_file: Path | None,
    folder: Path,
    console: Console,
    *,
    rag_prompt: Any,
    tracker: Tracker | None = None,
) -> tuple[Path, list[str]]:
    from mentor.distill.sequence import (
        GenerationSettings,
        LocalTeacher,
        generate_dataset,
        teacher_answers,
    )
    from mentor.evaluate.grounding import strip_citations
    from mentor.models.backends import EngineSettings, open_engine
    from mentor.models.hub import weights_fingerprint
    from mentor.models.loading import load_causal_lm, load_tokenizer, resolve_model_path
    from mentor.rag.answer import is_refusal

    system = config.answer.system
    teacher, student = teacher_and_student(config)
    questions = train[: spec.teacher_limit] if spec.teacher_limit else train
    with_rag = spec.teacher_retrieval and rag_prompt is not None
    prompts = [
        rag_prompt(q.question) if with_rag else closed_book_prompt(system, q.question)
        for q in questions
    ]
    prompt_file = folder / "teacher_prompts.jsonl"
    if not prompt_file.exists():
        lines = [json.dumps({"messages": p}) for p in prompts]
        atomic_write_text(prompt_file, "\n".join(lines) + "\n")
    choice, why = teacher_answer_engine(config)
    if why:
        console.print(f"[yellow]the teacher {teacher}: {why}[/yellow]")
    loaded = None
    if choice == "builtin":  # vLLM loads the teacher from its folder: no copy in this process
        with console.status(f"loading the teacher {teacher}"):
            loaded = (load_causal_lm(teacher, device=config.device), load_tokenizer(teacher))
    answers_file = folder / "teacher_answers.jsonl"
    settings = config.engine if choice == "vllm" else EngineSettings()
    with open_engine(teacher, settings=settings, loaded=loaded, device=config.device) as engine:
        generate_dataset(
            LocalTeacher(engine, batch_size=config.answer.batch_size),
            prompt_file,
            answers_file,
            GenerationSettings(
                max_new_tokens=config.answer.max_new_tokens, batch_size=config.answer.batch_size
            ),
            teacher_name=teacher,
            teacher_fingerprint=weights_fingerprint(resolve_model_path(teacher)),
            console=console,
        )
    del loaded
    said = teacher_answers(answers_file)
    kept = [
        (closed_book_prompt(system, q.question), cut_answer(strip_citations(a)))
        for q, a in zip(questions, said, strict=True)
        if a.strip() and not is_refusal(a)
    ]
    if not kept:
        raise ValueError(f"the teacher {teacher} refused or left empty every training question")
    train_file = write_chat(folder / "train.jsonl", [(p, a) for p, a in kept if a])
    saved = _sft(
        student,
        spec.student_method,
        train_file,
        val_file,
        folder / "run",
        spec,
        config,
        console,
        tracker,
    )
    how = "reading the retrieved passages" if with_rag else "closed-book"
    return saved, [
        f"sequence distillation: {teacher} answered {len(questions)} training questions {how}; "
        f"{student} ({spec.student_method}) learned from the {len(kept)} it answered"
    ]


def cut_answer(text: str) -> str:
    """The answer up to its first blank line, trimmed (small models ramble on after it)."""
    return " ".join(text.strip().split("\n\n")[0].split())
