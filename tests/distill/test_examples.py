"""Every shipped distillation config still loads, opens with its command, and names real files
that read as prompts."""

from __future__ import annotations

from pathlib import Path

import pytest

from mentor.distill.config import load_config
from mentor.distill.sequence import load_prompts

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "distill"


@pytest.mark.parametrize("path", sorted(EXAMPLES.glob("*.yaml")), ids=lambda p: p.name)
def test_config_loads_and_names_real_files(path: Path) -> None:
    config = load_config(path, {})
    for data in (config.data, config.val, config.eval):
        if data is not None:
            assert data.exists(), f"{path.name}: {data} is missing"
            assert load_prompts(data)
    assert (
        path.read_text().splitlines()[0]
        == f"# mentor distill --config examples/distill/{path.name}"
    )
