"""Serving benchmark: the server against direct generation, adapter switching, a concurrent load.

Parts (the server is ``mentor serve`` in its own process, spoken to with the openai client):

- ``stream``: streamed tokens/s through the server against in-process ``model.generate`` with a
  streamer, the same model, prompts and fixed reply length, in alternating rounds so that
  machine noise hits both alike. Target: >= 0.9x.
- ``adapters``: one client, requests cycling through 3 LoRA adapters (r=16 on every projection)
  against all on one adapter, alternating blocks. Target: at most 10% lower throughput.
- ``load``: 50 concurrent clients for a bounded run over the Tidepool index with ``--rag``, mixed
  adapters and streaming; the later half asks off-domain (PubMedQA) questions, so the request log
  shows a drift. Reports errors, p50/p95 latency, then runs ``mentor monitor report`` on the log.
  Target: zero errors.
- ``concurrency``: 8 (then 32) clients streaming 64-token replies at once, against the server
  answering one request at a time (``--max-running 1``: the engine before continuous batching)
  and batching them (``--max-running 32``); aggregate tokens/s and p50/p95 latency, and the same
  load on vLLM's server when a vLLM environment is found (``make vllm``). Targets: >= 3x the
  one-at-a-time throughput with a lower p95; >= 0.7x vLLM.
- ``mixed``: 12 concurrent requests all on one adapter against the same spread over 3 adapters
  (rows of different adapters share each forward pass). Target: >= 0.8x.
- ``quantize``: runs ``bench/quantize_bench.py`` (size, tokens/s, perplexity per level).

Run: ``python bench/serve_bench.py [--part stream|adapters|load|concurrency|mixed|quantize|all]
[--quick]``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from mentor.utils.fs import mentor_home
from mentor.utils.logs import quiet_libraries

console = Console()
ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "examples" / "tidepool" / "docs"
SUPPORT = ROOT / "examples" / "finetune"
PUBMEDQA = ROOT.parent / "shared" / "data" / "pubmedqa" / "pqal_train.json"
KEY = "bench-key"
TARGET_STREAM, TARGET_ADAPTERS = 0.9, 0.9
TARGET_BATCHED, TARGET_VLLM, TARGET_MIXED = 3.0, 0.7, 0.8


def _questions(path: Path) -> list[str]:
    out = []
    for line in path.read_text().splitlines():
        messages = json.loads(line)["messages"]
        out.append(next(m["content"] for m in messages if m["role"] == "user"))
    return out


def _adapters(model: str, folder: Path, count: int = 3) -> list[Path]:
    """``count`` LoRA adapters (r=16, all projections) with random B, so each changes outputs."""
    import torch

    from mentor.models.loading import load_causal_lm
    from mentor.train.adapters import save_adapter
    from mentor.train.lora import LoRAConfig, add_lora, delete_adapter

    paths = [folder / f"adapter-{i}" for i in range(count)]
    if all((p / "adapter_config.json").exists() for p in paths):
        return paths
    lm = load_causal_lm(model, dtype="float32", device="cpu")
    config = LoRAConfig(r=16, alpha=32, dropout=0.0)
    for i, path in enumerate(paths):
        add_lora(lm, config, "x")
        generator = torch.Generator().manual_seed(i)
        with torch.no_grad():
            for name, param in lm.named_parameters():
                if "lora_B" in name:
                    param.copy_(torch.randn(param.shape, generator=generator) * 0.01)
        save_adapter(lm, path, name="x", config=config, base_model=model)
        delete_adapter(lm, "x")
    return paths


@contextmanager
def server(args: argparse.Namespace, *extra: str) -> Iterator[str]:
    """``mentor serve`` in a subprocess until the block ends; yields the base URL."""
    import httpx2 as httpx

    from mentor.serve.runner import free_port

    port = free_port()
    command = [
        sys.executable,
        "-m",
        "mentor.cli",
        "serve",
        "--model",
        args.model,
        "--name",
        "m",
        "--port",
        str(port),
        "--api-key",
        KEY,
        "--device",
        args.device,
        *extra,
    ]
    proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 300
        while True:
            try:
                if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if proc.poll() is not None:
                raise RuntimeError(f"mentor serve exited: {proc.stderr.read()[-2000:]}")  # type: ignore[union-attr]
            if time.time() > deadline:
                raise RuntimeError("mentor serve did not come up in 300 s")
            time.sleep(0.3)
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=60)


def _client(url: str) -> Any:
    from openai import OpenAI

    return OpenAI(base_url=f"{url}/v1", api_key=KEY, max_retries=0, timeout=600)


def _streamed(client: Any, model: str, question: str, tokens: int) -> tuple[int, float]:
    """Stream one reply of exactly ``tokens`` tokens; (tokens, seconds)."""
    started = time.perf_counter()
    stream = client.chat.completions.create(
        model=model, messages=[{"role": "user", "content": question}], max_tokens=tokens,
        temperature=0, stream=True, stream_options={"include_usage": True},
        extra_body={"ignore_eos": True},
    )  # fmt: skip
    usage = None
    for chunk in stream:
        if chunk.usage is not None:
            usage = chunk.usage
    seconds = time.perf_counter() - started
    return (usage.completion_tokens if usage else 0), seconds


def stream_part(args: argparse.Namespace) -> dict[str, Any]:
    import torch
    from transformers import TextIteratorStreamer

    from mentor.models.loading import load_causal_lm, load_tokenizer

    questions = _questions(SUPPORT / "support_test.jsonl")[: args.prompts]
    lm = load_causal_lm(args.model, device=args.device)
    tokenizer = load_tokenizer(args.model)

    def direct(question: str) -> tuple[int, float]:
        ids = tokenizer.apply_chat_template(
            [{"role": "user", "content": question}], add_generation_prompt=True,
            return_tensors="pt", return_dict=True,
        )["input_ids"]  # fmt: skip
        streamer = TextIteratorStreamer(tokenizer, skip_prompt=True, skip_special_tokens=True)
        started = time.perf_counter()
        kwargs = dict(
            input_ids=ids,
            attention_mask=torch.ones_like(ids),
            max_new_tokens=args.tokens,
            min_new_tokens=args.tokens,
            do_sample=False,
            temperature=None,
            top_p=None,
            top_k=None,
            streamer=streamer,
        )
        thread = threading.Thread(target=lambda: lm.generate(**kwargs))
        with torch.inference_mode():
            thread.start()
            for _ in streamer:
                pass
            thread.join()
        return args.tokens, time.perf_counter() - started

    rows: dict[str, list[float]] = {"direct": [], "server": []}
    with server(args) as url:
        client = _client(url)
        direct(questions[0]), _streamed(client, "m", questions[0], 8)  # warm-up
        for round_ in range(args.rounds):
            for side in ("direct", "server") if round_ % 2 == 0 else ("server", "direct"):
                made, seconds = 0, 0.0
                for question in questions:
                    n, s = direct(question) if side == "direct" else _streamed(
                        client, "m", question, args.tokens)  # fmt: skip
                    made, seconds = made + n, seconds + s
                rows[side].append(made / seconds)
                console.print(f"round {round_ + 1} {side}: {made / seconds:.1f} tokens/s")
    direct_tps, server_tps = statistics.median(rows["direct"]), statistics.median(rows["server"])
    return {"direct_tokens_per_s": direct_tps, "server_tokens_per_s": server_tps,
            "ratio": server_tps / direct_tps, "rounds": rows}  # fmt: skip


def adapters_part(args: argparse.Namespace) -> dict[str, Any]:
    questions = _questions(SUPPORT / "support_test.jsonl")[: args.prompts]
    paths = _adapters(args.model, mentor_home() / "bench" / "serve-adapters")
    flags = [f for i, p in enumerate(paths) for f in ("--adapter", f"a{i}={p}")]
    rows: dict[str, list[float]] = {"one": [], "alternating": []}
    with server(args, *flags) as url:
        client = _client(url)
        _streamed(client, "m:a0", questions[0], 8)
        for round_ in range(args.rounds):
            for side in ("one", "alternating") if round_ % 2 == 0 else ("alternating", "one"):
                made, started = 0, time.perf_counter()
                for i, question in enumerate(questions * 2):
                    model = "m:a0" if side == "one" else f"m:a{i % 3}"
                    made += _streamed(client, model, question, args.tokens)[0]
                rows[side].append(made / (time.perf_counter() - started))
                console.print(f"round {round_ + 1} {side}: {rows[side][-1]:.1f} tokens/s")
    one, alternating = statistics.median(rows["one"]), statistics.median(rows["alternating"])
    return {"one_adapter_tokens_per_s": one, "alternating_tokens_per_s": alternating,
            "ratio": alternating / one, "rounds": rows}  # fmt: skip


def _burst(
    url: str, models: list[str], questions: list[str], clients: int, tokens: int, key: str = KEY
) -> dict[str, Any]:
    """``clients`` threads each streaming one ``tokens``-token reply at the same moment (client
    i asks ``questions[i]`` of ``models[i]``, both cycled): aggregate tokens/s and latencies."""
    from openai import OpenAI

    latencies: list[float] = [0.0] * clients
    made: list[int] = [0] * clients
    errors: list[str] = []
    gate = threading.Barrier(clients)

    def one(i: int) -> None:
        client = OpenAI(base_url=f"{url}/v1", api_key=key, max_retries=0, timeout=900)
        gate.wait()
        try:
            made[i], latencies[i] = _streamed(
                client, models[i % len(models)], questions[i % len(questions)], tokens
            )
        except Exception as exc:
            errors.append(f"{type(exc).__name__}: {exc}")

    started = time.perf_counter()
    threads = [threading.Thread(target=one, args=(i,)) for i in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - started
    ordered = sorted(latencies)
    return {
        "clients": clients, "tokens": sum(made), "wall_s": wall,
        "tokens_per_s": sum(made) / wall, "p50_s": statistics.median(ordered),
        "p95_s": ordered[int(0.95 * (clients - 1))], "errors": errors,
    }  # fmt: skip


def concurrency_part(args: argparse.Namespace) -> dict[str, Any]:
    questions = _questions(SUPPORT / "support_test.jsonl")
    rows: dict[str, dict[str, Any]] = {}
    levels = (8,) if args.quick else (8, 32)
    for running in (1, 32):
        with server(args, "--max-running", str(running), "--timeout", "900") as url:
            _burst(url, ["m"], questions, 2, 8)  # warm-up
            for clients in levels:
                if running == 1 and clients > 8:
                    continue  # one at a time: 32 clients only take 4x as long
                label = f"builtin, {'one at a time' if running == 1 else 'batched'}, {clients}"
                rows[label] = _burst(url, ["m"], questions, clients, args.tokens)
                console.print(f"{label}: {rows[label]['tokens_per_s']:.1f} tokens/s")
    vllm = _vllm_rows(args, questions, levels)
    rows |= vllm
    table = Table(title=f"{args.model}, {args.tokens}-token streamed replies, CPU")
    for column in ("engine, clients", "tokens/s", "p50 s", "p95 s", "errors"):
        table.add_column(column)
    for label, row in rows.items():
        table.add_row(label, f"{row['tokens_per_s']:.1f}", f"{row['p50_s']:.1f}",
                      f"{row['p95_s']:.1f}", str(len(row["errors"])))  # fmt: skip
    console.print(table)
    one, batched = rows["builtin, one at a time, 8"], rows["builtin, batched, 8"]
    ratios = {"batched_vs_one_at_a_time_8": batched["tokens_per_s"] / one["tokens_per_s"]}
    for clients in levels:
        theirs = rows.get(f"vllm, {clients}")
        if theirs is not None:
            ours = rows[f"builtin, batched, {clients}"]
            ratios[f"builtin_vs_vllm_{clients}"] = ours["tokens_per_s"] / theirs["tokens_per_s"]
    for name, value in ratios.items():
        console.print(f"{name}: {value:.2f}x")
    return {"rows": rows, "ratios": ratios}


def _vllm_rows(
    args: argparse.Namespace, questions: list[str], levels: tuple[int, ...]
) -> dict[str, dict[str, Any]]:
    """The same bursts against vLLM's own server (none when no vLLM environment is found)."""
    from mentor.models.loading import resolve_model_path
    from mentor.models.vllm_server import VLLMError, VLLMServer, VLLMSettings, vllm_command

    settings = VLLMSettings()
    try:
        vllm_command(settings)
    except VLLMError as exc:
        console.print(f"vLLM rows skipped: {exc}")
        return {}
    rows = {}
    with VLLMServer(resolve_model_path(args.model), name="m", settings=settings) as vllm:
        base = vllm.url.removesuffix("/v1")
        _burst(base, ["m"], questions, 2, 8, key="none")
        for clients in levels:
            rows[f"vllm, {clients}"] = _burst(base, ["m"], questions, clients, args.tokens,
                                              key="none")  # fmt: skip
    return rows


def mixed_part(args: argparse.Namespace) -> dict[str, Any]:
    questions = _questions(SUPPORT / "support_test.jsonl")
    paths = _adapters(args.model, mentor_home() / "bench" / "serve-adapters")
    flags = [f for i, p in enumerate(paths) for f in ("--adapter", f"a{i}={p}")]
    rows: dict[str, list[float]] = {"one adapter": [], "three adapters": []}
    with server(args, *flags, "--max-running", "32", "--timeout", "900") as url:
        _burst(url, ["m:a0", "m:a1"], questions, 2, 8)
        for round_ in range(args.rounds):
            sides = ("one adapter", "three adapters")
            for side in sides if round_ % 2 == 0 else sides[::-1]:
                models = ["m:a0"] if side == "one adapter" else ["m:a0", "m:a1", "m:a2"]
                rows[side].append(_burst(url, models, questions, 12, args.tokens)["tokens_per_s"])
                console.print(f"round {round_ + 1} {side}: {rows[side][-1]:.1f} tokens/s")
    one, three = statistics.median(rows["one adapter"]), statistics.median(rows["three adapters"])
    console.print(f"12 concurrent requests: three adapters / one = {three / one:.2f}x")
    return {"one_adapter_tokens_per_s": one, "three_adapters_tokens_per_s": three,
            "ratio": three / one, "rounds": rows}  # fmt: skip


def _index(args: argparse.Namespace) -> Path:
    index = mentor_home() / "bench" / "serve-tidepool-index"
    if not (index / "index.json").exists():
        subprocess.run([sys.executable, "-m", "mentor.cli", "rag", "index", str(DOCS), "--index",
                        str(index), "--no-tune"], check=True)  # fmt: skip
    return index


def load_part(args: argparse.Namespace) -> dict[str, Any]:
    from mentor.utils.progress import progress_bar

    index = _index(args)
    paths = _adapters(args.model, mentor_home() / "bench" / "serve-adapters")
    flags = [f for i, p in enumerate(paths) for f in ("--adapter", f"a{i}={p}")]
    log = mentor_home() / "bench" / "serve-load" / "requests.db"
    log.parent.mkdir(parents=True, exist_ok=True)
    log.unlink(missing_ok=True)
    on_domain = _questions(SUPPORT / "support_train.jsonl")
    off_domain = [r["QUESTION"] for r in json.loads(PUBMEDQA.read_text()).values()]
    total = args.clients * args.per_client
    latencies: list[float] = []
    errors: list[str] = []
    lock = threading.Lock()
    with server(args, *flags, "--rag", str(index), "--log", str(log), "--max-queue", "512",
                "--timeout", "600") as url, progress_bar(console) as bar:  # fmt: skip
        task = bar.add_task(f"{args.clients} clients", total=total)

        def client_loop(c: int) -> None:
            client = _client(url)
            for k in range(args.per_client):
                n = c * args.per_client + k
                # The first half of the run asks support questions, the second half biomedical
                # ones: what the monitor should flag as drift.
                later = k >= args.per_client // 2
                pool = off_domain if later else on_domain
                question = pool[n % len(pool)]
                model = ["m", "m:a0", "m:a1", "m:a2"][n % 4]
                started = time.perf_counter()
                try:
                    if n % 2:
                        _streamed(client, model, question, args.load_tokens)
                    else:
                        client.chat.completions.create(
                            model=model, messages=[{"role": "user", "content": question}],
                            max_tokens=args.load_tokens, temperature=0,
                        )  # fmt: skip
                    with lock:
                        latencies.append(time.perf_counter() - started)
                except Exception as exc:
                    with lock:
                        errors.append(f"{type(exc).__name__}: {exc}")
                bar.advance(task)

        started = time.perf_counter()
        threads = [threading.Thread(target=client_loop, args=(c,)) for c in range(args.clients)]
        for t in threads:
            t.start()
            time.sleep(0.05)
        for t in threads:
            t.join()
        wall = time.perf_counter() - started
    latencies.sort()
    result = {
        "clients": args.clients, "requests": total, "errors": len(errors),
        "error_examples": errors[:3], "wall_s": wall,
        "p50_s": statistics.median(latencies) if latencies else None,
        "p95_s": latencies[int(0.95 * (len(latencies) - 1))] if latencies else None,
        "requests_per_s": len(latencies) / wall, "log": str(log),
    }  # fmt: skip
    out = log.parent / "monitor-report"
    report = subprocess.run(
        [sys.executable, "-m", "mentor.cli", "monitor", "report", "--log", str(log), "--out",
         str(out)], capture_output=True, text=True)  # fmt: skip
    console.print(report.stdout[-4000:] or report.stderr[-2000:])
    result["monitor_report"] = str(out)
    if (out / "report.json").exists():
        result["monitor"] = json.loads((out / "report.json").read_text()).get("drift")
    return result


def quantize_part(args: argparse.Namespace) -> None:
    extra = ["--quick"] if args.quick else []
    subprocess.run([sys.executable, str(ROOT / "bench" / "quantize_bench.py"), *extra], check=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--part", default="all",
                        choices=["stream", "adapters", "load", "concurrency", "mixed", "quantize",
                                 "all"])  # fmt: skip
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--quick", action="store_true", help="fewer rounds, prompts and clients")
    parser.add_argument("--tokens", type=int, default=64, help="reply length (stream, adapters)")
    parser.add_argument("--prompts", type=int, default=None, help="questions per round [6; 3]")
    parser.add_argument("--rounds", type=int, default=None, help="alternating rounds [4; 2]")
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--per-client", type=int, default=None, help="requests each [4; 2]")
    parser.add_argument("--load-tokens", type=int, default=16, help="reply length in the load run")
    args = parser.parse_args()
    args.prompts = args.prompts or (3 if args.quick else 6)
    args.rounds = args.rounds or (2 if args.quick else 4)
    args.per_client = args.per_client or (2 if args.quick else 4)
    quiet_libraries()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    results: dict[str, Any] = {}
    if args.part in ("stream", "all"):
        results["stream"] = stream_part(args)
    if args.part in ("adapters", "all"):
        results["adapters"] = adapters_part(args)
    if args.part in ("load", "all"):
        results["load"] = load_part(args)
    if args.part in ("concurrency", "all"):
        results["concurrency"] = concurrency_part(args)
    if args.part in ("mixed", "all"):
        results["mixed"] = mixed_part(args)
    table = Table(title=f"serving {args.model} on {args.device}")
    for column in ("measure", "value", "reference", "target"):
        table.add_column(column)
    if "stream" in results:
        r = results["stream"]
        table.add_row(
            "streamed tokens/s, server vs direct generate",
            f"{r['server_tokens_per_s']:.1f} vs {r['direct_tokens_per_s']:.1f}",
            f"{r['ratio']:.2f}x",
            "ok" if r["ratio"] >= TARGET_STREAM else "MISSED",
        )
    if "adapters" in results:
        r = results["adapters"]
        table.add_row(
            "tokens/s, 3 adapters alternating vs one",
            f"{r['alternating_tokens_per_s']:.1f} vs {r['one_adapter_tokens_per_s']:.1f}",
            f"{r['ratio']:.2f}x",
            "ok" if r["ratio"] >= TARGET_ADAPTERS else "MISSED",
        )
    if "load" in results:
        r = results["load"]
        table.add_row(f"{r['clients']} clients, {r['requests']} requests: errors",
                      str(r["errors"]), f"p50 {r['p50_s']:.2f} s, p95 {r['p95_s']:.2f} s",
                      "ok" if r["errors"] == 0 else "MISSED")  # fmt: skip
        table.add_row("  requests/s", f"{r['requests_per_s']:.2f}", "", "")
    if "concurrency" in results:
        ratios = results["concurrency"]["ratios"]
        value = ratios["batched_vs_one_at_a_time_8"]
        table.add_row("8 streaming clients: batched vs one at a time", f"{value:.2f}x", "1x",
                      "ok" if value >= TARGET_BATCHED else "MISSED")  # fmt: skip
        for name, value in ratios.items():
            if name.startswith("builtin_vs_vllm"):
                clients = name.rsplit("_", 1)[1]
                table.add_row(f"{clients} clients: builtin vs vLLM", f"{value:.2f}x", "vLLM 1x",
                              "ok" if value >= TARGET_VLLM else "MISSED")  # fmt: skip
    if "mixed" in results:
        r = results["mixed"]
        table.add_row(
            "12 concurrent: 3 adapters mixed vs one",
            f"{r['three_adapters_tokens_per_s']:.1f} vs {r['one_adapter_tokens_per_s']:.1f}",
            f"{r['ratio']:.2f}x",
            "ok" if r["ratio"] >= TARGET_MIXED else "MISSED",
        )
    if results:
        console.print(table)
        out = mentor_home() / "bench" / "serve_bench.json"
        out.parent.mkdir(parents=True, exist_ok=True)
        earlier = json.loads(out.read_text()) if out.exists() else {}
        out.write_text(json.dumps({**earlier, **results}, indent=2))  # parts run apart add up
        console.print(f"results: {out}")
    if args.part in ("quantize", "all"):
        quantize_part(args)


if __name__ == "__main__":
    main()
