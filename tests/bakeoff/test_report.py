"""The bakeoff report: the Pareto front, the self-contained HTML page and the terminal summary."""

from __future__ import annotations

import random
import re
import shutil
import subprocess
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


# --- the first screen: 80 columns, 1,280 pixels, arms that did not learn ---------------------

FAILED_CURVE = [
    {"step": 1.0, "loss": 1.9},
    {"step": 10.0, "loss": 0.7, "val_loss": 2.6},
    {"step": 12.0, "loss": 0.5, "val_loss": 6.7},
]


def _demo_result() -> BakeoffResult:
    """The quick profile's shape: long arm names, a failed arm, one that did not learn."""
    result = _result()
    long_description = "smollm2-135m-instruct + LoRA adapter; sequence distillation: " * 4
    distilled = _arm(
        "distilled+rag-int8",
        "distilled",
        0.20,
        900.0,
        80.0,
        methods=["distillation", "rag", "quantization"],
        description=long_description,
        vs_base=Estimate(-10.0, -20.0, 0.0),
        updates=Estimate(0.25, 0.0, 0.5),
        curve=FAILED_CURVE,
    )
    result.arms.insert(4, distilled)
    result.config = {
        "models": {"base": "smollm2-135m-instruct"},
        "training": {"distilled": {"method": "distill", "teacher_limit": 60}},
        "profiles": {"quick": {"training.distilled.teacher_limit": 60}, "full": {}},
    }
    return result


@pytest.mark.parametrize("width", [80, 99, 100, 120])
def test_the_terminal_summary_fits_its_width_and_never_cuts_a_name(
    tmp_path: Path, width: int
) -> None:
    from rich.cells import cell_len

    result = _demo_result()
    console = Console(width=width, record=True)
    print_summary(result, console, tmp_path / "report.html")
    text = console.export_text()
    lines = text.splitlines()
    assert max(cell_len(line) for line in lines) <= width
    assert "…" not in text  # no header, name or figure is cut
    table = text.split("! distilled+rag-int8 did not learn")[0]
    for arm in result.arms:
        assert arm.name in table
    assert "★ rag" in table and "✗ int4" in table and "! distilled+rag-int8" in table
    flat = " ".join(text.split())  # the explanations wrap at the console's width
    assert "✗ int4 failed: OOM <boom>" in flat
    assert "validation loss rose from 2.6 to 6.7" in flat and "teacher_limit=60" in flat
    if width < 100:  # short headers and a legend
        assert "score: token_f1" in flat and "Δ pts: points over closed-book" in flat
    if width == 120:  # every interval, and a status column
        assert "token_f1" in table and "[95% CI]" in table and "[-20.0, +0.0]" in table
        assert "did not learn" in table


def test_the_html_arms_table_is_short_and_says_which_arm_did_not_learn(tmp_path: Path) -> None:
    page = write_html(_demo_result(), tmp_path / "report.html").read_text()
    assert ".scroll { max-width: 100%; overflow-x: auto; }" in page
    assert page.count('<div class="scroll"><table>') == page.count("<table>")
    shorts = re.findall(r'<td class="short"><span title="[^"]*">([^<]*)</span></td>', page)
    assert shorts and max(len(s) for s in shorts) <= 40  # the long description is not in a cell
    assert "distillation + rag + quantization" in shorts
    assert '<details class="arms"><summary>What each arm is</summary>' in page
    assert "<dt>distilled+rag-int8</dt><dd>smollm2-135m-instruct + LoRA adapter;" in page
    assert '<tr class="unlearned"><td>distilled+rag-int8' in page
    assert '<a href="#not-learned">did&nbsp;not&nbsp;learn</a>' in page
    assert '<div class="warning" id="not-learned">' in page
    assert "distilled+rag-int8 did not learn" in page and "rose from 2.6 to 6.7" in page
    assert "The `full` profile (--profile full)" in page
    assert "<h3>Speed and cost</h3>" in page and '<tr class="failed"><td>int4' in page


def test_no_warning_when_every_trained_arm_learned(tmp_path: Path) -> None:
    page = write_html(_result(), tmp_path / "report.html").read_text()
    assert 'id="not-learned"' not in page and "did&nbsp;not" not in page


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.mark.slow
@pytest.mark.skipif(CHROMIUM is None, reason="needs chromium to lay the page out")
def test_the_page_fits_a_1280_pixel_window_in_chromium(tmp_path: Path) -> None:
    """As a user sees it: the page, laid out by Chromium at 1,280 px, is no wider than that."""
    assert CHROMIUM is not None
    page = write_html(_demo_result(), tmp_path / "report.html").read_text()
    probe = (
        "<script>document.body.insertAdjacentHTML('beforeend', '<pre id=width>' + "
        "document.documentElement.scrollWidth + '/' + window.innerWidth + '</pre>')</script>"
    )
    path = tmp_path / "measure.html"
    path.write_text(page.replace("</body>", probe + "</body>"))
    command = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--window-size=1280,2000"]
    done = subprocess.run(
        [*command, "--dump-dom", path.as_uri()], capture_output=True, text=True, timeout=120
    )
    found = re.search(r"<pre id=\"?width\"?>(\d+)/(\d+)</pre>", done.stdout)
    assert found, done.stderr[-2000:]
    scroll, window = int(found[1]), int(found[2])
    assert window == 1280 and scroll <= window


@pytest.mark.parametrize("width", [80, 100])
def test_an_incumbent_is_marked_and_no_figure_breaks_over_lines(tmp_path: Path, width: int) -> None:
    """In a narrow table an incumbent is a † (explained in the legend), so its row does not push
    the figures into folding; every figure stays whole on one line."""
    from mentor.bakeoff.report import _usd

    result = _demo_result()
    kept = next(a for a in result.arms if a.ok)
    kept.incumbent = "adapter runs/current"
    console = Console(width=width, record=True)
    print_summary(result, console, tmp_path / "report.html")
    text = console.export_text()
    table = text.split("! distilled+rag-int8 did not learn")[0]
    assert f"{kept.name} †" in table
    assert "† what you run today (incumbent)" in " ".join(text.split())
    for arm in result.arms:
        if arm.ok and arm.costs is not None:
            assert _usd(arm.costs.serve_usd_per_1k) in table  # whole, not folded
            assert f"{arm.latency_ms['p95']:.0f}" in table
