"""Every package ``__init__`` follows the one export convention, and importing it stays cheap.

The convention: a docstring that says what the package holds; the exported names imported under
``TYPE_CHECKING`` (for readers and type checkers); ``__all__`` naming exactly those; and
``__getattr__ = lazy_exports(__name__, {name: module})`` mapping each to the module it is imported
from, so a name's module is loaded only when the name is first read.
"""

from __future__ import annotations

import ast
import importlib
import subprocess
import sys
from pathlib import Path

import pytest

import mentor

SRC = Path(mentor.__file__).parent
PACKAGES = sorted(p.name for p in SRC.iterdir() if (p / "__init__.py").exists())


def _convention(package: str) -> tuple[dict[str, str], list[str], dict[str, str], str | None]:
    """(names imported under TYPE_CHECKING -> module, __all__, the lazy map, the docstring)."""
    tree = ast.parse((SRC / package / "__init__.py").read_text())
    typed: dict[str, str] = {}
    exported: list[str] = []
    lazy: dict[str, str] = {}
    for node in tree.body:
        if isinstance(node, ast.If) and getattr(node.test, "id", "") == "TYPE_CHECKING":
            for imp in node.body:
                assert isinstance(imp, ast.ImportFrom) and imp.module
                typed |= {a.asname or a.name: imp.module for a in imp.names}
        elif isinstance(node, ast.Assign) and getattr(node.targets[0], "id", "") == "__all__":
            exported = list(ast.literal_eval(node.value))
        elif isinstance(node, ast.Assign) and getattr(node.targets[0], "id", "") == "__getattr__":
            call = node.value
            assert isinstance(call, ast.Call) and getattr(call.func, "id", "") == "lazy_exports"
            lazy = ast.literal_eval(call.args[1])
    return typed, exported, lazy, ast.get_docstring(tree)


@pytest.mark.parametrize("package", PACKAGES)
def test_every_package_exports_the_same_way(package: str) -> None:
    typed, exported, lazy, doc = _convention(package)
    assert doc, f"mentor.{package} has no docstring"
    assert exported, f"mentor.{package} exports nothing (__all__ is missing or empty)"
    assert sorted(exported) == sorted(typed) == sorted(lazy), (
        f"mentor.{package}: __all__, the TYPE_CHECKING imports and the lazy map must name the "
        "same things"
    )
    assert typed == lazy, f"mentor.{package}: a name's lazy module differs from its import"


@pytest.mark.parametrize("package", PACKAGES)
def test_every_export_resolves(package: str) -> None:
    lazy = _convention(package)[2]
    module = importlib.import_module(f"mentor.{package}")
    for source in set(lazy.values()):  # as if other code had imported them first: an export
        importlib.import_module(source)  # named like its module would now read as the module
    for name in module.__all__:
        assert getattr(module, name) is getattr(importlib.import_module(lazy[name]), name), (
            f"mentor.{package}.{name} is not what {lazy[name]} defines: is a module named so?"
        )
    with pytest.raises(AttributeError, match="no attribute"):
        module.no_such_name  # noqa: B018


def test_importing_every_package_loads_no_torch() -> None:
    code = (
        "import sys\n"
        + "".join(f"import mentor.{p}\n" for p in PACKAGES)
        + "print(sorted(m for m in ('torch', 'transformers', 'lancedb') if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_the_convention_check_catches_a_drift(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake = tmp_path / "pkg"
    fake.mkdir()
    (fake / "__init__.py").write_text(
        '"""doc"""\n'
        "from typing import TYPE_CHECKING\n"
        "from mentor.utils.lazy import lazy_exports\n"
        "if TYPE_CHECKING:\n    from mentor.pkg.a import x, y\n"
        '__all__ = ["x", "y"]\n'
        '__getattr__ = lazy_exports(__name__, {"x": "mentor.pkg.a"})\n'
    )
    monkeypatch.setattr(sys.modules[__name__], "SRC", tmp_path)
    with pytest.raises(AssertionError, match="same things"):
        test_every_package_exports_the_same_way("pkg")
