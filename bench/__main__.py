"""``make bench``: run every benchmark in this folder (each prints its table with references)."""

from __future__ import annotations

import runpy
import sys
from pathlib import Path


def main() -> None:
    scripts = sorted(p for p in Path(__file__).parent.glob("*.py") if not p.name.startswith("_"))
    if not scripts:
        print("no benchmarks yet")
        return
    for script in scripts:
        print(f"== {script.name}")
        sys.argv = [str(script)]
        runpy.run_path(str(script), run_name="__main__")


if __name__ == "__main__":
    main()
