"""The bakeoff report: the Pareto front, the self-contained HTML page and the terminal summary."""

from __future__ import annotations

import random
import re
from dataclasses import replace
from pathlib import Path

import pytest
from rich.console import Console

from mentor.bakeoff.report import pareto_front, print_summary, summary_table, write_html
from mentor.bakeoff.results import (
    ArmResult,
    BakeoffResult,
    Costs,
    Estimate,
    Grounding,
    Reference,
    ScoredAnswer,
    Verdict,
    Watch,
)

GROUNDING = Grounding(0.8, 0.05, 0.85, "lexical support of content words in the passages")


def _arm(
    name: str, model: str, f1: float, p95: float, yearly: float, **fields: object
) -> ArmResult:
    arm = ArmResult(
        name=name,
        model=model,
        methods=["rag"] if "rag" in name else ["prompting"],
        description=f"{name} arm",
        questions=40,
        quality={
            "token_f1": Estimate(f1, f1 - 0.05, f1 + 0.05),
            "contains": Estimate(f1 + 0.1, f1, f1 + 0.2),
        },
        grounding=GROUNDING,
        latency_ms={"p50": p95 / 2, "p95": p95, "mean": p95 / 2, "queries": 8},
        peak_memory_mb=900.0,
        costs=Costs(training_usd=0.1, serve_usd_per_1k=0.05, yearly_usd=yearly, usd_per_point=2.5),
        groups={"seen": {"token_f1": f1 + 0.1, "n": 10}, "unseen": {"token_f1": f1 - 0.1, "n": 30}},
        answers=[
            ScoredAnswer(f"{name}-{i}", f"question {i}?", "2016", "It was 2016.", {"token_f1": 0.5})
            for i in range(12)
        ],
    )
    return replace(arm, **fields)  # type: ignore[arg-type]


def _result() -> BakeoffResult:
    curve = [{"step": 1.0, "loss": 2.0}, {"step": 2.0, "loss": 1.5, "val_loss": 1.7}]
    arms = [
        _arm("closed-book", "base", 0.30, 400.0, 50.0),
        _arm("rag", "base", 0.55, 900.0, 120.0, vs_base=Estimate(25.0, 18.0, 31.0)),
        _arm("lora", "lora", 0.40, 420.0, 90.0, vs_base=Estimate(10.0, -2.0, 20.0), curve=curve),
        _arm("lora+rag", "lora", 0.58, 950.0, 160.0, curve=curve, training_s=300.0),
        ArmResult("int4", "base", ["quantization"], "quantized", "failed", error="OOM <boom>"),
    ]
    arms[1].answers[0] = ScoredAnswer("x", "<script>alert(1)</script>", "ref", "a <b>", {})
    verdict = Verdict(
        arm="rag",
        methods=["rag"],
        paragraph="Use retrieval: it gains 25 points at a modest cost.",
        reasons=["rag beats the base by 25 points"],
        fallback="closed-book if the index is unavailable",
        fallback_arm="closed-book",
        monitoring=[Watch("p95 latency", "> 2 s", "add a replica")],
        advisor_methods=["rag"],
        advisor_summary="Documents change monthly: retrieval fits.",
        agrees=True,
        eligible=["rag", "lora"],
        excluded={"lora+rag": "p95 over the latency budget"},
    )
    return BakeoffResult(
        name="tidepool",
        profile="quick",
        primary="token_f1",
        metrics=["token_f1", "contains"],
        base="closed-book",
        arms=arms,
        verdict=verdict,
        references=[Reference("majority class", "accuracy", 0.552, "https://example.org/paper")],
        data={"docs": 12, "train": 80, "test": 40},
        machine={"cpu": "test cpu", "threads": 2},
        started="2025-01-01T00:00:00",
        seconds=321.0,
        notes=["synthetic result for the tests"],
    )


def _dominated(points: list[tuple[float, float]], i: int) -> bool:
    c, q = points[i]
    return any(c2 <= c and q2 >= q and (c2, q2) != (c, q) for c2, q2 in points)


@pytest.mark.parametrize(
    ("points", "front"),
    [
        ([], []),
        ([(1.0, 0.5)], [0]),
        ([(1.0, 0.5), (2.0, 0.4), (3.0, 0.9), (0.5, 0.2)], [3, 0, 2]),  # (2, 0.4) is dominated
        ([(1.0, 0.5), (1.0, 0.5), (2.0, 0.5)], [0, 1]),  # twins both stay; dearer tie drops
        ([(1.0, 0.4), (1.0, 0.6)], [1]),  # same cost: the better one
    ],
)
def test_pareto_front(points: list[tuple[float, float]], front: list[int]) -> None:
    assert pareto_front(points) == front


def test_pareto_front_matches_brute_force() -> None:
    rng = random.Random(0)
    for _ in range(200):
        points = [(float(rng.randint(0, 5)), float(rng.randint(0, 5))) for _ in range(8)]
        expected = {i for i in range(len(points)) if not _dominated(points, i)}
        front = pareto_front(points)
        assert set(front) == expected
        assert [points[i][0] for i in front] == sorted(points[i][0] for i in front)


def test_html_is_self_contained_and_complete(tmp_path: Path) -> None:
    path = write_html(_result(), tmp_path / "out" / "report.html")
    page = path.read_text()
    assert path.exists() and page.startswith("<!DOCTYPE html>")
    assert "<script" not in page and "<link" not in page
    assert all(target.startswith("data:") for target in re.findall(r'(?:src|href)="([^"]*)"', page))
    for name in ("closed-book", "rag", "lora", "lora+rag", "int4"):
        assert f"<td>{name}" in page or f"★ {name}" in page
    assert '<tr class="recommended"><td>★ rag' in page
    assert '<tr class="failed"><td>int4' in page and "OOM &lt;boom&gt;" in page
    assert "Use retrieval: it gains 25 points at a modest cost." in page
    assert "add a replica" in page and "p95 over the latency budget" in page
    assert page.count('<img src="data:image/png;base64,') == 3
    assert "55.0%" in page and "55.2%" in page  # rag's f1 beside the published figure
    assert "+25.0*" in page and "+10.0<" in page  # only the first interval excludes zero
    assert "unseen" in page and "(n 30)" in page
    assert "synthetic result for the tests" in page and "lexical support" in page


def test_html_escapes_answers(tmp_path: Path) -> None:
    page = write_html(_result(), tmp_path / "report.html").read_text()
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "a &lt;b&gt;" in page
    assert page.count("<details>") == 4  # the failed arm has no answers
    assert "rag: 10 of 12 answers" in page


def test_curves_chart_is_skipped_without_curves(tmp_path: Path) -> None:
    result = _result()
    result.arms = [replace(a, curve=[]) for a in result.arms]
    result.verdict, result.references = None, []
    page = write_html(result, tmp_path / "report.html").read_text()
    assert page.count('<img src="data:image/png;base64,') == 2
    assert "Training curves" not in page and "None was made" in page


def test_summary_table_and_print(tmp_path: Path) -> None:
    result = _result()
    table = summary_table(result)
    assert table.row_count == len(result.arms)
    console = Console(record=True, width=200)
    print_summary(result, console, tmp_path / "report.html")
    text = console.export_text()
    assert "★ rag" in text and "failed: OOM <boom>" in text
    assert "Use retrieval" in text and "fallback: closed-book" in text
    assert "watch p95 latency (> 2 s): add a replica" in text
    assert f"report: {tmp_path / 'report.html'}" in text
