"""Sequence-level distillation, step one: the teacher answers a prompt set, and its answers become
a chat dataset the student fine-tunes on (Kim & Rush, 2016). Only text crosses over, so teacher
and student may use different tokenizers (a Qwen teacher, a SmolLM2 student).

The output is a chat JSONL file that ``mentor finetune`` reads as is; each line also carries the
prompt's source line and the reference answer when the prompt file had one. Beside it,
``<name>.provenance.json`` records the teacher, its weights' fingerprint, the prompt file's
hash, the sampling settings and the counts.

Generation goes a block of prompts at a time. A block's lines are appended and flushed to disk
before the next one starts, with the block's own seed (``seed`` + block index), so a run that is
interrupted resumes at the first missing prompt and produces what an uninterrupted run would
have. A half-written last line (a kill mid-write) is dropped on resume.

The teacher is anything with the :class:`Teacher` protocol: a local model
(:class:`LocalTeacher`, batched through the models layer's engine) or a hosted endpoint
(:class:`HostedTeacher` over a :class:`~mentor.models.remote.RemoteGenerator`: each prompt is one
request, several in flight at once, and every answer is committed to the response cache as it
arrives, so even the answers of a block cut short are not paid for again). Either way prompt i is
sampled with seed ``seed`` + i.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

from pydantic import BaseModel, Field, ValidationError
from rich.console import Console
from rich.progress import Progress, TaskID

from mentor.data.convert import qa_to_chat
from mentor.data.io import (
    HUB_PREFIX,
    TABLE_SUFFIXES,
    Problem,
    dump_record,
    loads_json,
    read_records,
)
from mentor.data.schemas import QARecord
from mentor.evaluate.answers import generate_answers
from mentor.models.engine import TextEngine
from mentor.models.protocols import ChatMessage, SamplingConfig
from mentor.models.remote import RemoteGenerator
from mentor.utils.fs import atomic_write_text, sha256_file
from mentor.utils.progress import progress_bar

_ROLES = ("system", "user", "assistant")


class GenerationSettings(BaseModel):
    """How the teacher writes the answers; recorded in the provenance file."""

    max_new_tokens: int = Field(256, ge=1, description="Longest answer, in teacher tokens.")
    temperature: float = Field(
        0.0, ge=0.0, description="0: greedy (the usual choice for sequence KD); > 0 samples."
    )
    top_p: float = Field(1.0, gt=0.0, le=1.0, description="Nucleus mass when sampling.")
    seed: int = Field(
        0, description="Prompt i is sampled with seed + i: the same answers on resume."
    )
    batch_size: int = Field(8, ge=1, description="Prompts per generate call.")
    block: int = Field(32, ge=1, description="Prompts written to disk together.")


@dataclass(frozen=True)
class Prompt:
    messages: list[ChatMessage]
    reference: str | None
    line: int


@dataclass(frozen=True)
class GenerationStats:
    prompts: int
    generated: int
    reused: int
    seconds: float
    out: Path


def _prompt(raw: object) -> tuple[list[ChatMessage], str | None]:
    """One JSON line to (messages ending with the user, reference answer or None)."""
    if not isinstance(raw, dict):
        raise ValueError("expected a JSON object")
    if "messages" in raw:
        messages = raw["messages"]
        if not isinstance(messages, list) or not messages:
            raise ValueError("field 'messages': expected a non-empty list")
        turns: list[ChatMessage] = []
        for i, m in enumerate(messages):
            if not isinstance(m, dict) or m.get("role") not in _ROLES:
                raise ValueError(f"messages[{i}]: role must be one of {', '.join(_ROLES)}")
            if not isinstance(m.get("content"), str):
                raise ValueError(f"messages[{i}]: content must be a string")
            turns.append({"role": m["role"], "content": m["content"]})
    elif "question" in raw or "prompt" in raw:
        key = "question" if "question" in raw else "prompt"
        if not isinstance(raw[key], str) or not raw[key].strip():
            raise ValueError(f"field {key!r}: expected a non-empty string")
        record = QARecord(
            question=raw[key], answer=raw.get("answer") or "-", context=raw.get("context")
        )
        user = qa_to_chat(record).messages[-2]
        turns = [{"role": "user", "content": user.content}]
        if isinstance(raw.get("answer"), str) and raw["answer"].strip():
            turns.append({"role": "assistant", "content": raw["answer"]})
    else:
        raise ValueError("expected 'messages' (chat), 'question' (qa) or 'prompt'")
    reference = None
    if turns[-1]["role"] == "assistant":
        reference = turns.pop()["content"]
    if not turns or turns[-1]["role"] != "user":
        raise ValueError("the prompt must end with a user message")
    return turns, reference


def _is_table_source(path: Path) -> bool:
    suffix = path.suffix.lower()
    return str(path).startswith(HUB_PREFIX) or path.is_dir() or suffix in (*TABLE_SUFFIXES, ".json")


def _table_prompts(path: Path) -> list[Prompt]:
    """Prompts from any other source :func:`read_records` takes (Parquet, Arrow, a folder, an
    ``hf:`` id; ShareGPT, Alpaca, prompt/completion converted to chat first)."""
    loaded = read_records(path)
    errors = [str(p) for p in loaded.errors]
    prompts: list[Prompt] = []
    for record in loaded.records:
        try:
            messages, reference = _prompt(dump_record(record.data))
        except (ValueError, ValidationError) as exc:
            errors.append(f"{Problem(loaded.path, record.line, str(exc), unit=loaded.unit)}")
            continue
        prompts.append(Prompt(messages, reference, record.line))
    if errors:
        raise ValueError(f"{path}: {len(errors)} bad records:\n" + "\n".join(errors[:20]))
    if not prompts:
        raise ValueError(f"{path}: no prompts")
    return prompts


def _prompts_sha256(path: Path, prompts: Sequence[Prompt]) -> str:
    """The file's hash; for a folder or an ``hf:`` id, the hash of the prompts read from it."""
    if path.is_file():
        return sha256_file(path)
    text = json.dumps([[p.messages, p.reference] for p in prompts], sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()


def load_prompts(path: Path) -> list[Prompt]:
    """Prompts from a JSONL file of chat (``messages``), qa (``question``) or ``prompt`` lines,
    or from any other source :func:`~mentor.data.io.read_records` takes.

    A conversation that ends with the assistant is cut before that turn, which becomes the
    reference answer (as is a qa line's ``answer``). Every bad line is reported at once as
    ``ValueError`` naming ``path:line``."""
    if _is_table_source(path):
        return _table_prompts(path)
    prompts: list[Prompt] = []
    errors: list[str] = []
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise ValueError(f"{path}: cannot read ({exc})") from exc
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            messages, reference = _prompt(loads_json(line))
        except (ValueError, ValidationError) as exc:  # JSONDecodeError is a ValueError
            errors.append(f"{path}:{number}: {str(exc).splitlines()[0]}")
            continue
        prompts.append(Prompt(messages, reference, number))
    if errors:
        raise ValueError(f"{path}: {len(errors)} bad lines:\n" + "\n".join(errors[:20]))
    if not prompts:
        raise ValueError(f"{path}: no prompts")
    return prompts


class Teacher(Protocol):
    """Writes the answers a student learns from: a local model or a hosted endpoint."""

    def answer(
        self,
        prompts: Sequence[list[ChatMessage]],
        sampling: Sequence[SamplingConfig],
        *,
        skip: int,
        progress: Callable[[int], None],
    ) -> list[str]:
        """Answers to ``prompts`` in order, prompt i sampled with ``sampling[i]``.

        The first ``skip`` are already on disk: a teacher may leave them empty (a hosted one does,
        to pay for nothing twice) or answer them again so that its batches are those of an
        uninterrupted run (a local one does). ``progress(n)`` reports n new answers so far."""
        ...


class LocalTeacher:
    """A causal LM answering in batches through a :class:`~mentor.models.engine.TextEngine`."""

    def __init__(self, engine: TextEngine, *, batch_size: int = 8) -> None:
        self.engine = engine
        self.batch_size = batch_size

    def answer(
        self,
        prompts: Sequence[list[ChatMessage]],
        sampling: Sequence[SamplingConfig],
        *,
        skip: int,
        progress: Callable[[int], None],
    ) -> list[str]:
        answers = generate_answers(self.engine, prompts, sampling, batch_size=self.batch_size)
        progress(len(prompts) - skip)
        return answers


class HostedTeacher:
    """An OpenAI-compatible endpoint, one request per prompt, answers cached as they arrive."""

    def __init__(self, remote: RemoteGenerator) -> None:
        self.remote = remote

    def answer(
        self,
        prompts: Sequence[list[ChatMessage]],
        sampling: Sequence[SamplingConfig],
        *,
        skip: int,
        progress: Callable[[int], None],
    ) -> list[str]:
        got = self.remote.answer_all(list(prompts[skip:]), list(sampling[skip:]), progress=progress)
        return [""] * skip + [a.text.strip() for a in got]


def teacher_sampling(settings: GenerationSettings, index: int) -> SamplingConfig:
    """How prompt ``index`` is answered; greedy answers need no seed."""
    sampled = settings.temperature > 0
    return SamplingConfig(
        max_new_tokens=settings.max_new_tokens,
        temperature=settings.temperature,
        top_p=settings.top_p,
        seed=settings.seed + index if sampled else None,
    )


def _done_lines(out: Path) -> int:
    """Complete lines already in ``out``; a torn last line is cut off."""
    if not out.exists():
        return 0
    data = out.read_bytes()
    end = data.rfind(b"\n") + 1
    if end != len(data):
        with out.open("r+b") as fh:
            fh.truncate(end)
    return data[:end].count(b"\n")


def generate_dataset(
    teacher: Teacher,
    prompt_file: Path,
    out: Path,
    settings: GenerationSettings,
    *,
    teacher_name: str,
    teacher_fingerprint: str,
    console: Console | None = None,
) -> GenerationStats:
    """Write the teacher's answers to ``prompt_file``'s prompts as chat JSONL at ``out``."""
    console = console or Console(stderr=True)
    prompts = load_prompts(prompt_file)
    provenance_path = out.with_suffix(".provenance.json")
    provenance: dict[str, Any] = {
        "teacher": teacher_name,
        "teacher_fingerprint": teacher_fingerprint,
        "prompts": str(prompt_file),
        "prompts_sha256": _prompts_sha256(prompt_file, prompts),
        "settings": settings.model_dump(),
    }
    if provenance_path.exists() and out.exists():
        old = json.loads(provenance_path.read_text())
        changed = [k for k in provenance if old.get(k) != provenance[k] and k != "prompts"]
        if changed:
            raise ValueError(
                f"{out} was generated with another {', '.join(changed)}; give another --out "
                "or delete it to start over"
            )
    else:  # recorded before the first answer, so a resumed run is checked against it
        atomic_write_text(provenance_path, json.dumps(provenance, indent=2) + "\n")
    done = _done_lines(out)
    if done > len(prompts):
        raise ValueError(f"{out} has {done} lines but {prompt_file} only {len(prompts)} prompts")
    out.parent.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    generated = 0
    with progress_bar(console) as bar, out.open("a", encoding="utf-8") as fh:
        task = bar.add_task("teacher answers", total=len(prompts), completed=done)
        first_block = done // settings.block
        for b in range(first_block, -(-len(prompts) // settings.block)):
            lo = max(b * settings.block, done)
            hi = min((b + 1) * settings.block, len(prompts))
            part = prompts[b * settings.block : hi]  # whole block: same batches, same seed
            answers = teacher.answer(
                [p.messages for p in part],
                [teacher_sampling(settings, b * settings.block + i) for i in range(len(part))],
                skip=lo - b * settings.block,
                progress=functools.partial(_advance, bar, task, lo),
            )
            offset = b * settings.block
            for i in range(lo, hi):
                fh.write(json.dumps(_record(prompts[i], answers[i - offset]), ensure_ascii=False))
                fh.write("\n")
            fh.flush()
            os.fsync(fh.fileno())
            generated += hi - lo
            bar.update(task, completed=hi)
    seconds = time.perf_counter() - started
    provenance |= {
        "count": len(prompts),
        "written": datetime.now(UTC).isoformat(timespec="seconds"),
        "seconds_last_run": round(seconds, 1),
    }
    atomic_write_text(provenance_path, json.dumps(provenance, indent=2) + "\n")
    return GenerationStats(len(prompts), generated, done, seconds, out)


def _advance(bar: Progress, task: TaskID, first: int, done: int) -> None:
    bar.update(task, completed=first + done)


def _record(prompt: Prompt, answer: str) -> dict[str, Any]:
    record: dict[str, Any] = {
        "messages": [*prompt.messages, {"role": "assistant", "content": answer}],
        "source_line": prompt.line,
    }
    if prompt.reference is not None:
        record["reference"] = prompt.reference
    return record


def answered(path: Path) -> tuple[Path, list[int]]:
    """The generated dataset to train on, and the lines of ``path`` the teacher left empty.

    An empty answer (a teacher that stopped at once, or wrote only blanks) teaches nothing and
    would fail the chat format's check; ``path`` keeps one line per prompt (a resumed run counts
    them), so those lines are left out of a copy beside it. None answered: a clear error."""
    lines = [line for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    empty = [
        n
        for n, line in enumerate(lines, start=1)
        if not str(json.loads(line)["messages"][-1]["content"]).strip()
    ]
    if not empty:
        return path, []
    if len(empty) == len(lines):
        raise ValueError(
            f"{path}: the teacher's answer to every one of the {len(lines)} prompts is empty; "
            "check the teacher (does it answer these prompts at all?) and max_new_tokens"
        )
    kept = path.with_name(path.stem + ".answered.jsonl")
    missing = set(empty)
    text = "".join(line + "\n" for n, line in enumerate(lines, start=1) if n not in missing)
    atomic_write_text(kept, text)
    return kept, empty


def teacher_answers(path: Path) -> list[str]:
    """The assistant answers of a generated dataset, in order."""
    lines = path.read_text(encoding="utf-8").splitlines()
    return [json.loads(line)["messages"][-1]["content"] for line in lines if line.strip()]
