"""The layers hold: no package imports from above or from a sibling, no cycles, no library code
importing a ``commands`` module, and ``import mentor.cli`` stays free of torch."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

import mentor
from mentor.layers import LAYERS, cycles, imports, layer_of, package_of, violations

SRC = Path(mentor.__file__).parent


def test_the_package_keeps_to_its_layers() -> None:
    problems = violations(SRC)
    assert not problems, "\n".join(problems)


def test_every_package_has_a_layer() -> None:
    packages = {p.name for p in SRC.iterdir() if (p / "__init__.py").exists()}
    modules = {p.stem for p in SRC.glob("*.py") if p.stem != "__init__"}
    for name in packages | modules:
        layer_of(name)  # raises for a package no layer names


def test_layers_name_each_package_once() -> None:
    names = [name for layer in LAYERS for name in layer]
    assert len(names) == len(set(names))


def _package(tmp_path: Path, files: dict[str, str]) -> Path:
    root = tmp_path / "mentor"
    for relative, text in files.items():
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    for folder in {p.parent for p in root.rglob("*.py")} | {root}:
        (folder / "__init__.py").touch()
    return root


LOW_HIGH = (("models",), ("rag",), ("serve",), ("cli",))


@pytest.mark.parametrize(
    ("files", "expected"),
    [
        ({"rag/a.py": "from mentor.models.b import x\n", "models/b.py": "x = 1\n"}, []),
        (
            {"models/b.py": "from mentor.rag.a import y\n", "rag/a.py": "y = 1\n"},
            ["rag is a higher layer"],
        ),
        (
            {"models/b.py": "def f():\n    import mentor.serve.s\n", "serve/s.py": ""},
            ["serve is a higher layer"],
        ),
        (
            {"serve/s.py": "from mentor.rag import commands\n", "rag/commands.py": ""},
            ["only the command line imports a commands module"],
        ),
        ({"cli.py": "from mentor.rag.commands import app\n", "rag/commands.py": "app = 1\n"}, []),
    ],
)
def test_violations_are_found(tmp_path: Path, files: dict[str, str], expected: list[str]) -> None:
    root = _package(tmp_path, files)
    found = violations(root, LOW_HIGH)
    assert len(found) == len(expected), found
    for problem, words in zip(found, expected, strict=True):
        assert words in problem


def test_a_sibling_import_and_a_cycle_are_found(tmp_path: Path) -> None:
    root = _package(
        tmp_path,
        {
            "rag/a.py": "from mentor.serve.s import x\n",
            "serve/s.py": "from mentor.rag.a import y\nx = 1\n",
        },
    )
    found = violations(root, (("rag", "serve"),))
    assert sum("sibling" in p for p in found) == 2
    assert any("cycle between packages" in p for p in found)


def test_cycles() -> None:
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == [["a", "b", "c", "a"]]
    assert cycles({"a": {"b"}, "b": {"c"}}) == []


def test_imports_see_lazy_and_type_checking_imports(tmp_path: Path) -> None:
    root = _package(
        tmp_path,
        {
            "rag/a.py": (
                "from typing import TYPE_CHECKING\n"
                "if TYPE_CHECKING:\n    from mentor.models import b\n"
                "def f():\n    from mentor.utils.c import z\n"
            ),
            "models/b.py": "",
            "utils/c.py": "z = 1\n",
        },
    )
    found = sorted((i.importer, i.imported) for i in imports(root))
    assert found == [
        ("mentor.rag.a", "mentor.models"),
        ("mentor.rag.a", "mentor.models.b"),
        ("mentor.rag.a", "mentor.utils.c"),
    ]
    assert package_of("mentor.rag.a") == "rag" and package_of("mentor.cli") == "cli"


HEAVY = ("torch", "transformers", "lancedb", "pyarrow", "sentence_transformers", "matplotlib")


def test_importing_the_cli_loads_no_heavy_library() -> None:
    code = f"import sys, mentor.cli\nprint(','.join(m for m in {HEAVY!r} if m in sys.modules))\n"
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout.strip()
    assert out == "", (
        f"import mentor.cli loaded {out}: import them inside the functions that need them"
    )


def test_the_lazy_import_check_can_fail() -> None:
    code = "import sys, mentor.cli, mentor.models.generation\nprint('torch' in sys.modules)\n"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "True"
