"""A package's names imported on first use (PEP 562), so that importing it costs nothing.

``kasmina --help`` and ``kasmina runs`` start in a fraction of a second
only if importing ``kasmina`` (which every submodule import does first)
does not build every event model, policy and fold up front. Each package
lists where its names live; a type checker reads the same names from its
``TYPE_CHECKING`` imports.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable, Mapping


def lazy(package: str, where: Mapping[str, str]) -> Callable[[str], object]:
    """The package's ``__getattr__``: `where` maps each name to the module defining it."""

    def __getattr__(name: str) -> object:
        module = where.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(module), name)
        setattr(sys.modules[package], name, value)  # found once; later reads skip this
        return value

    return __getattr__
