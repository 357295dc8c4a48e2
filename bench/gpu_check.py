"""GPU check: mentor on one GPU, in one run of a few minutes, every figure printed as a table.

Models are random-initialised Llamas of real shapes (SmolLM2-135M, SmolLM2-1.7B, Llama-2-7B for
QLoRA memory), bf16 on CUDA, with the real SmolLM2 tokenizer (checked by sha256): no weights
travel. Parts (``--parts``, all by default), each reported on its own so one failing part hides
no other:

- ``decode``: batch-1 tokens/s of transformers ``generate``, ``HFEngine.stream`` and the
  :class:`~mentor.models.static_decode.StaticDecoder` (goal >= 3x ``generate``); 64 concurrent
  requests through ``HFEngine.generate`` (goal >= 20x 25 tokens/s); vLLM when importable.
- ``train``: where a LoRA step's time goes beside full fine-tuning (``bench/lora_profile.py``;
  goal: LoRA with dropout 0.05 >= 0.9x full's tokens/s), gradient checkpointing's memory and
  speed (``finetune_bench.checkpointing_rows``), QLoRA of a Llama-2-7B shape against bf16 LoRA
  (``qlora_bench.qlora_rows``; goal: peak <= 12 GB), FSDP2 against DDP
  (``finetune_bench.fsdp_rows``).
- ``quantize``: batch-1 decode ms/token of int8 and int4 kernels against bf16, with the change
  in log-likelihood (``quantize_bench.gpu_rows``; goals: int4 <= 0.8x bf16, int8 <= 1.0x).
- ``commands``: ``mentor finetune`` (lora, full, qlora; with and without
  ``--gradient-checkpointing``), ``mentor distill`` (logits, sequence), ``mentor quantize``
  (int8, int4), ``mentor serve`` and a tiny ``mentor bakeoff``, each as a user runs it with
  ``--device cuda`` on random model folders (``bench/gpu_commands.py``).
- ``tests``: the end-to-end tests (``-m e2e``) with ``--device cuda``.

``decode`` imports only torch, transformers and mentor modules that need neither pydantic nor
fastapi, so a GPU machine's own python3 runs it from a checkout. The other parts need all of
mentor: ``make gpu-wheels`` downloads the wheels a GPU machine lacks into ``bench/assets`` (with
the tokenizer files ``make gpu-assets`` puts there; about 55 MB in all). On the GPU machine::

    pip install --no-index --no-deps --target /tmp/site bench/assets/wheels/*.whl
    PYTHONPATH=/tmp/site:src python3 bench/gpu_check.py --out results.json

The tokenizer files are the pulled ``smollm2-135m-instruct``'s (``$MENTOR_HOME/models/...``), or
``bench/assets/smollm2-tokenizer``, or ``--tokenizer DIR``. ``--tiny`` runs tiny shapes and few
steps: the CPU test of the script (``tests/test_gpu_check.py``).
"""

from __future__ import annotations

import argparse
import gc
import hashlib
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

try:
    import mentor  # noqa: F401
except ImportError:  # a checkout run by a python3 without mentor installed (a GPU machine)
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
sys.path.insert(0, str(Path(__file__).resolve().parent))  # its sibling bench modules

from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaConfig, PreTrainedModel

from mentor.models.engine import HFEngine, Request
from mentor.models.protocols import SamplingConfig
from mentor.models.static_decode import StaticDecoder, supported

ASSETS = Path(__file__).parent / "assets" / "smollm2-tokenizer"
PACKAGED_FOLDER = (
    Path(os.environ.get("MENTOR_HOME") or Path.home() / ".cache" / "mentor").expanduser()
    / "models"
    / "smollm2-135m-instruct"
)
TOKENIZER = ASSETS if ASSETS.is_dir() else PACKAGED_FOLDER
TOKENIZER_SHA256 = {
    "chat_template.jinja": "872be49dbb638044ad01b60388f48d469ff2980e5f0dccdc22ec907db54d0788",
    "tokenizer.json": "bf346d64f6f0fbcefb4c1b6928a98241467dff36c6fbae5fe1785c4ff90667f4",
    "tokenizer_config.json": "9a35ec54a7aefb72c27d6aa575cf9e0cc4c213995a62afbe8e4a5fac33c7d5c5",
}
PACKAGED = PACKAGED_FOLDER / "config.json"

_SMOLLM2 = {"vocab_size": 49152, "tie_word_embeddings": True, "rms_norm_eps": 1e-5,
            "bos_token_id": 1, "eos_token_id": 2, "pad_token_id": 2}  # fmt: skip
SHAPES: dict[str, dict[str, Any]] = {
    "135m": {**_SMOLLM2, "hidden_size": 576, "num_hidden_layers": 30, "num_attention_heads": 9,
             "num_key_value_heads": 3, "intermediate_size": 1536, "max_position_embeddings": 8192,
             "rope_parameters": {"rope_type": "default", "rope_theta": 100000.0}},
    "1.7b": {**_SMOLLM2, "hidden_size": 2048, "num_hidden_layers": 24, "num_attention_heads": 32,
             "num_key_value_heads": 32, "intermediate_size": 8192, "max_position_embeddings": 8192,
             "rope_parameters": {"rope_type": "default", "rope_theta": 130000.0}},
    "tiny": {**_SMOLLM2, "hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4,
             "num_key_value_heads": 2, "intermediate_size": 128, "max_position_embeddings": 512,
             "rope_parameters": {"rope_type": "default", "rope_theta": 100000.0}},
}  # fmt: skip
QUESTIONS = [
    "How do I export a board to CSV?",
    "Can guests create boards in the free plan?",
    "What does the Pro plan cost per member?",
    "Summarise the refund policy in one sentence.",
    "Which browsers are supported?",
    "How long are deleted boards kept before they are purged for good?",
    "Who can change the billing address?",
    "Write a haiku about databases.",
]
CONCURRENT = 64
SINGLE_STREAM_RATE = 25.0  # tokens/s: the batch-1 rate the 64-request goal is a multiple of


def mismatches_with_packaged(shape: dict[str, Any], path: Path = PACKAGED) -> list[str]:
    """Fields of ``shape`` that differ from the packaged SmolLM2-135M config (empty: they agree)."""
    packaged = json.loads(path.read_text())
    wrong = [
        f"{key}: {value!r} here, {packaged.get(key)!r} packaged"
        for key, value in shape.items()
        if key not in ("rope_parameters", "rms_norm_eps") and packaged.get(key) != value
    ]
    theta = packaged.get("rope_parameters", {}).get("rope_theta", packaged.get("rope_theta"))
    if theta != shape["rope_parameters"]["rope_theta"]:
        wrong.append(f"rope_theta: {shape['rope_parameters']['rope_theta']} here, {theta} packaged")
    if abs(packaged["rms_norm_eps"] - shape["rms_norm_eps"]) > 1e-9:
        wrong.append(f"rms_norm_eps: {shape['rms_norm_eps']} here, {packaged['rms_norm_eps']}")
    return wrong


def load_tokenizer(folder: Path | None = None) -> Any:
    folder = folder or TOKENIZER
    for name, digest in TOKENIZER_SHA256.items():
        if not (folder / name).exists():
            raise SystemExit(
                f"{folder / name}: missing; pull the model (mentor models pull "
                "smollm2-135m-instruct), run make gpu-assets, or pass --tokenizer DIR"
            )
        actual = hashlib.sha256((folder / name).read_bytes()).hexdigest()
        if actual != digest:
            raise SystemExit(f"{folder / name}: sha256 {actual}, expected {digest}")
    return AutoTokenizer.from_pretrained(str(folder))


def build_model(shape: str, device: torch.device, dtype: torch.dtype) -> PreTrainedModel:
    """Random weights, made on the device (1.7B parameters initialise in seconds there)."""
    torch.manual_seed(0)
    config = LlamaConfig(**SHAPES[shape])
    with torch.device(device):
        model = AutoModelForCausalLM.from_config(config, dtype=dtype)
    model.generation_config.eos_token_id = config.eos_token_id
    model.generation_config.pad_token_id = config.pad_token_id
    return model.eval()


@dataclass
class Row:
    model: str
    measure: str
    tokens_per_s: float | None
    versus: str = ""
    goal: str = ""
    note: str = ""


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def timed(fn: Callable[[], Any], device: torch.device) -> float:
    sync(device)
    started = time.perf_counter()
    fn()
    sync(device)
    return time.perf_counter() - started


def hf_generate(model: PreTrainedModel, rows: list[list[int]], new: int, pad: int) -> list[int]:
    """transformers' own loop, left-padded, greedy, exactly ``new`` tokens per row; row 0's."""
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for i, row in enumerate(rows):
        ids[i, width - len(row) :], mask[i, width - len(row) :] = torch.tensor(row), 1
    with torch.inference_mode():
        out = model.generate(
            input_ids=ids.to(model.device), attention_mask=mask.to(model.device),
            max_new_tokens=new, min_new_tokens=new, do_sample=False, temperature=None,
            top_p=None, top_k=None, pad_token_id=pad,
        )  # fmt: skip
    return [int(t) for t in out[0, width:]]


def static_greedy(decoder: StaticDecoder, prompt: list[int], new: int) -> list[int]:
    decoder.reset()
    tokens = [int(decoder.prefill(prompt).argmax())]
    while len(tokens) < new:
        tokens.append(int(decoder.step(tokens[-1]).argmax()))
    return tokens


def check_model(
    shape: str, device: torch.device, dtype: torch.dtype, tokenizer: Any, new: int
) -> list[Row]:
    model = build_model(shape, device, dtype)
    engine = HFEngine(model, tokenizer, name=shape)
    prompts = [
        engine.encode_chat([{"role": "user", "content": f"{q} (ticket {i})"}])
        for i in range(CONCURRENT // len(QUESTIONS))
        for q in QUESTIONS
    ]
    one = prompts[0]
    fixed = SamplingConfig(max_new_tokens=new, ignore_eos=True)
    pad = int(tokenizer.pad_token_id)
    rows: list[Row] = []
    label = f"SmolLM2-{shape}" if shape != "tiny" else "tiny"

    def say(row: Row) -> None:
        rows.append(row)
        rate = "-" if row.tokens_per_s is None else f"{row.tokens_per_s:.0f}"
        print(f"  {row.measure}: {rate} tok/s {row.versus} {row.note}".rstrip(), flush=True)

    print(f"== {label} ({sum(p.numel() for p in model.parameters()) / 1e6:.0f}M)", flush=True)
    hf_generate(model, [one], min(new, 8), pad)  # warm-up
    hf_tokens: list[int] = []
    hf_s = timed(lambda: hf_tokens.extend(hf_generate(model, [one], new, pad)), device)
    hf_rate = new / hf_s
    say(Row(label, "batch 1: transformers generate", hf_rate, "1.00x"))

    def stream() -> None:
        for _ in engine.stream(Request(one, fixed)):
            pass

    engine_rate = new / timed(stream, device)
    say(Row(label, "batch 1: HFEngine.stream", engine_rate, f"{engine_rate / hf_rate:.2f}x"))

    if supported(model):
        decoder = StaticDecoder(model, max_len=len(one) + new + 16)
        kind = "static cache, CUDA graph" if decoder.compiled else "dynamic cache, eager"
        started = time.perf_counter()
        static_greedy(decoder, one, min(new, 8))  # compiles and captures on CUDA
        warm = time.perf_counter() - started
        static_tokens: list[int] = []
        rate = new / timed(lambda: static_tokens.extend(static_greedy(decoder, one, new)), device)
        pairs = enumerate(zip(static_tokens, hf_tokens, strict=True))
        agree = next((i for i, (a, b) in pairs if a != b), new)
        say(Row(label, f"batch 1: StaticDecoder ({kind})", rate, f"{rate / hf_rate:.2f}x",
                goal_met(rate >= 3 * hf_rate, ">= 3x generate"),
                f"warm-up {warm:.0f} s; first {agree}/{new} tokens as generate"))  # fmt: skip
    else:
        say(Row(label, "batch 1: StaticDecoder", None, note="model not supported"))

    requests = [Request(p, fixed) for p in prompts]
    engine.generate(requests[:2], batch_size=2)  # warm-up
    engine_s = timed(lambda: engine.generate(requests, batch_size=CONCURRENT), device)
    rate = CONCURRENT * new / engine_s
    say(Row(label, f"{CONCURRENT} requests: HFEngine.generate", rate,
            f"{rate / SINGLE_STREAM_RATE:.1f}x 25 tok/s",
            goal_met(rate >= 20 * SINGLE_STREAM_RATE, ">= 20x 25 tok/s")))  # fmt: skip
    hf_s = timed(lambda: hf_generate(model, prompts, new, pad), device)
    rate = CONCURRENT * new / hf_s
    say(Row(label, f"{CONCURRENT} requests: transformers generate, one batch", rate,
            f"{rate / SINGLE_STREAM_RATE:.1f}x 25 tok/s"))  # fmt: skip
    vllm_rows(label, model, tokenizer, one, prompts, new, say)
    return rows


def goal_met(met: bool, goal: str) -> str:
    return f"{goal}: {'met' if met else 'NOT met'}"


def vllm_rows(
    label: str, model: PreTrainedModel, tokenizer: Any, one: list[int],
    prompts: list[list[int]], new: int, say: Callable[[Row], None],
) -> None:  # fmt: skip
    """The same weights through vLLM (saved to a scratch folder), or a row saying why not."""
    try:
        import vllm
    except Exception as error:  # any failure to import means: no vLLM row
        say(Row(label, "vLLM", None, note=f"not importable ({type(error).__name__})"))
        return
    if model.device.type != "cuda":
        say(Row(label, "vLLM", None, note="needs CUDA"))
        return
    with tempfile.TemporaryDirectory(prefix="gpu-check-") as folder:
        model.save_pretrained(folder)
        tokenizer.save_pretrained(folder)
        llm = vllm.LLM(model=folder, dtype="bfloat16", gpu_memory_utilization=0.4, seed=0)
        params = vllm.SamplingParams(max_tokens=new, ignore_eos=True, temperature=0.0)

        def run(rows: list[list[int]]) -> None:
            llm.generate([{"prompt_token_ids": r} for r in rows], params, use_tqdm=False)

        run([one])  # warm-up
        say(Row(label, "batch 1: vLLM", new / timed(lambda: run([one]), model.device)))
        rate = len(prompts) * new / timed(lambda: run(prompts), model.device)
        say(Row(label, f"{len(prompts)} requests: vLLM", rate,
                f"{rate / SINGLE_STREAM_RATE:.1f}x 25 tok/s"))  # fmt: skip


def print_table(rows: list[Row], title: str) -> None:
    header = ("model", "measure", "tok/s", "vs reference", "goal", "note")
    cells = [header] + [
        (r.model, r.measure, "-" if r.tokens_per_s is None else f"{r.tokens_per_s:.0f}",
         r.versus, r.goal, r.note)
        for r in rows
    ]  # fmt: skip
    widths = [max(len(c[i]) for c in cells) for i in range(len(header))]
    print(f"\n{title}")
    for i, cell in enumerate(cells):
        print("  ".join(text.ljust(w) for text, w in zip(cell, widths, strict=True)).rstrip())
        if i == 0:
            print("  ".join("-" * w for w in widths))


PARTS = ("train", "quantize", "commands", "decode", "tests")
"""In the order they run: the issue 19 targets first, so a tight budget spends itself on them."""


def save_model_folder(shape: str, folder: Path, tokenizer_folder: Path, dtype: torch.dtype) -> Path:
    """A random-initialised model of ``shape`` saved as a model folder (safetensors) with the
    SmolLM2 tokenizer files, for the commands to load as a user's model."""
    if not (folder / "config.json").exists():
        model = build_model(shape, torch.device("cpu"), dtype)
        # A random model with tied embeddings repeats its input token, and a chat prompt ends in
        # a newline: the (tied) rows of special and blank tokens are zeroed, so their logits are
        # 0 and greedy decoding writes text (a teacher's answers must not be empty).
        tokenizer = AutoTokenizer.from_pretrained(str(tokenizer_folder))
        blank = [i for i in range(len(tokenizer)) if not tokenizer.decode([i]).strip()]
        with torch.no_grad():
            model.get_output_embeddings().weight[blank] = 0
        model.save_pretrained(str(folder), safe_serialization=True)
        del model
        for name in TOKENIZER_SHA256:
            (folder / name).write_bytes((tokenizer_folder / name).read_bytes())
    return folder


def print_dict_rows(rows: list[dict[str, Any]], title: str) -> None:
    """Rows of plain values as an aligned text table, columns in first-seen key order."""
    print(f"\n{title}")
    if not rows:
        print("  (no rows)")
        return
    keys = list(dict.fromkeys(k for r in rows for k in r))

    def cell(value: Any) -> str:
        if isinstance(value, float):
            return f"{value:,.3g}" if abs(value) < 100 else f"{value:,.0f}"
        return "" if value is None else str(value)

    table = [keys] + [[cell(r.get(k)) for k in keys] for r in rows]
    widths = [max(len(line[i]) for line in table) for i in range(len(keys))]
    for line in table:
        print("  " + "  ".join(text.ljust(w) for text, w in zip(line, widths, strict=True)))


def run_part(name: str, run: Callable[[], None]) -> None:
    """One part of the check; a part that breaks is reported and the others still run."""
    started = time.perf_counter()
    try:
        run()
    except ImportError as error:  # a GPU machine without mentor's server packages
        print(f"\n{name}: skipped, {error} (carry the wheels of make gpu-wheels)", flush=True)
    except Exception as error:
        print(f"\n{name}: FAILED after {time.perf_counter() - started:.0f} s: {error!r}")
        import traceback

        traceback.print_exc()
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default=None, help="cuda (default when present) or cpu")
    parser.add_argument("--models", default="135m,1.7b", help="comma-separated: 135m, 1.7b")
    parser.add_argument("--new-tokens", type=int, default=None, help="default 128 (8 --tiny)")
    parser.add_argument("--tiny", action="store_true", help="tiny shapes, a CPU test")
    parser.add_argument("--out", type=Path, default=None, help="also write the rows as JSON")
    parser.add_argument("--tokenizer", type=Path, default=None, help="SmolLM2 tokenizer folder")
    parser.add_argument("--parts", default=",".join(PARTS), help=f"comma-separated: {PARTS}")
    parser.add_argument(
        "--commands",
        default=None,
        help="only these commands (comma-separated; a name ending in * takes all it begins)",
    )
    parser.add_argument("--work", type=Path, default=None, help="folder for models and runs")
    parser.add_argument(
        "--budget",
        type=float,
        default=None,
        help="seconds: a part that would start after this many is not run, and says so",
    )
    parser.add_argument(
        "--all-kernels", action="store_true", help="quantize: every candidate kernel, slow ones too"
    )
    args = parser.parse_args()
    if args.device is None and not torch.cuda.is_available() and not args.tiny:
        print("gpu_check: no CUDA device; pass --device cpu to run anyway, or --tiny")
        return
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    shapes = ["tiny"] if args.tiny else [s.strip() for s in args.models.split(",") if s.strip()]
    unknown = [s for s in shapes if s not in SHAPES]
    if unknown:
        raise SystemExit(f"--models: unknown {unknown}; known: 135m, 1.7b")
    parts = [p.strip() for p in args.parts.split(",") if p.strip()]
    if wrong := [p for p in parts if p not in PARTS]:
        raise SystemExit(f"--parts: unknown {wrong}; known: {', '.join(PARTS)}")
    new = args.new_tokens if args.new_tokens is not None else (8 if args.tiny else 128)
    if PACKAGED.exists():
        wrong = mismatches_with_packaged(SHAPES["135m"])
        if wrong:
            raise SystemExit(f"the 135m shape differs from {PACKAGED}: {'; '.join(wrong)}")
        print(f"135m shape agrees with {PACKAGED}")
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    import transformers

    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    title = (f"gpu_check on {name}: {new} new tokens, greedy, ignore_eos, {dtype}; torch "
             f"{torch.__version__}, transformers {transformers.__version__}")  # fmt: skip
    print(title, flush=True)
    tokenizer_folder = args.tokenizer or TOKENIZER
    tokenizer = load_tokenizer(tokenizer_folder)
    started = time.perf_counter()
    rows: list[Row] = []

    def decode() -> None:
        for shape in shapes:
            rows.extend(check_model(shape, device, dtype, tokenizer, new))
            gc.collect()  # the model goes before the next one is made
            if device.type == "cuda":
                torch.cuda.empty_cache()
        print_table(rows, f"{title}; {time.perf_counter() - started:.0f} s")

    def commands() -> None:
        import pydantic  # noqa: F401  (the commands need all of mentor: fail early, clearly)

        from gpu_commands import command_rows, print_command_rows

        work = args.work or Path(tempfile.mkdtemp(prefix="mentor-gpu-check-"))
        student_shape, teacher_shape = ("tiny", "tiny") if args.tiny else ("135m", "1.7b")
        student = save_model_folder(student_shape, work / "student", tokenizer_folder, dtype)
        teacher = save_model_folder(teacher_shape, work / "teacher", tokenizer_folder, dtype)
        done = command_rows(student, teacher, str(device), work / "runs", args.tiny,
                            only=args.commands)  # fmt: skip
        print_command_rows(done, f"mentor's commands on {name} ({student_shape} student, "
                                 f"{teacher_shape} teacher, random weights)")  # fmt: skip
        results["commands"] = [asdict(r) for r in done]

    def quantize() -> None:
        from quantize_bench import GPU_ARMS, gpu_rows, print_gpu_rows

        arms = None if args.tiny or args.all_kernels else [a for a in GPU_ARMS if a[1] != "dequant"]
        done = gpu_rows(str(device), args.tiny, arms=arms, steps=None if args.tiny else 64)
        print(f"\nquantized decode, batch 1 (target: int4 <= 0.8x bf16, int8 <= 1.0x) on {name}")
        print_gpu_rows(done)
        results["quantize"] = done

    def train() -> None:
        from finetune_bench import checkpointing_rows, fsdp_rows
        from lora_profile import print_rows, profile_rows
        from qlora_bench import qlora_rows

        print(f"\nwhere a LoRA step's time goes, beside full fine-tuning, on {name}")
        profiled = profile_rows(str(device), args.tiny)
        print_rows(profiled)
        results["lora_profile"] = profiled
        for label, rows_of in [
            ("gradient checkpointing, LoRA step, SmolLM2-135M shape (CPU target: peak <= 0.6x)",
             checkpointing_rows),
            ("QLoRA against bf16 LoRA, Llama-2-7B shape, r=16 x 7 projections, 1,024 tokens, "
             "checkpointing (target: peak <= 12 GB)", qlora_rows),
            ("FSDP2 against DDP (one process per GPU)", fsdp_rows),
        ]:  # fmt: skip
            found = rows_of(str(device), args.tiny)
            print_dict_rows(found, f"{label}, {name}")
            results[label] = found

    def tests() -> None:
        import pytest  # noqa: F401  (carried with the wheels where the machine lacks it)

        from gpu_commands import ROOT, mentor_env

        files = ["tests/finetune/test_commands.py", "tests/distill/test_commands.py",
                 "tests/quantize/test_commands.py"]  # fmt: skip
        command = [sys.executable, "-m", "pytest", "-q", "-m", "e2e", "-p", "no:cacheprovider",
                   "--device", str(device), *files]  # fmt: skip
        print(f"\nend-to-end tests on {name}: {' '.join(command[1:])}", flush=True)
        done = subprocess.run(command, cwd=ROOT, env=mentor_env(), capture_output=True, text=True)
        tail = (done.stdout + done.stderr).strip().splitlines()[-15:]
        print("\n".join(f"  {line}" for line in tail))
        results["tests"] = {"returncode": done.returncode, "tail": tail}

    results: dict[str, Any] = {}
    parts_run = {
        "train": train, "quantize": quantize, "commands": commands, "decode": decode,
        "tests": tests,
    }  # fmt: skip
    for part, run in parts_run.items():
        spent = time.perf_counter() - started
        if part not in parts:
            continue
        if args.budget is not None and spent > args.budget:
            print(f"\n{part}: not run, {spent:.0f} s spent of the {args.budget:.0f} s budget "
                  f"(run it on its own: --parts {part})", flush=True)  # fmt: skip
            continue
        run_part(part, run)
        if args.out is not None:  # written after each part: a run cut short keeps what it got
            results["decode"] = [asdict(r) for r in rows]
            args.out.write_text(json.dumps(results, indent=2))
    print(f"\ngpu_check: {time.perf_counter() - started:.0f} s in all")


if __name__ == "__main__":
    main()
