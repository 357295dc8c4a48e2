"""mentor's own commands on a GPU: finetune, distill, quantize, serve and a tiny bakeoff, each run
as a user runs it (``mentor ...`` in its own process, ``--device cuda``), on random-initialised
models of real shapes saved as model folders with the real SmolLM2 tokenizer.

Random weights make the scores meaningless; what a row checks is that the command completes on
the device, and what it measured (tokens/s, peak memory) where its report says. A row that fails
shows the last line of the command's error output. Called by ``bench/gpu_check.py --parts
commands`` (which makes the model folders); ``--tiny`` runs tiny shapes on a CPU (a test).

These commands import all of mentor (pydantic, fastapi, ...): on a GPU machine without them,
carry the wheels ``make gpu-wheels`` downloads (see the Makefile).
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"
TRAIN = EXAMPLES / "data" / "qa_train.jsonl"
TEST = EXAMPLES / "data" / "qa_test.jsonl"
TIDEPOOL = EXAMPLES / "bakeoff" / "tidepool"


@dataclass
class CommandRow:
    command: str
    ok: bool
    seconds: float
    figures: str
    error: str = ""


def mentor_env() -> dict[str, str]:
    """This environment with the checkout's ``src`` first on the path, offline."""
    paths = [str(ROOT / "src"), *filter(None, [os.environ.get("PYTHONPATH")])]
    return {**os.environ, "PYTHONPATH": os.pathsep.join(paths), "HF_HUB_OFFLINE": "1"}


def _mentor(*args: str) -> list[str]:
    return [sys.executable, "-c", "from mentor.cli import app; app()", *args]


def _find(tree: Any, key: str) -> Iterator[Any]:
    """Every value stored under ``key`` anywhere in a JSON tree."""
    if isinstance(tree, dict):
        for k, v in tree.items():
            if k == key:
                yield v
            yield from _find(v, key)
    elif isinstance(tree, list):
        for item in tree:
            yield from _find(item, key)


def _figures(report: Path) -> str:
    """tokens/s and peak memory from a run's report.json, where it has them."""
    if not report.exists():
        return ""
    tree = json.loads(report.read_text())
    parts = []
    speed = next((v for v in _find(tree, "tokens_per_s") if isinstance(v, int | float) and v), 0)
    if speed:
        parts.append(f"{speed:,.0f} tok/s")
    peak = next((v for v in _find(tree, "peak_memory_mb") if isinstance(v, int | float) and v), 0)
    if peak:
        parts.append(f"peak {peak / 1024:.1f} GB" if peak >= 1024 else f"peak {peak:,.0f} MB")
    return ", ".join(parts)


def _last_error(output: str) -> str:
    """The error a command ended with, without rich's panel borders; the lines that start it."""
    lines = [line.strip(" │╭╮╰╯─") for line in output.splitlines()]
    lines = [line for line in lines if line]
    start = max((i for i, line in enumerate(lines) if "rror" in line), default=len(lines) - 1)
    return " ".join(lines[start : start + 3])[:240] if lines else "no output"


def _run(name: str, argv: list[str], timeout: float, report: Path | None = None) -> CommandRow:
    print(f"  {name} ...", flush=True)
    started = time.perf_counter()
    try:
        done = subprocess.run(
            argv, env=mentor_env(), capture_output=True, text=True, timeout=timeout
        )
    except subprocess.TimeoutExpired:
        return CommandRow(name, False, time.perf_counter() - started, "", f"over {timeout:.0f} s")
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        return CommandRow(name, False, seconds, "", _last_error(done.stderr or done.stdout))
    return CommandRow(name, True, seconds, _figures(report) if report else "")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _serve_row(model: Path, device: str, timeout: float) -> CommandRow:
    """``mentor serve`` on the device, three chat completions over HTTP (stdlib, no openai)."""
    port = _free_port()
    argv = _mentor("serve", "--model", str(model), "--device", device, "--port", str(port),
                   "--no-auth")  # fmt: skip
    print("  serve ...", flush=True)
    started = time.perf_counter()
    server = subprocess.Popen(
        argv, env=mentor_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    try:
        base = f"http://127.0.0.1:{port}"
        while time.perf_counter() - started < timeout:
            if server.poll() is not None:
                lines = (server.stderr.read() if server.stderr else b"").decode().splitlines()
                return CommandRow("serve", False, time.perf_counter() - started, "",
                                  lines[-1][:160] if lines else "exited")  # fmt: skip
            try:
                urllib.request.urlopen(f"{base}/health", timeout=2).read()
                break
            except OSError:
                time.sleep(0.5)
        models = json.loads(urllib.request.urlopen(f"{base}/v1/models", timeout=10).read())
        body = {"model": models["data"][0]["id"], "max_tokens": 16, "temperature": 0,
                "messages": [{"role": "user", "content": "Say hello."}]}  # fmt: skip
        tokens, asked = 0, time.perf_counter()
        for _ in range(3):
            request = urllib.request.Request(
                f"{base}/v1/chat/completions",
                data=json.dumps(body).encode(),
                headers={"Content-Type": "application/json"},
            )
            reply = json.loads(urllib.request.urlopen(request, timeout=timeout).read())
            tokens += int(reply["usage"]["completion_tokens"])
        rate = tokens / (time.perf_counter() - asked)
        return CommandRow("serve", True, time.perf_counter() - started,
                          f"3 chat completions, {rate:,.0f} tok/s")  # fmt: skip
    except Exception as error:
        return CommandRow("serve", False, time.perf_counter() - started, "", repr(error)[:160])
    finally:
        server.terminate()
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            server.kill()


def _bakeoff_config(model: Path, device: str, out: Path) -> Path:
    """closed-book, LoRA and int8 arms (no retrieval: its index and embedder stay off a GPU
    machine that has no lancedb) on the example domain's questions."""
    lines = [
        "name: gpu check",
        "data:",
        f"  train: {TIDEPOOL / 'questions' / 'train.jsonl'}",
        f"  validation: {TIDEPOOL / 'questions' / 'validation.jsonl'}",
        f"  test: {TIDEPOOL / 'questions' / 'test.jsonl'}",
        "models:",
        f"  base: {model}",
        "answer: {max_new_tokens: 8, batch_size: 16, test_limit: 16, latency_queries: 2}",
        "training:",
        "  lora: {method: lora, max_steps: 4, batch_size: 4}",
        "arms:",
        "  - {name: closed-book, model: base}",
        "  - {name: lora, model: lora}",
        "  - {name: int8, model: base, quantize: int8}",
        f"out: {out}",
        f"device: {device}",
    ]
    path = out.with_suffix(".yaml")
    path.write_text("\n".join(lines) + "\n")
    return path


def command_rows(
    student: Path, teacher: Path, device: str, work: Path, tiny: bool, only: str | None = None
) -> list[CommandRow]:
    """Every command once on ``device`` (``only``: those named in this comma-separated list; a
    name ending in ``*`` takes every command it begins); ``student`` and ``teacher`` are model
    folders."""
    names = [n.strip() for n in only.split(",") if n.strip()] if only else ["*"]

    def wanted(label: str) -> bool:
        return any(label == n or (n.endswith("*") and label.startswith(n[:-1])) for n in names)

    limit = 300.0 if tiny else 240.0
    steps = ["--max-steps", "3" if tiny else "8", "--batch-size", "2", "--max-length", "512"]
    common = ["--device", device, "--eval", str(TEST), "--eval-limit", "2"]
    rows: list[CommandRow] = []
    work.mkdir(parents=True, exist_ok=True)
    for label, extra in [
        ("finetune lora", ["--method", "lora"]),
        ("finetune lora + checkpointing", ["--method", "lora", "--gradient-checkpointing"]),
        ("finetune full", ["--method", "full"]),
        ("finetune full + checkpointing", ["--method", "full", "--gradient-checkpointing"]),
        ("finetune qlora", ["--method", "qlora"]),
        ("finetune qlora + checkpointing", ["--method", "qlora", "--gradient-checkpointing"]),
    ]:
        if not wanted(label):
            continue
        out = work / label.replace(" + ", "-").replace(" ", "-")
        argv = _mentor("finetune", "--model", str(student), "--data", str(TRAIN),
                       "--out", str(out), *extra, *steps, *common)  # fmt: skip
        rows.append(_run(label, argv, limit, out / "report.json"))
    for method in ("logits", "sequence"):
        if not wanted(f"distill {method}"):
            continue
        out = work / f"distill-{method}"
        argv = _mentor("distill", "--teacher", str(teacher), "--student", str(student),
                       "--data", str(TRAIN), "--method", method, "--out", str(out),
                       "--max-new-tokens", "16", *steps, *common)  # fmt: skip
        rows.append(_run(f"distill {method}", argv, limit, out / "report.json"))
    for scheme in ("int8", "int4"):
        if not wanted(f"quantize {scheme}"):
            continue
        out = work / f"quantize-{scheme}"
        argv = _mentor("quantize", str(student), "--to", scheme, "--out", str(out),
                       "--device", device, "--limit", "2")  # fmt: skip
        rows.append(_run(f"quantize {scheme}", argv, limit, out / "report.json"))
    if wanted("serve"):
        rows.append(_serve_row(student, device, limit))
    if wanted("bakeoff"):
        config = _bakeoff_config(student, device, work / "bakeoff")
        rows.append(_run("bakeoff", _mentor("bakeoff", str(config)),
                         limit, work / "bakeoff" / "report.json"))  # fmt: skip
    return rows


def print_command_rows(rows: list[CommandRow], title: str) -> None:
    print(f"\n{title}")
    width = max(len(r.command) for r in rows)
    for r in rows:
        state = "ok" if r.ok else "FAILED"
        detail = r.figures if r.ok else r.error
        print(f"  {r.command.ljust(width)}  {state:<6}  {r.seconds:6.1f} s  {detail}")
    print(f"  {sum(r.ok for r in rows)}/{len(rows)} commands completed on the device")
