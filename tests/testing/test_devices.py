"""The fake CUDA device: it fails where a real GPU fails and computes what the CPU computes."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mentor.testing import fake_cuda, on_fake_cuda, tiny_llama
from mentor.testing.devices import device_unavailable

MIXED = "Expected all tensors to be on the same device"


def test_factories_and_moves_land_on_the_fake_device() -> None:
    with fake_cuda() as cuda:
        made = [
            torch.zeros(3, device="cuda"),
            torch.arange(3, device=cuda),
            torch.tensor([1, 2], device=cuda),
            torch.ones(2).to(cuda),
            torch.ones(2).cuda(),
            torch.ones(2).to("cuda:0", torch.float16),
            torch.ones(2).to(torch.zeros(1, device=cuda)),
        ]
        for x in made:
            assert x.device == cuda and on_fake_cuda(x)
        assert made[5].dtype == torch.float16
        back = made[0].cpu()
        assert back.device.type == "cpu" and not on_fake_cuda(back)
        assert not on_fake_cuda(made[1].to("cpu"))


def test_mixing_devices_fails_as_on_a_gpu() -> None:
    with fake_cuda() as cuda:
        x = torch.arange(4.0, device=cuda)
        with pytest.raises(RuntimeError, match=MIXED):
            x + torch.ones(4)
        with pytest.raises(RuntimeError, match=MIXED):
            x.gather(0, torch.tensor([0, 1]))
        with pytest.raises(RuntimeError, match=MIXED):
            torch.cat([x, torch.ones(1)])
        with pytest.raises(TypeError, match="numpy"):
            np.asarray(x)
        with pytest.raises(RuntimeError, match="indices should be"):
            torch.ones(4)[torch.tensor([0], device=cuda)]


def test_what_a_gpu_allows_works() -> None:
    with fake_cuda() as cuda:
        x = torch.arange(4.0, device=cuda)
        assert (x + torch.tensor(1.0)).tolist() == [1.0, 2.0, 3.0, 4.0]  # a 0-dim cpu scalar
        assert x[torch.tensor([True, False, True, False])].tolist() == [0.0, 2.0]  # cpu mask
        assert x[torch.tensor([3, 0])].tolist() == [3.0, 0.0]  # cpu ids
        x[torch.tensor([0])] = 9.0
        assert x[1:].device == cuda and float(x.sum()) == 15.0 and int(x[0]) == 9
        host = torch.zeros(4)
        host.copy_(x)  # a copy across devices
        assert host.tolist() == [9.0, 1.0, 2.0, 3.0] and x.cpu().numpy().shape == (4,)


def test_a_model_on_the_fake_device_computes_the_cpu_logits() -> None:
    model, _ = tiny_llama()
    ids = torch.tensor([[5, 6, 7, 8]])
    with torch.no_grad():
        expected = model(input_ids=ids).logits
    with fake_cuda() as cuda:
        model.to(cuda)
        assert all(on_fake_cuda(p) for p in model.parameters())
        with pytest.raises(RuntimeError, match=MIXED):
            model(input_ids=ids)  # the batch was left on the cpu
        logits = model(input_ids=ids.to(cuda)).logits
        assert on_fake_cuda(logits)
        torch.testing.assert_close(logits.cpu(), expected)


def test_autograd_is_refused_rather_than_aborting() -> None:
    model, _ = tiny_llama()
    with fake_cuda() as cuda:
        model.to(cuda)
        with torch.enable_grad(), pytest.raises(RuntimeError, match="inference only"):
            model(input_ids=torch.tensor([[5, 6]], device=cuda))


def test_why_a_test_device_is_unavailable(monkeypatch: pytest.MonkeyPatch) -> None:
    assert device_unavailable("cpu") is None
    assert "not a device" in str(device_unavailable("gpu"))
    assert "cpu, cuda or mps" in str(device_unavailable("meta"))
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert device_unavailable("cuda") == "--device cuda: no CUDA device here"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert device_unavailable("cuda:1") is None
    assert device_unavailable("cuda:2") == "--device cuda:2: only 2 CUDA device(s) here"


def test_sampling_wants_a_generator_on_the_device() -> None:
    probs = torch.tensor([0.1, 0.2, 0.3, 0.4])
    expected = torch.multinomial(probs, 8, True, generator=torch.Generator().manual_seed(3))
    with fake_cuda() as cuda:
        on_gpu = probs.to(cuda)
        with pytest.raises(RuntimeError, match="'cuda' device type for generator"):
            torch.multinomial(on_gpu, 1, generator=torch.Generator().manual_seed(3))
        generator = torch.Generator(device=cuda).manual_seed(3)
        got = torch.multinomial(on_gpu, 8, True, generator=generator)
    assert on_fake_cuda(got) and got.tolist() == expected.tolist()
    assert type(torch.Generator()) is torch._C.Generator  # put back on the way out
