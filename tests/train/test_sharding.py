"""FSDP2 (``strategy="fsdp"``): the same losses as DDP, sharded checkpoints that resume exactly,
whole weights back on return. FSDP2 runs on a CPU over gloo (torch 2.13), so the two-process
tests run here; a group of one (an in-memory store) covers the rest in this process."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from mentor.train.checkpoint import latest, trainable_state
from mentor.train.distributed import setup, teardown
from mentor.train.sharding import shard, transformer_blocks, unshard
from mentor.train.trainer import TrainSettings, read_metrics, train

sys.path.insert(0, str(Path(__file__).parent))
from test_trainer import _free_port, _InterruptError, _setup

SETTINGS = TrainSettings(
    max_steps=6, batch_size=2, lr=5e-3, save_every=2, eval_every=3, precision="fp32"
)


@pytest.fixture
def group() -> Iterator[None]:
    """A process group of one, as ``mentor finetune --strategy fsdp`` makes without torchrun."""
    setup("cpu", "fsdp")
    try:
        yield
    finally:
        teardown()


def _losses(out: Path) -> list[float]:
    return [m["loss"] for m in read_metrics(out / "metrics.jsonl")]


@pytest.mark.parametrize("method", ["lora", "full"])
def test_one_process_fsdp_takes_the_steps_ddp_takes(
    method: str, tmp_path: Path, group: None
) -> None:
    objective, rows, batch = _setup(method=method)
    plain = train(objective, rows, batch, SETTINGS, tmp_path / "ddp", val_rows=rows[:3])
    expected = trainable_state(objective)

    objective, rows, batch = _setup(method=method)
    fsdp = SETTINGS.model_copy(update={"strategy": "fsdp"})
    sharded = train(objective, rows, batch, fsdp, tmp_path / "fsdp", val_rows=rows[:3])
    assert _losses(tmp_path / "fsdp") == pytest.approx(_losses(tmp_path / "ddp"), rel=1e-6)
    assert sharded.best_val_loss == pytest.approx(plain.best_val_loss, rel=1e-6)
    # on return the weights are plain tensors again, named as a single process names them
    got = trainable_state(objective)
    assert got.keys() == expected.keys()
    for name, value in got.items():
        assert type(value) is torch.Tensor
        torch.testing.assert_close(value, expected[name], rtol=1e-5, atol=1e-6)
    best_ddp = load_file(str(tmp_path / "ddp" / "best.safetensors"))
    best_fsdp = load_file(str(tmp_path / "fsdp" / "best.safetensors"))
    assert best_fsdp.keys() == best_ddp.keys()
    for name, value in best_fsdp.items():
        torch.testing.assert_close(value, best_ddp[name], rtol=1e-5, atol=1e-6)
    folder = latest(tmp_path / "fsdp" / "checkpoints")
    assert folder is not None and (folder / "sharded" / ".metadata").exists()
    assert not (folder / "trainable.safetensors").exists()


def test_unshard_gives_back_the_module_as_it_was(group: None) -> None:
    objective, _, _ = _setup(method="lora")
    blocks = transformer_blocks(objective)
    assert [type(b).__name__ for b in blocks] == ["LlamaDecoderLayer"] * 2
    before = {name: p.detach().clone() for name, p in objective.named_parameters()}
    classes = {name: type(m) for name, m in objective.named_modules()}
    tied = objective.model.lm_head.weight is objective.model.model.embed_tokens.weight
    record = shard(objective, torch.device("cpu"), bf16=False)
    assert type(blocks[0]).__name__ == "FSDPLlamaDecoderLayer"
    assert type(next(objective.parameters())).__name__ == "DTensor"
    unshard(objective, record)
    assert {name: type(m) for name, m in objective.named_modules()} == classes
    assert not blocks[0]._forward_pre_hooks and not blocks[0]._forward_hooks
    after = dict(objective.named_parameters())
    assert after.keys() == before.keys()
    for name, value in after.items():
        assert type(value) is torch.nn.Parameter and torch.equal(value.detach(), before[name])
        assert value.requires_grad == ("lora_" in name)
    assert (objective.model.lm_head.weight is objective.model.model.embed_tokens.weight) == tied


def test_an_interrupted_fsdp_run_resumes_to_the_same_losses(tmp_path: Path, group: None) -> None:
    fsdp = SETTINGS.model_copy(update={"strategy": "fsdp"})
    objective, rows, batch = _setup(dropout=0.2)
    train(objective, rows, batch, fsdp, tmp_path / "full")
    final = trainable_state(objective)

    objective, rows, batch = _setup(dropout=0.2)
    calls = {"n": 0}

    def dying(r):  # type: ignore[no-untyped-def]
        calls["n"] += 1
        if calls["n"] == 5:  # mid-way through step 5, after the checkpoint of step 4
            raise _InterruptError
        return batch(r)

    with pytest.raises(_InterruptError):
        train(objective, rows, dying, fsdp, tmp_path / "cut")
    assert latest(tmp_path / "cut" / "checkpoints").name == "step-000004"  # type: ignore[union-attr]
    objective, rows, batch = _setup(dropout=0.2)  # a fresh model, a fresh random state
    torch.manual_seed(1234)
    resumed = train(objective, rows, batch, fsdp, tmp_path / "cut", resume=True)
    assert resumed.resumed_from == 4
    assert _losses(tmp_path / "cut") == pytest.approx(_losses(tmp_path / "full"), rel=1e-6)
    for name, value in trainable_state(objective).items():
        torch.testing.assert_close(value, final[name], rtol=1e-6, atol=1e-7)


def test_a_checkpoint_resumes_only_under_its_own_strategy(tmp_path: Path, group: None) -> None:
    objective, rows, batch = _setup()
    train(objective, rows, batch, SETTINGS.model_copy(update={"max_steps": 2}), tmp_path)
    objective, rows, batch = _setup()
    fsdp = SETTINGS.model_copy(update={"strategy": "fsdp"})
    with pytest.raises(ValueError, match="strategy ddp; resume it with --strategy ddp"):
        train(objective, rows, batch, fsdp, tmp_path, resume=True)


def test_fsdp_without_a_process_group_says_how_to_get_one(tmp_path: Path) -> None:
    objective, rows, batch = _setup()
    fsdp = SETTINGS.model_copy(update={"strategy": "fsdp"})
    with pytest.raises(ValueError, match="needs a process group"):
        train(objective, rows, batch, fsdp, tmp_path)


SCRIPT = textwrap.dedent(
    """
    import sys, torch
    from pathlib import Path
    from safetensors.torch import save_file
    from mentor.train.distributed import setup, teardown
    from mentor.train.checkpoint import trainable_state
    from mentor.train.trainer import TrainSettings, train
    out, strategy, method, die_at, resume, here = sys.argv[1:7]
    sys.path.insert(0, here)
    from test_trainer import _setup
    world, device = setup("cpu", strategy)
    objective, rows, batch = _setup(dropout=0.1, method=method)
    calls = {"n": 0}
    def dying(r):
        calls["n"] += 1
        if calls["n"] == int(die_at):
            raise SystemExit(3)
        return batch(r)
    settings = TrainSettings(
        max_steps=5, batch_size=1, lr=5e-3, save_every=2, eval_every=2, precision="fp32",
        strategy=strategy,
    )
    train(objective, rows, dying, settings, Path(out), val_rows=rows[:3], world=world,
          device=device, resume=resume == "1")
    if world.is_main:
        save_file(trainable_state(objective), out + "/final.safetensors")
    teardown()
    """
)


def _launch(
    tmp_path: Path, out: Path, strategy: str, method: str, die_at: int = 0, resume: bool = False
) -> subprocess.CompletedProcess[str]:
    script = tmp_path / "sharded_train.py"
    script.write_text(SCRIPT)
    return subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
         "--master_port", str(_free_port()), str(script), str(out), strategy, method,
         str(die_at), "1" if resume else "0", str(Path(__file__).parent)],
        env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True, timeout=300,
    )  # fmt: skip


@pytest.mark.slow
@pytest.mark.parametrize("method", ["lora", "full"])
def test_two_processes_fsdp_match_ddp(method: str, tmp_path: Path) -> None:
    for strategy in ("ddp", "fsdp"):
        done = _launch(tmp_path, tmp_path / strategy, strategy, method)
        assert done.returncode == 0, done.stderr[-3000:]
    ddp, fsdp = (read_metrics(tmp_path / s / "metrics.jsonl") for s in ("ddp", "fsdp"))
    assert len(ddp) == len(fsdp) == 5
    for key in ("loss", "grad_norm"):  # the clipped norm is over both processes' shards
        assert [m[key] for m in fsdp] == pytest.approx([m[key] for m in ddp], rel=1e-5)
    # validation: 3 rows on 2 processes, one batch more on process 0, and no hang
    assert [m["val_loss"] for m in fsdp if "val_loss" in m] == pytest.approx(
        [m["val_loss"] for m in ddp if "val_loss" in m], rel=1e-5
    )
    for name in ("final.safetensors", "best.safetensors"):
        a = load_file(str(tmp_path / "ddp" / name))
        b = load_file(str(tmp_path / "fsdp" / name))
        assert a.keys() == b.keys()
        for key in a:
            torch.testing.assert_close(b[key], a[key], rtol=1e-4, atol=1e-5)


@pytest.mark.slow
def test_two_processes_fsdp_resume_after_a_crash(tmp_path: Path) -> None:
    whole = _launch(tmp_path, tmp_path / "whole", "fsdp", "lora")
    assert whole.returncode == 0, whole.stderr[-3000:]
    # each process collates one batch a step and two for the validation after step 2: call 6
    # is step 4's, after checkpoint 2 is written and before checkpoint 4 is
    cut = _launch(tmp_path, tmp_path / "cut", "fsdp", "lora", die_at=6)
    assert cut.returncode != 0
    assert latest(tmp_path / "cut" / "checkpoints").name == "step-000002"  # type: ignore[union-attr]
    resumed = _launch(tmp_path, tmp_path / "cut", "fsdp", "lora", resume=True)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert _losses(tmp_path / "cut") == pytest.approx(_losses(tmp_path / "whole"), rel=1e-6)
    a = load_file(str(tmp_path / "whole" / "final.safetensors"))
    b = load_file(str(tmp_path / "cut" / "final.safetensors"))
    for key in a:
        torch.testing.assert_close(b[key], a[key], rtol=1e-6, atol=1e-7)
