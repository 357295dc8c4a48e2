"""Every shipped fine-tuning config still loads, and its data files exist and validate."""

from __future__ import annotations

from pathlib import Path

import pytest

from mentor.data.io import read_records
from mentor.finetune.config import load_config

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "finetune"


@pytest.mark.parametrize("path", sorted(EXAMPLES.glob("*.yaml")), ids=lambda p: p.name)
def test_config_loads_and_names_real_files(path: Path) -> None:
    config = load_config(path, {})
    for data in (config.data, config.val, config.eval):
        if data is not None:
            assert data.exists(), f"{path.name}: {data} is missing"
            if config.task == "classify":
                from mentor.train.classifier import load_classification

                texts, labels = load_classification(data)
                assert len(texts) == len(labels) > 0
            else:
                assert not read_records(data).errors
    opening = path.read_text().splitlines()[0]
    assert opening.startswith("# mentor finetune --config"), "configs open with their command"
