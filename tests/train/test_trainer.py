"""The trainer: schedule, data order, learning, exact resume, divergence, early stopping, DDP."""

from __future__ import annotations

import itertools
import math
import os
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from torch import nn

from mentor.testing import tiny_llama
from mentor.train import trainer as trainer_module
from mentor.train.checkpoint import latest, step_dirs, trainable_state
from mentor.train.data import chat_example, collate, pack
from mentor.train.distributed import World
from mentor.train.lora import LoRAConfig, add_lora, mark_trainable
from mentor.train.objectives import CausalLMLoss
from mentor.train.trainer import (
    TrainingDivergedError,
    TrainSettings,
    epoch_order,
    lr_factor,
    read_metrics,
    step_rows,
    train,
)

WORDS = [
    "river",
    "stone",
    "cloud",
    "maple",
    "lantern",
    "copper",
    "meadow",
    "harbor",
    "violet",
    "ember",
]


def _rows(tokenizer, n: int = 24, seq_len: int = 96):  # type: ignore[no-untyped-def]
    examples = []
    for i in range(n):
        question = f"name item {i}"
        answer = " ".join(WORDS[(i + j) % len(WORDS)] for j in range(3 + i % 4))
        messages = [{"role": "user", "content": question}, {"role": "assistant", "content": answer}]
        examples.append(chat_example(messages, tokenizer, max_length=seq_len))
    return pack(examples, seq_len)


def _setup(dropout: float = 0.1, method: str = "lora"):  # type: ignore[no-untyped-def]
    model, tokenizer = tiny_llama(seed=0)
    if method == "lora":
        torch.manual_seed(0)  # A's random init, the same in every process
        add_lora(model, LoRAConfig(r=4, alpha=8, dropout=dropout))
        mark_trainable(model, "default")
    rows = _rows(tokenizer)

    def batch(r):  # type: ignore[no-untyped-def]
        return collate(r, tokenizer.pad_token_id)

    return CausalLMLoss(model), rows, batch


SETTINGS = TrainSettings(
    epochs=6, batch_size=2, lr=5e-3, save_every=4, eval_every=100, precision="fp32"
)


def test_lr_schedule_reference_values() -> None:
    factors = [lr_factor(s, warmup_steps=2, total_steps=10, min_ratio=0.1) for s in range(10)]
    assert factors[:2] == [0.5, 1.0]
    assert factors[2] == pytest.approx(1.0)
    assert factors[-1] == pytest.approx(0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * 7 / 8)))
    assert all(a >= b for a, b in itertools.pairwise(factors[1:]))
    assert lr_factor(10, 2, 10, 0.1) == pytest.approx(0.1)


def test_data_order_is_seeded_and_ranks_split_the_doubled_batch() -> None:
    order = epoch_order(20, seed=3, epoch=1)
    assert order == epoch_order(20, seed=3, epoch=1) != epoch_order(20, seed=3, epoch=2)
    assert sorted(order) == list(range(20))
    one = step_rows(order, 1, 8, TrainSettings(batch_size=4, grad_accum=2), World())
    two = [
        step_rows(order, 1, 8, TrainSettings(batch_size=2, grad_accum=2), World(rank, 2))
        for rank in (0, 1)
    ]
    for a in range(2):
        assert one[a] == two[0][a] + two[1][a]
    assert [i for micro in one for i in micro] == order[8:16]


@pytest.mark.parametrize(("method", "share"), [("full", 0.5), ("lora", 0.95)])
def test_training_lowers_the_loss_and_writes_its_outputs(
    method: str, share: float, tmp_path: Path
) -> None:
    # a random 64-wide model with frozen random embeddings learns slowly through rank-4 LoRA
    objective, rows, batch = _setup(method=method)
    settings = SETTINGS.model_copy(update={"lr": 3e-3 if method == "full" else 5e-3})
    result = train(objective, rows, batch, settings, tmp_path, val_rows=rows[:3])
    metrics = read_metrics(tmp_path / "metrics.jsonl")
    assert len(metrics) == result.steps == 6 * (len(rows) // 2)
    assert metrics[-1]["loss"] < share * metrics[0]["loss"]
    assert "val_loss" in metrics[-1]
    assert (tmp_path / "loss_curve.png").read_bytes()[:4] == b"\x89PNG"
    assert [p.name for p in step_dirs(tmp_path / "checkpoints")][-1] == f"step-{result.steps:06d}"
    assert len(step_dirs(tmp_path / "checkpoints")) == SETTINGS.keep
    assert result.tokens_per_s > 0


class _InterruptError(Exception):
    pass


def test_resume_continues_to_the_same_losses(tmp_path: Path) -> None:
    objective, rows, batch = _setup(dropout=0.2)
    full = train(objective, rows, batch, SETTINGS, tmp_path / "full")
    expected = [m["loss"] for m in read_metrics(tmp_path / "full" / "metrics.jsonl")]
    final = trainable_state(objective)

    objective, rows, batch = _setup(dropout=0.2)
    calls = {"n": 0}

    def dying(r):  # type: ignore[no-untyped-def]
        calls["n"] += 1
        if calls["n"] == 15:  # mid-way through step 15, after the checkpoint of step 12
            raise _InterruptError
        return batch(r)

    with pytest.raises(_InterruptError):
        train(objective, rows, dying, SETTINGS, tmp_path / "cut")
    assert latest(tmp_path / "cut" / "checkpoints").name == "step-000012"  # type: ignore[union-attr]
    objective, rows, batch = _setup(dropout=0.2)  # a fresh process: new model, new RNG
    torch.manual_seed(1234)
    resumed = train(objective, rows, batch, SETTINGS, tmp_path / "cut", resume=True)
    assert resumed.resumed_from == 12 and resumed.steps == full.steps
    got = [m["loss"] for m in read_metrics(tmp_path / "cut" / "metrics.jsonl")]
    assert got == pytest.approx(expected, rel=1e-6, abs=1e-7)
    for name, value in trainable_state(objective).items():
        torch.testing.assert_close(value, final[name], rtol=1e-6, atol=1e-7)


def test_resume_refuses_other_settings(tmp_path: Path) -> None:
    objective, rows, batch = _setup()
    train(objective, rows, batch, SETTINGS.model_copy(update={"max_steps": 4}), tmp_path)
    with pytest.raises(ValueError, match="other settings"):
        train(
            objective, rows, batch, SETTINGS.model_copy(update={"lr": 1e-3}), tmp_path, resume=True
        )


class _NaNAfter(nn.Module):
    def __init__(self, inner: nn.Module, step: int) -> None:
        super().__init__()
        self.inner, self.step, self.calls = inner, step, 0

    def forward(self, **kw):  # type: ignore[no-untyped-def]
        self.calls += 1
        loss = self.inner(**kw)
        return loss * float("nan") if self.calls >= self.step else loss


def test_nan_stops_and_keeps_the_last_good_checkpoint(tmp_path: Path) -> None:
    objective, rows, batch = _setup()
    with pytest.raises(TrainingDivergedError, match=r"step 7: the loss became nan.*step-000004"):
        train(_NaNAfter(objective, 7), rows, batch, SETTINGS, tmp_path)
    good = latest(tmp_path / "checkpoints")
    assert good is not None and good.name == "step-000004"
    saved = load_file(str(good / "trainable.safetensors"))
    assert all(torch.isfinite(t).all() for t in saved.values())


def test_early_stopping_restores_the_best_weights(tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    objective, rows, batch = _setup()
    losses = iter([3.0, 2.0, 2.5, 2.6, 9.9, 9.9])
    monkeypatch.setattr(trainer_module, "validation_loss", lambda *a, **k: next(losses))
    settings = SETTINGS.model_copy(update={"eval_every": 2, "patience": 2})
    result = train(objective, rows, batch, settings, tmp_path, val_rows=rows[:2])
    assert result.stopped_early and result.steps == 8
    assert result.best_step == 4 and result.best_val_loss == 2.0
    best = load_file(str(tmp_path / "best.safetensors"))
    for name, value in trainable_state(objective).items():
        assert torch.equal(value, best[name])


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


DDP_SCRIPT = textwrap.dedent(
    """
    import sys, torch
    from pathlib import Path
    from safetensors.torch import save_file
    from mentor.train.distributed import setup, teardown
    from mentor.train.checkpoint import trainable_state
    from mentor.train.trainer import TrainSettings, train
    sys.path.insert(0, sys.argv[3])
    from test_trainer import _setup
    world, device = setup("cpu")
    objective, rows, batch = _setup(dropout=0.0)
    settings = TrainSettings(max_steps=4, batch_size=int(sys.argv[2]), lr=5e-3, precision="fp32")
    result = train(objective, rows, batch, settings, Path(sys.argv[1]), world=world, device=device)
    if world.is_main:
        save_file(trainable_state(objective), sys.argv[1] + "/final.safetensors")
    teardown()
    """
)


@pytest.mark.slow
def test_two_processes_match_one_with_the_doubled_batch(tmp_path: Path) -> None:
    script = tmp_path / "ddp_train.py"
    script.write_text(DDP_SCRIPT)
    here = str(Path(__file__).parent)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    single = subprocess.run(
        [sys.executable, str(script), str(tmp_path / "one"), "4", here],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert single.returncode == 0, single.stderr[-3000:]
    launched = subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--nproc_per_node",
            "2",
            "--master_port",
            str(_free_port()),
            str(script),
            str(tmp_path / "two"),
            "2",
            here,
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert launched.returncode == 0, launched.stderr[-3000:]
    one = [m["loss"] for m in read_metrics(tmp_path / "one/metrics.jsonl")]
    two = [m["loss"] for m in read_metrics(tmp_path / "two/metrics.jsonl")]
    assert len(one) == len(two) == 4
    assert two == pytest.approx(one, rel=1e-4)
    a = load_file(str(tmp_path / "one/final.safetensors"))
    b = load_file(str(tmp_path / "two/final.safetensors"))
    for name in a:
        torch.testing.assert_close(b[name], a[name], rtol=1e-4, atol=1e-5)
