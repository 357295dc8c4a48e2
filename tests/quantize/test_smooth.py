"""SmoothQuant factors against a numpy reference, the calibration hooks, and the point of it all:
a planted outlier channel costs int8 much less once smoothed."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mentor.quantize.convert import plan_layers, quantize_model
from mentor.quantize.int8 import Int8Linear
from mentor.quantize.smooth import (
    calibration_sample,
    input_maxima,
    smoothing,
    smoothing_factors,
)
from mentor.testing import tiny_llama


def test_factors_match_the_numpy_reference_and_balance_at_one_half() -> None:
    gen = torch.Generator().manual_seed(0)
    act = torch.rand(24, generator=gen) * 10
    act[5] = 300.0  # an outlier channel
    weight = torch.randn(16, 24, generator=gen)
    for alpha in (0.0, 0.5, 0.8, 1.0):
        got = smoothing_factors(act, weight, alpha)
        w_max = np.abs(weight.numpy()).max(axis=0)
        expected = act.numpy() ** alpha / w_max ** (1 - alpha)
        np.testing.assert_allclose(got.numpy(), expected, rtol=1e-5)
    s = smoothing_factors(act, weight, 0.5)
    # alpha = 0.5: each channel's input peak and weight peak end up equal
    torch.testing.assert_close(act / s, (weight * s).abs().amax(dim=0))
    zero = smoothing_factors(torch.zeros(24), weight, 0.5)
    assert bool(torch.isfinite(zero).all()) and bool((zero > 0).all())  # a dead channel
    with pytest.raises(ValueError, match=r"alpha must be in \[0, 1\]"):
        smoothing_factors(act, weight, 1.5)
    with pytest.raises(ValueError, match="input maxima for a weight"):
        smoothing_factors(act[:5], weight, 0.5)


def test_smoothing_preserves_the_function_up_to_rounding() -> None:
    gen = torch.Generator().manual_seed(1)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(1)
        linear = torch.nn.Linear(32, 16)
    smooth = torch.rand(32, generator=gen) + 0.5  # factors in [0.5, 1.5)
    layer = Int8Linear.from_linear(linear, smooth)
    assert layer.smooth is not None and set(layer.state_dict()) >= {"smooth"}
    torch.testing.assert_close(layer.dequantized_weight(), linear.weight, atol=0.02, rtol=0)
    x = torch.randn(5, 32, generator=gen)
    with torch.no_grad():
        ref = linear(x)
    assert float((layer(x) - ref).norm() / ref.norm()) < 0.03


def test_calibration_records_each_layers_input_peak_per_channel() -> None:
    model, tok = tiny_llama()
    path = "model.layers.1.mlp.down_proj"
    text = "the quick brown fox jumps over the lazy dog " * 20
    maxima = input_maxima(model, tok, text, [path, "lm_head"], seq_len=64)
    seen: list[torch.Tensor] = []
    handle = model.get_submodule(path).register_forward_hook(
        lambda _m, inputs, _o: seen.append(inputs[0].reshape(-1, 128).abs().amax(0))
    )
    ids = tok(text, add_special_tokens=False)["input_ids"]
    with torch.no_grad():
        for start in range(0, len(ids), 64):
            model(input_ids=torch.tensor([ids[start : start + 64]]))
    handle.remove()
    torch.testing.assert_close(maxima[path], torch.stack(seen).amax(0))
    assert maxima["lm_head"].shape == (64,)
    with pytest.raises(ValueError, match="at least 2 tokens"):
        input_maxima(model, tok, "", [path])


def test_smoothing_rescues_int8_from_a_planted_outlier_channel() -> None:
    def model_with_outliers() -> torch.nn.Module:
        model, _ = tiny_llama()
        with torch.no_grad():
            for layer in model.model.layers:  # one loud channel into q/k/v and gate/up
                layer.input_layernorm.weight[7] *= 80
                layer.post_attention_layernorm.weight[7] *= 80
        return model

    _, tok = tiny_llama()
    ids = torch.randint(0, len(tok), (2, 32), generator=torch.Generator().manual_seed(0))
    errors = {}
    for smoothed in (False, True):
        model = model_with_outliers()
        with torch.no_grad():
            ref = model(ids).logits
        plans = plan_layers(model, "int8")
        factors = smoothing(model, tok, plans, calibration_sample()) if smoothed else None
        plans = quantize_model(model, "int8", smooth=factors)
        assert all(p.smoothed == smoothed for p in plans)
        with torch.no_grad():
            errors[smoothed] = float((model(ids).logits - ref).norm() / ref.norm())
    assert errors[True] < 0.5 * errors[False], errors
