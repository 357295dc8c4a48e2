"""The layers of mentor, bottom to top, and the check that keeps the imports to them.

A package imports only from packages in lower layers: never from a sibling in its own layer,
never from above. A capability that needs another's building block takes it from the layer below
(the way every method takes LoRA and the trainer from ``train/``), and no library module imports
a ``commands.py`` (the command line is the top layer). ``tests/test_layers.py`` runs
:func:`violations` over ``src/mentor`` on every test run.

    utils ─► data, models ─► train, evaluate ─► rag, finetune, distill, quantize, monitor, advisor
          ─► serve, bakeoff ─► testing, doctor, demo ─► cli
"""

from __future__ import annotations

import ast
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

LAYERS: tuple[tuple[str, ...], ...] = (
    ("utils", "layers"),
    ("data", "models"),
    ("train", "evaluate"),
    ("rag", "finetune", "distill", "quantize", "monitor", "advisor"),
    ("serve", "bakeoff"),
    ("testing", "doctor", "demo"),
    ("cli",),
)
"""Each entry is one layer: the packages (and top-level modules) of ``mentor`` in it."""

COMMANDS = "commands"
"""The module name of a package's command-line face; only the ``cli`` layer imports one."""


@dataclass(frozen=True)
class Import:
    """One ``import`` of a mentor module by another, where it is written."""

    path: Path
    line: int
    importer: str
    """The importing module (``mentor.rag.answer``)."""
    imported: str
    """The module named (``mentor.models.generation``)."""

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: {self.importer} imports {self.imported}"


def package_of(module: str) -> str:
    """``mentor.rag.answer`` -> ``rag``; ``mentor.cli`` -> ``cli``."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else parts[0]


def layer_of(package: str, layers: Sequence[Sequence[str]] = LAYERS) -> int:
    for index, members in enumerate(layers):
        if package in members:
            return index
    raise KeyError(f"package {package!r} is in no layer: add it to mentor.layers.LAYERS")


def imports(root: Path, name: str = "mentor") -> Iterator[Import]:
    """Every import of a ``name.*`` module in the package folder ``root``, at any depth (lazy
    imports inside functions and ``TYPE_CHECKING`` blocks included)."""
    for path in sorted(root.rglob("*.py")):
        relative = path.relative_to(root).with_suffix("")
        parts = [p for p in relative.parts if p != "__init__"]
        importer = ".".join([name, *parts])
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                targets = [node.module]
                # ``from mentor.x import y`` may name the module ``mentor.x.y``
                targets += [f"{node.module}.{a.name}" for a in node.names]
            elif isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            else:
                continue
            for target in targets:
                inside = target == name or target.startswith(name + ".")
                if inside and _is_module(root, name, target):
                    yield Import(path, node.lineno, importer, target)


def _is_module(root: Path, name: str, module: str) -> bool:
    parts = module.split(".")[1:]
    base = root.joinpath(*parts) if parts else root
    return base.with_suffix(".py").exists() or (base / "__init__.py").exists()


def violations(
    root: Path, layers: Sequence[Sequence[str]] = LAYERS, name: str = "mentor"
) -> list[str]:
    """What breaks the layering in the package at ``root``: imports from a higher layer or a
    sibling in the same layer, imports of a ``commands`` module outside the top layer, and
    cycles between packages. Empty when the tree keeps to ``layers``."""
    problems: list[str] = []
    edges: dict[str, set[str]] = {}
    for imp in imports(root, name):
        src, dst = package_of(imp.importer), package_of(imp.imported)
        if imp.imported.split(".")[-1] == COMMANDS and layer_of(src, layers) != len(layers) - 1:
            problems.append(f"{imp}: only the command line imports a commands module")
        if src == dst or imp.imported == name:
            continue
        edges.setdefault(src, set()).add(dst)
        above, below = layer_of(src, layers), layer_of(dst, layers)
        if below >= above:
            where = "a higher layer" if below > above else "a sibling in its own layer"
            problems.append(f"{imp}: {dst} is {where} (see mentor.layers.LAYERS)")
    problems += [f"import cycle between packages: {' -> '.join(c)}" for c in cycles(edges)]
    return problems


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """One cycle through each strongly connected group of ``edges`` that has one."""
    found: list[list[str]] = []
    seen: set[str] = set()

    def walk(node: str, path: list[str]) -> None:
        for nxt in sorted(edges.get(node, ())):
            if nxt in path:
                cycle = [*path[path.index(nxt) :], nxt]
                if not set(cycle) <= seen:
                    found.append(cycle)
                    seen.update(cycle)
            elif nxt not in seen:
                walk(nxt, [*path, nxt])

    for start in sorted(edges):
        if start not in seen:
            walk(start, [start])
    return found
