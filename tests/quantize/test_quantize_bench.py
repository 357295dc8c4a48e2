"""bench/quantize_bench.py's gpu_rows: runs with tiny shapes on a CPU in a python without
pydantic, fastapi, openai or rich (as bench/gpu_check.py does on the GPU machine); there only
the load check, which needs ``mentor.quantize.io`` (pydantic through ``mentor.models.backends``),
reports that it could not run."""

from __future__ import annotations

import json
import os
import runpy
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
BENCH = ROOT / "bench" / "quantize_bench.py"


def test_gpu_rows_tiny_on_cpu_without_server_packages() -> None:
    blocked = ["pydantic", "fastapi", "openai", "rich"]
    code = (
        f"import json, runpy, sys; sys.modules.update(dict.fromkeys({blocked!r})); "
        f"bench = runpy.run_path({str(BENCH)!r}); "
        "print(json.dumps(bench['gpu_rows']('cpu', tiny=True)))"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "HF_HUB_OFFLINE": "1"}
    done = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-3000:]
    rows = json.loads(done.stdout.strip().splitlines()[-1])
    timed, loads = rows[:3], rows[3:]
    assert [r.get("error") for r in timed] == [None] * 3
    assert [r["method"] for r in timed] == ["bf16", "int8", "int4"]
    assert all(r["ms_per_token"] > 0 and r["ratio"] > 0 for r in timed)
    assert timed[0]["ratio"] == 1.0 and timed[0]["d_nll"] == 0.0
    assert timed[1]["kernel"] == {"int8:dynamic": 14}  # the CPU's kernels, unchanged
    # int8 per row is close to bf16, int4 per group of 64 further, neither broken
    assert timed[1]["decode_err"] < 0.05 and timed[2]["decode_err"] < 0.3
    assert abs(timed[1]["prefill_err"] - timed[1]["decode_err"]) < 0.05
    assert [r["method"] for r in loads] == ["int8", "int4"]
    assert all("pydantic" in r["error"] for r in loads)


def test_a_folder_saved_on_the_cpu_loads_with_the_in_memory_logits() -> None:
    rows = runpy.run_path(str(BENCH))["_load_rows"]("cpu", "tiny", 128)
    assert [(r["method"], r.get("error")) for r in rows] == [("int8", None), ("int4", None)]
    assert all(r["load_err"] < 1e-3 and r["dtype"] == "float32" for r in rows)
