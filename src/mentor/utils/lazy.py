"""Lazy package exports (PEP 562): ``mentor.x.Name`` imports its module on first use.

The CLI imports every package's ``commands`` module, and with it the package's ``__init__``; a
package whose ``__init__`` re-exported its heavy modules eagerly would load them (and torch) on
every ``mentor`` command. Each such ``__init__`` instead ends with::

    __getattr__ = lazy_exports(__name__, {"Name": "mentor.x.module", ...})
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable, Mapping


def lazy_exports(package: str, exports: Mapping[str, str]) -> Callable[[str], object]:
    """A module ``__getattr__`` that imports ``exports[name]`` when ``name`` is first read."""

    def load(name: str) -> object:
        module = exports.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(module), name)
        setattr(sys.modules[package], name, value)  # later reads skip this function
        return value

    return load
