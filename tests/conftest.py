"""Shared test setup: no network, and a private MENTOR_HOME per test.

Tests marked ``packaged`` use the real models that ship inside PyPI packages; they share one
cache (``$MENTOR_TEST_HOME``, else the user's ``~/.cache/mentor``) so each model is pulled once
per machine, not once per test.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def _packaged_home() -> Path:
    explicit = os.environ.get("MENTOR_TEST_HOME") or os.environ.get("MENTOR_HOME")
    return Path(explicit) if explicit else Path.home() / ".cache" / "mentor"


_PACKAGED_HOME = _packaged_home()


@pytest.fixture(autouse=True)
def _mentor_home(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Path]:
    packaged = request.node.get_closest_marker("packaged") is not None
    home = _PACKAGED_HOME if packaged else tmp_path_factory.mktemp("mentor-home")
    old = os.environ.get("MENTOR_HOME")
    os.environ["MENTOR_HOME"] = str(home)
    yield home
    if old is None:
        os.environ.pop("MENTOR_HOME", None)
    else:
        os.environ["MENTOR_HOME"] = old


# --- the device the end-to-end tests run on --------------------------------------------------
#
# ``pytest --device cuda`` (or ``MENTOR_TEST_DEVICE=cuda``; default cpu) runs the end-to-end CLI
# tests (marker ``e2e``) with ``--device cuda``, so they run on a GPU whenever one is at hand:
#
#     pytest -m e2e --device cuda
#
# Where the chosen device is absent, the e2e tests skip, saying why. Command tests whose
# assertions hold only on the CPU (equal losses after a kill -9 and resume, torchrun on gloo) are
# not marked e2e: they run on the CPU in every run.


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--device",
        default=os.environ.get("MENTOR_TEST_DEVICE", "cpu"),
        help="device the end-to-end CLI tests run on: cpu, cuda, cuda:1, mps "
        "(default: $MENTOR_TEST_DEVICE, else cpu)",
    )


def pytest_configure(config: pytest.Config) -> None:
    name = str(config.getoption("--device"))
    if name != "cpu":  # a misspelt device is a usage error, not a reason to skip everything
        import torch

        try:
            torch.device(name)
        except RuntimeError as error:
            raise pytest.UsageError(f"--device {name!r} is not a device: {error}") from None


@pytest.fixture(scope="session")
def test_device(request: pytest.FixtureRequest) -> str:
    """The device the end-to-end tests run on (``--device``); skips them where it is absent."""
    from mentor.testing.devices import device_unavailable

    name = str(request.config.getoption("--device"))
    reason = device_unavailable(name)
    if reason:
        pytest.skip(reason)
    return name


@pytest.fixture
def device_args(test_device: str) -> list[str]:
    """``["--device", <the test device>]``, for an end-to-end test's command line."""
    return ["--device", test_device]
