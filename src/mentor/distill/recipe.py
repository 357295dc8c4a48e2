"""``mentor distill``: a student learns from a teacher, start to finish, with the report.

    logits:   check the tokenizers are identical -> load data -> teacher top-k cache (computed
              once, shared by later runs and students) or an online teacher -> student (loaded,
              or every k-th teacher layer) -> train on alpha CE + (1 - alpha) tau^2 KL -> save
    sequence: the teacher answers the prompts (resumable, with provenance) -> the student
              fine-tunes on the answers -> save; the teacher may be a hosted endpoint
              (``teacher_endpoint``, ``--teacher-url``), whose answers are cached per request
    then:     teacher and student answer the held-out set -> teacher-student report

Run ``mentor distill --teacher qwen2.5-coder-1.5b-instruct --student qwen2.5-coder-0.5b-instruct
--data train.jsonl --eval test.jsonl``. Under ``torchrun`` the training is DDP; process 0
computes the caches and the report while the others wait.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from rich.console import Console
from torch import nn

from mentor.distill.config import DistillConfig
from mentor.distill.data import collate_with_teacher
from mentor.distill.objectives import LogitKDLoss
from mentor.distill.report import (
    Side,
    TeacherStudentReport,
    TimedAnswers,
    answer_similarity,
    task_intervals,
    timed_answers,
    token_agreement,
    token_agreement_cached,
)
from mentor.distill.sequence import (
    HostedTeacher,
    LocalTeacher,
    Teacher,
    answered,
    generate_dataset,
)
from mentor.distill.students import count_params, keep_every_kth_layer, smaller_config
from mentor.distill.teacher_cache import (
    TeacherCache,
    build_cache,
    data_fingerprint,
    tokenizer_fingerprint,
)
from mentor.evaluate.answers import (
    EvalItem,
    GenerationScores,
    load_eval_items,
    score_generations,
)
from mentor.models.backends import open_engine
from mentor.models.hub import weights_fingerprint
from mentor.models.loading import load_causal_lm, load_tokenizer, resolve_model_path
from mentor.models.protocols import SamplingConfig
from mentor.models.remote import RemoteGenerator, open_remote
from mentor.train.adapters import save_adapter
from mentor.train.checkpointing import setup_checkpointing
from mentor.train.data import (
    Example,
    PackedRow,
    chat_example,
    collate,
    load_sft_data,
    pack,
    split_validation,
    unpacked,
)
from mentor.train.distributed import World, setup
from mentor.train.lora import add_lora, mark_trainable, parameter_report
from mentor.train.objectives import CausalLMLoss
from mentor.train.trainer import TrainResult, train, use_bf16
from mentor.utils.fs import atomic_dir, atomic_write_text, dir_size, mentor_home
from mentor.utils.tracking import Tracker


class TokenizerMismatchError(ValueError):
    """Logit distillation needs the teacher's and the student's token ids to mean the same."""


@dataclass
class DistillReport:
    out: Path
    saved: Path
    parameters: str
    train: TrainResult
    train_examples: int
    val_examples: int
    cache: str | None  # how the teacher's logits were obtained, for the report
    report: TeacherStudentReport | None
    teacher_usage: str | None = None  # a hosted teacher's cache hits, requests and tokens paid


class LazyTeacher:
    """Loads the teacher the first time it is needed, so a fully cached run never does. A hosted
    teacher (``remote``) has no weights here: it only answers, through its endpoint."""

    def __init__(
        self,
        name: str,
        dtype: torch.dtype,
        device: torch.device,
        remote: RemoteGenerator | None = None,
    ) -> None:
        self.name, self.dtype, self.device, self.remote = name, dtype, device, remote
        self._model: nn.Module | None = None

    @property
    def loaded(self) -> bool:
        return self._model is not None

    def __call__(self) -> Any:
        if self.remote is not None:
            raise RuntimeError(f"{self.remote.settings.label} is hosted: no weights to load")
        if self._model is None:
            self._model = load_causal_lm(self.name, dtype=self.dtype, device=str(self.device))
            self._model.requires_grad_(False)
        return self._model


def check_tokenizers(teacher: str, student: str, teacher_tok: Any, student_tok: Any) -> None:
    if tokenizer_fingerprint(teacher_tok) != tokenizer_fingerprint(student_tok):
        raise TokenizerMismatchError(
            f"{teacher} and {student} have different tokenizers ({len(teacher_tok):,} and "
            f"{len(student_tok):,} tokens, or the same size with other ids), so their logits "
            "cannot be compared token by token. Use --method sequence: the student then learns "
            "from the teacher's generated answers, which works across tokenizers."
        )


def run_distill(
    config: DistillConfig,
    *,
    resume: bool = False,
    console: Console,
    tracker: Tracker | None = None,
) -> DistillReport:
    world, device = setup(config.device, config.train.strategy)
    bf16 = use_bf16(config.train.precision, device)
    remote = open_remote(config.teacher_endpoint) if config.teacher_endpoint else None
    dtype = torch.bfloat16 if bf16 else torch.float32
    teacher = LazyTeacher(config.teacher, dtype, device, remote)
    teacher_tok: Any = None if remote else load_tokenizer(config.teacher)
    built = config.keep_every is not None or config.student_config is not None
    student_name = config.teacher if built else config.student
    student_tok = teacher_tok if built else load_tokenizer(config.student)
    if config.method == "logits":
        check_tokenizers(config.teacher, student_name, teacher_tok, student_tok)
    if remote is not None:  # no weights to hash: the endpoint and model name stand for them
        teacher_fp = f"endpoint:{remote.settings.label}"
    else:
        teacher_fp = weights_fingerprint(resolve_model_path(config.teacher))
    out = config.out
    out.mkdir(parents=True, exist_ok=True)

    # 1. the data: the user's conversations, or the teacher's answers to the user's prompts
    data_path = config.data
    if config.method == "sequence":
        data_path = out / "teacher_answers.jsonl"
        if world.is_main:
            with ExitStack() as stack:
                answerer: Teacher
                if remote is not None:
                    answerer = HostedTeacher(remote)
                else:  # vLLM loads the teacher from its folder: no copy in this process
                    builtin = config.engine.kind == "builtin"
                    engine = stack.enter_context(
                        open_engine(
                            config.teacher,
                            settings=config.engine,
                            loaded=(teacher(), teacher_tok) if builtin else None,
                            device=str(device),
                        )
                    )
                    answerer = LocalTeacher(engine, batch_size=config.generation.batch_size)
                stats = generate_dataset(
                    answerer,
                    config.data,
                    data_path,
                    config.generation,
                    teacher_name=remote.settings.label if remote else config.teacher,
                    teacher_fingerprint=teacher_fp,
                    console=console,
                )
            console.print(
                f"teacher answers: {stats.generated} written, {stats.reused} already there "
                f"({data_path})"
            )
            if remote is not None:
                console.print(f"teacher endpoint: {remote.tally.summary()}")
        world.barrier()
        answers_path = data_path
        data_path, empty = answered(answers_path)
        if empty and world.is_main:
            shown = ", ".join(str(n) for n in empty[:10]) + (" ..." if len(empty) > 10 else "")
            console.print(
                f"[yellow]warning:[/yellow] the teacher's answer is empty on {len(empty)} of the "
                f"prompts ({answers_path} lines {shown}); they are left out of training",
                highlight=False,
                soft_wrap=True,
            )
    data = load_sft_data(data_path, student_tok, config.max_length, config.overlong)
    examples = data.examples
    overlong = [r for r in (data.overlong,) if r is not None]
    if config.val is not None:
        train_examples = examples
        val_data = load_sft_data(config.val, student_tok, config.max_length, config.overlong)
        val_examples = val_data.examples
        overlong += [r for r in (val_data.overlong,) if r is not None]
    else:
        train_examples, val_examples = split_validation(
            examples, config.val_share, config.train.seed
        )
    for cut in overlong:  # truncate or drop: said loudly, before anything else happens
        console.print(f"[yellow]warning:[/yellow] {cut}", highlight=False, soft_wrap=True)
    items = load_eval_items(config.eval)[: config.eval_limit] if config.eval else None

    # 2. the teacher's side of the loss
    cache: TeacherCache | None = None
    cache_note = None
    if config.method == "logits" and config.kd.top_k > 0:
        cache, cache_note = _teacher_cache(
            config,
            teacher,
            teacher_fp,
            teacher_tok,
            train_examples + val_examples,
            world,
            device,
            console,
        )

    # 3. the student, scored before it learns anything (what distillation adds)
    student = _student(config, teacher, device, bf16, console)
    before = None
    if world.is_main and items:
        with console.status(f"student answers {len(items)} held-out questions before training"):
            untrained = timed_answers(
                student,
                student_tok,
                [i.prompt for i in items],
                max_new_tokens=config.eval_max_new_tokens,
            )
        before = score_generations(untrained.answers, [i.reference for i in items])
    torch.manual_seed(config.train.seed)
    if config.student_method == "lora":
        add_lora(student, config.lora.to_config())
        mark_trainable(student, "default")
    else:
        student.requires_grad_(True)
    params = parameter_report(student)
    console.print(f"student ({config.student_method}): {params}")
    tokens = config.train.batch_size * config.max_length
    setup_checkpointing(
        student,
        config.train.gradient_checkpointing,
        tokens=tokens,
        # logit distillation holds a chunk of the student's and the teacher's logits at a time
        logit_positions=tokens
        if config.method == "sequence"
        else 2 * min(tokens, config.kd.chunk_size),
        bf16=bf16,
        device=device,
        world=world,
        console=console,
    )

    # 4. train
    rows = pack(train_examples, config.max_length) if config.packing else unpacked(train_examples)
    val_rows = [_shift(r, len(train_examples)) for r in unpacked(val_examples)] or None
    pad_id = student_tok.pad_token_id if student_tok.pad_token_id is not None else 0
    objective: nn.Module
    collate_fn: Callable[[Any], Any]
    if config.method == "sequence":
        objective, collate_fn = CausalLMLoss(student), lambda r: collate(r, pad_id)
    else:
        kd = config.kd
        online = teacher() if cache is None else None
        objective = LogitKDLoss(
            student,
            online,
            alpha=kd.alpha,
            temperature=kd.temperature,
            kind=kd.divergence,
            beta=kd.beta,
            chunk_size=kd.chunk_size,
        )
        if cache is not None:
            cached = cache
            collate_fn = lambda r: collate_with_teacher(r, pad_id, cached)  # noqa: E731
        else:
            collate_fn = lambda r: collate(r, pad_id)  # noqa: E731
            cache_note = "online teacher: a forward pass at every step"
    result = train(
        objective,
        rows,
        collate_fn,
        config.train,
        out,
        val_rows=val_rows,
        resume=resume,
        world=world,
        device=device,
        console=console,
        tracker=tracker,
    )
    student.eval()
    saved = _save_student(student, student_tok, config, result, world)

    # 5. the teacher-student report
    report = None
    if world.is_main and items:
        report = _compare(
            config,
            teacher,
            teacher_tok,
            student,
            student_tok,
            student_name,
            saved,
            items,
            teacher_fp,
            before,
            console,
        )
    summary = DistillReport(
        out=out,
        saved=saved,
        parameters=str(params),
        train=result,
        train_examples=len(train_examples),
        val_examples=len(val_examples),
        cache=cache_note,
        report=report,
        teacher_usage=remote.tally.summary() if remote else None,
    )
    if world.is_main:
        write_report(summary, config)
    if remote is not None:
        remote.close()
    world.barrier()
    return summary


def _shift(row: PackedRow, offset: int) -> PackedRow:
    """Validation rows index the cache after the training examples."""
    return dataclasses.replace(row, sources=tuple(i + offset for i in row.sources))


def default_cache_dir(teacher_fp: str, examples: list[Example], k: int) -> Path:
    return (
        mentor_home()
        / "distill-cache"
        / (f"{teacher_fp[:12]}-{data_fingerprint(examples)[:12]}-k{k}")
    )


def _teacher_cache(
    config: DistillConfig,
    teacher: LazyTeacher,
    teacher_fp: str,
    tokenizer: Any,
    examples: list[Example],
    world: World,
    device: torch.device,
    console: Console,
) -> tuple[TeacherCache, str]:
    folder = config.kd.cache_dir or default_cache_dir(teacher_fp, examples, config.kd.top_k)
    if world.is_main:
        _, stats = build_cache(
            folder,
            _Deferred(teacher),
            examples,
            k=config.kd.top_k,
            teacher_fingerprint=teacher_fp,
            tokenizer_hash=tokenizer_fingerprint(tokenizer),
            teacher_name=config.teacher,
            device=device,
            console=console,
        )
        if stats.forward_passes:
            note = (
                f"teacher top-{config.kd.top_k} cache computed: {stats.positions:,} positions, "
                f"{stats.forward_passes} teacher forward passes, "
                f"{stats.bytes_on_disk / 2**20:,.1f} MB at {folder}"
            )
        else:
            note = f"teacher top-{config.kd.top_k} cache reused, no teacher forward pass: {folder}"
        console.print(note)
    world.barrier()
    if not world.is_main:
        note = f"teacher top-{config.kd.top_k} cache at {folder}"
    return TeacherCache(folder), note


class _Deferred(nn.Module):
    """Stands in for the teacher in :func:`build_cache` and loads it only on first use."""

    def __init__(self, teacher: LazyTeacher) -> None:
        super().__init__()
        self._lazy = [teacher]

    @property
    def base_model(self) -> nn.Module:
        return self._lazy[0]().base_model  # type: ignore[no-any-return]

    def get_output_embeddings(self) -> nn.Module:
        return self._lazy[0]().get_output_embeddings()  # type: ignore[no-any-return]

    def train(self, mode: bool = True) -> _Deferred:
        if self._lazy[0].loaded:
            self._lazy[0]().train(mode)
        return self


def _student(
    config: DistillConfig, teacher: LazyTeacher, device: torch.device, bf16: bool, console: Console
) -> Any:
    # A LoRA student is frozen under its adapter, so it can sit in bf16; a fully trained one
    # keeps fp32 master weights.
    dtype = torch.bfloat16 if (config.student_method == "lora" and bf16) else torch.float32
    if config.keep_every:
        with console.status(f"building the student from every {config.keep_every} layers"):
            source = load_causal_lm(config.teacher, dtype=dtype, device=str(device))
            student, size = keep_every_kth_layer(source, config.keep_every)
            del source
        console.print(str(size))
        return student.to(device)
    if config.student_config:
        from transformers import AutoConfig, AutoModelForCausalLM

        source = AutoConfig.from_pretrained(str(resolve_model_path(config.teacher)))
        shape = smaller_config(source, **config.student_config)
        torch.manual_seed(config.train.seed)
        student = AutoModelForCausalLM.from_config(shape, dtype=dtype)  # type: ignore[no-untyped-call]
        console.print(
            f"student built from the teacher's config with {config.student_config}: "
            f"{count_params(student) / 1e6:,.1f}M parameters, random initialisation"
        )
        return student.to(device)
    with console.status(f"loading {config.student}"):
        return load_causal_lm(config.student, dtype=dtype, device=str(device))


def _save_student(
    student: Any, tokenizer: Any, config: DistillConfig, result: TrainResult, world: World
) -> Path:
    if config.student_method == "lora":
        target = config.out / "adapter"
        if world.is_main:
            save_adapter(
                student,
                target,
                config=config.lora.to_config(),
                base_model=config.student,
                extra={"distilled_from": config.teacher, "steps": result.steps},
            )
        return target
    target = config.out / "student"
    if world.is_main:
        with atomic_dir(target) as tmp:
            student.save_pretrained(str(tmp), safe_serialization=True)
            tokenizer.save_pretrained(str(tmp))
    return target


def _eval_examples(items: list[EvalItem], tokenizer: Any, max_length: int) -> list[Example]:
    """The held-out prompts with their reference answers, for teacher-forced comparison."""
    out = []
    for item in items:
        messages = [{"role": m["role"], "content": m["content"]} for m in item.prompt]
        messages.append({"role": "assistant", "content": item.reference})
        out.append(chat_example(messages, tokenizer, max_length))
    return out


def _teacher_answers(
    config: DistillConfig,
    teacher: LazyTeacher,
    tokenizer: Any,
    items: list[EvalItem],
    teacher_fp: str,
) -> TimedAnswers:
    """The teacher's held-out answers, kept beside the run's caches so later runs reuse them."""
    assert config.eval is not None
    if teacher.remote is not None:  # the response cache keeps them; the time is the endpoint's
        got = teacher.remote.answer_all(
            [i.prompt for i in items], SamplingConfig(max_new_tokens=config.eval_max_new_tokens)
        )
        return TimedAnswers(
            [a.text.strip() for a in got],
            sum(a.seconds for a in got),
            sum(a.completion_tokens or 0 for a in got),  # counted by the endpoint's tokenizer
        )
    key = hashlib.sha256(
        json.dumps([teacher_fp, [i.prompt for i in items], config.eval_max_new_tokens]).encode()
    ).hexdigest()[:16]
    path = mentor_home() / "distill-cache" / "eval-answers" / f"{key}.json"
    if path.exists():
        raw = json.loads(path.read_text())
        return TimedAnswers(raw["answers"], raw["seconds"], raw["tokens"])
    timed = timed_answers(
        teacher(), tokenizer, [i.prompt for i in items], max_new_tokens=config.eval_max_new_tokens
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, json.dumps(dataclasses.asdict(timed)))
    return timed


def _weights_bytes(name: str) -> int:
    folder = resolve_model_path(name)
    return sum(p.stat().st_size for p in folder.glob("*.safetensors"))


def _stored_dtype(folder: Path) -> str:
    """The dtype most of the weights in ``folder``'s safetensors files are stored in."""
    from safetensors import safe_open

    counts: dict[str, int] = {}
    for path in folder.glob("*.safetensors"):
        with safe_open(str(path), "pt") as fh:
            for key in fh.keys():  # noqa: SIM118 (safe_open is not a mapping)
                piece = fh.get_slice(key)
                size = int(torch.tensor(piece.get_shape()).prod()) if piece.get_shape() else 1
                counts[piece.get_dtype()] = counts.get(piece.get_dtype(), 0) + size
    return max(counts, key=lambda k: counts[k]) if counts else ""


def _compare(
    config: DistillConfig,
    teacher: LazyTeacher,
    teacher_tok: Any,
    student: Any,
    student_tok: Any,
    student_name: str,
    saved: Path,
    items: list[EvalItem],
    teacher_fp: str,
    before: GenerationScores | None,
    console: Console,
) -> TeacherStudentReport:
    references = [i.reference for i in items]
    with console.status(f"teacher answers {len(items)} held-out questions"):
        t_answers = _teacher_answers(config, teacher, teacher_tok, items, teacher_fp)
    # Served at the teacher's precision, so the speed columns compare models, not dtypes (a fully
    # trained student keeps fp32 master weights; the teacher runs in bf16 where that is fast).
    student.to(teacher.dtype)
    with console.status(f"student answers {len(items)} held-out questions"):
        s_answers = timed_answers(
            student,
            student_tok,
            [i.prompt for i in items],
            max_new_tokens=config.eval_max_new_tokens,
        )
    agreement = None
    same_vocab = teacher_tok is not None and (
        tokenizer_fingerprint(teacher_tok) == tokenizer_fingerprint(student_tok)
    )
    if same_vocab:
        examples = _eval_examples(items, student_tok, config.max_length)
        if config.method == "logits" and config.kd.top_k > 0:  # the teacher's side cached too
            k = config.kd.top_k
            folder = default_cache_dir(teacher_fp, examples, k)
            eval_cache, _ = build_cache(
                folder,
                _Deferred(teacher),
                examples,
                k=k,
                teacher_fingerprint=teacher_fp,
                tokenizer_hash=tokenizer_fingerprint(teacher_tok),
                teacher_name=config.teacher,
                device=student.device,
                console=console,
            )
            agreement = token_agreement_cached(eval_cache, student, examples)
        else:
            with console.status("teacher-forced agreement on the held-out answers"):
                agreement = token_agreement(teacher(), student, examples)
    embedder = _embedder(config.similarity_embedder, console)
    similarity = answer_similarity(s_answers.answers, t_answers.answers, embedder)
    t_scores = score_generations(t_answers.answers, references)
    s_scores = score_generations(s_answers.answers, references)
    hosted = teacher.remote is not None
    teacher_params = None  # a hosted teacher's size is unknown: reported as not available
    if not hosted:
        teacher_params = (
            count_params(teacher()) if teacher.loaded else _params_from_disk(config.teacher)
        )
    student_bytes = dir_size(saved) + (
        _weights_bytes(config.student) if config.student_method == "lora" else 0
    )
    metric = "token_f1"
    intervals = task_intervals(
        t_scores.per_example[metric],
        s_scores.per_example[metric],
        before.per_example[metric] if before is not None else None,
    )
    return TeacherStudentReport(
        method=config.method,
        metric=metric,
        teacher=Side(
            teacher.remote.settings.label if teacher.remote else config.teacher,
            teacher_params,
            0 if hosted else _weights_bytes(config.teacher),
            _means(t_scores.to_dict()),
            t_answers.seconds_per_answer,
            t_answers.tokens_per_s,
            "" if hosted else _stored_dtype(resolve_model_path(config.teacher)),
        ),
        student=Side(
            student_name
            if not config.keep_every
            else f"{config.teacher} (every {config.keep_every} layers)",
            count_params(student),
            student_bytes,
            _means(s_scores.to_dict()),
            s_answers.seconds_per_answer,
            s_answers.tokens_per_s,
            _stored_dtype(
                resolve_model_path(config.student) if config.student_method == "lora" else saved
            ),
        ),
        agreement=agreement,
        similarity=similarity,
        examples=len(items),
        student_before=_means(before.to_dict()) if before is not None else None,
        teacher_hosted=hosted,
        intervals=intervals,
    )


def _student_label(config: DistillConfig, name: str) -> str:
    if config.keep_every:
        return f"{config.teacher} (every {config.keep_every} layers)"
    if config.student_config:
        return f"{config.teacher} shape with {config.student_config}"
    return name


def _means(scores: dict[str, float | int]) -> dict[str, float]:
    return {name: float(value) for name, value in scores.items() if name != "n"}


def _params_from_disk(name: str) -> int:
    from safetensors import safe_open

    total = 0
    for path in resolve_model_path(name).glob("*.safetensors"):
        with safe_open(str(path), "pt") as fh:
            for key in fh.keys():  # noqa: SIM118 (safe_open is not a mapping)
                shape = fh.get_slice(key).get_shape()
                total += int(torch.tensor(shape).prod()) if shape else 1
    return total


def _embedder(name: str | None, console: Console) -> Any:
    from mentor.models.loading import load_embedder

    if not name:
        return None
    try:
        return load_embedder(name)
    except Exception as exc:  # the cosine column is optional; say why it is missing
        console.print(f"[yellow]no embedder for the answer-similarity column: {exc}[/yellow]")
        return None


def write_report(summary: DistillReport, config: DistillConfig) -> None:
    data = {
        "config": json.loads(config.model_dump_json()),
        "saved": str(summary.saved),
        "parameters": summary.parameters,
        "teacher_logits": summary.cache,
        "teacher_endpoint_usage": summary.teacher_usage,
        "train": dataclasses.asdict(summary.train),
        "examples": {"train": summary.train_examples, "validation": summary.val_examples},
        "teacher_student": summary.report.to_dict() if summary.report else None,
    }
    atomic_write_text(config.out / "report.json", json.dumps(data, indent=2, default=str) + "\n")
    t = summary.train
    lines = [
        f"# Distillation report: {config.teacher} -> "
        f"{_student_label(config, config.student)}, "
        f"{config.method}",
        "",
        f"- data: `{config.data}` ({summary.train_examples} training examples, "
        f"{summary.val_examples} for validation)",
        f"- student training: {config.student_method}, {summary.parameters}",
    ]
    if summary.cache:
        lines.append(f"- teacher logits: {summary.cache}")
    if config.teacher_endpoint is not None:
        lines.append(f"- hosted teacher `{config.teacher_endpoint.label}`: {summary.teacher_usage}")
    if config.method == "logits":
        kd = config.kd
        lines.append(
            f"- loss: {kd.alpha:g} x CE + {1 - kd.alpha:g} x tau^2 x {kd.divergence} at tau "
            f"{kd.temperature:g}"
        )
    lines += [
        f"- steps: {t.steps}, final training loss {t.train_loss:.4f}"
        + (f", best validation loss {t.best_val_loss:.4f}" if t.best_val_loss is not None else ""),
        f"- {t.tokens:,} tokens in {t.seconds:.0f} s, peak memory {t.peak_memory_mb:,.0f} MB",
        f"- saved: `{summary.saved}`",
        "",
        "![loss curve](loss_curve.png)",
        "",
        "## Teacher and student",
        "",
    ]
    if summary.report is not None:
        lines.append(summary.report.to_markdown())
    else:
        lines.append("No held-out set was given (`--eval test.jsonl`), so nothing was compared.")
    atomic_write_text(config.out / "report.md", "\n".join(lines) + "\n")
