"""The measurement: byte counts, the speed protocol, and the report's ratios and rendering."""

from __future__ import annotations

import math
from typing import Any

import pytest
import torch

from mentor.evaluate.compare import MetricChange
from mentor.quantize.convert import pack_for_device, quantize_model
from mentor.quantize.report import (
    Measurement,
    QuantizeReport,
    fp32_file_bytes,
    measure_speed,
    memory_bytes,
)
from mentor.testing import tiny_llama, tiny_qwen2


def test_byte_counts_count_a_tied_matrix_once_and_see_the_quantized_widths() -> None:
    model, _ = tiny_llama()  # tied head
    n_params = sum(p.numel() for p in model.parameters())  # parameters() already dedups
    assert memory_bytes(model) == 4 * n_params + 4 * model.model.rotary_emb.inv_freq.numel() * 2
    assert fp32_file_bytes(model) == 4 * n_params + 0  # inv_freq is not persistent
    linear = sum(
        m.weight.numel()
        for m in model.modules()
        if type(m) is torch.nn.Linear and m is not model.lm_head  # the tied head stays fp32
    )
    before = fp32_file_bytes(model)
    quantize_model(model, "int8")
    # each linear weight: 4 bytes -> 1 byte plus one fp32 scale per output row
    rows = sum(m.scale.numel() for m in model.modules() if hasattr(m, "scale"))
    assert fp32_file_bytes(model) == before - 3 * linear + 4 * rows


def test_packing_for_the_cpu_keeps_one_copy_of_the_int4_weights() -> None:
    model, _ = tiny_qwen2()
    quantize_model(model, "int4", 32)
    before = memory_bytes(model)
    if "int4:cpu" not in pack_for_device(model):
        pytest.skip("no CPU int4 kernel here")
    after = memory_bytes(model)
    # codes keep their size; fp32 scale+offset pairs (8 bytes) become one bf16 pair (4 bytes)
    assert after < before and after > 0.8 * before


def test_speed_generates_exactly_the_tokens_asked() -> None:
    from mentor.models.engine import HFEngine

    model, tok = tiny_llama()
    calls: list[list[int]] = []
    original = HFEngine.generate

    def counting(self: HFEngine, requests: Any, **kwargs: Any) -> Any:
        out = original(self, requests, **kwargs)
        calls.append([c.completion_tokens for c in out])
        return out

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(HFEngine, "generate", counting)
        speed = measure_speed(model, tok, prompts=["hello", "a longer prompt here"], new_tokens=5)
    # warm-up, one prompt at a time, then both in one batch: every row exactly the tokens asked
    assert calls == [[4], [5], [5], [5, 5]]
    assert speed.prompts == 2 and speed.new_tokens == 5
    assert speed.latency_ms_per_token > 0 and speed.tokens_per_s > 0
    with pytest.raises(ValueError, match="at least one prompt"):
        measure_speed(model, tok, prompts=[], new_tokens=5)


def _measurement(label: str, disk: int, tps: float, ppl: float) -> Measurement:
    return Measurement(label, disk, disk + 10, 1000 / tps, tps, ppl, None)


def test_report_ratios_target_and_markdown() -> None:
    change = MetricChange("token_f1", base=0.5, tuned=0.48, change=-0.02, low=-0.05, high=0.01)
    report = QuantizeReport(
        model="smollm2",
        method="int8",
        group_size=None,
        smooth_alpha=0.5,
        adapter=None,
        layers=210,
        fallback_note=None,
        reference=_measurement("fp32", 1000, 10.0, 10.0),
        quantized=_measurement("int8", 400, 15.0, 10.05),
        task_changes=[change],
        n_eval=20,
        new_tokens=32,
        device="cpu",
    )
    assert report.disk_ratio == 2.5
    assert report.speedup == 1.5
    assert math.isclose(report.perplexity_change, 0.005)
    assert report.meets_target
    data = report.to_dict()
    assert data["meets_target"] and data["quantized"]["perplexity"] == 10.05
    assert data["task_changes"][0]["name"] == "token_f1"
    md = report.to_markdown()
    assert "| perplexity | 10.000 | 10.050 | +0.50% |" in md
    assert "| token_f1 | 0.500 | 0.480 | -0.020" in md and "meets" in md
    worse = QuantizeReport(**{**vars(report), "quantized": _measurement("int8", 400, 15, 10.2)})
    assert not worse.meets_target and "misses" in worse.to_markdown()
