"""The SQL cookbook's recipes by name, for `kasmina sql --recipe NAME`.

The recipes are written once, in ``docs/sql.md``, where each is explained
and a test runs each against answers worked out in Python; the wheel carries
that page (``kasmina/_docs``), and a source checkout reads it in place.
"""

from __future__ import annotations

import re
import shlex
from functools import cache
from pathlib import Path

from kasmina.errors import KasminaError

_RECIPE = re.compile(r"```sql\n-- recipe: ([a-z0-9-]+)\n(.*?)```", re.S)
_EXAMPLE = re.compile(r"^-- e\.g\. (.*)$", re.M)


@cache
def recipes() -> dict[str, str]:
    """Every recipe's SQL (its ``-- recipe:`` line left out), by name, in the page's order."""
    here = Path(__file__).resolve().parent
    for page in (here / "_docs" / "sql.md", here.parent.parent / "docs" / "sql.md"):
        if page.is_file():
            return {name: text.strip() for name, text in _RECIPE.findall(page.read_text("utf-8"))}
    raise KasminaError("the SQL cookbook (docs/sql.md) is missing from this installation")


def recipe(name: str) -> str:
    """One recipe's SQL; an unknown name is one line listing the known ones."""
    found = recipes().get(name)
    if found is None:
        raise KasminaError(f"no recipe {name!r}; the cookbook has: {', '.join(recipes())}")
    return found


def example(name: str) -> dict[str, str]:
    """The parameters a recipe is shown with (its ``-- e.g. --param NAME=VALUE`` line).

    The tests and the SQL bench ask the demo run these, so the page is the
    one place they are written.
    """
    found = _EXAMPLE.search(recipe(name))
    if found is None:
        return {}
    from kasmina.ledger.sqlparams import parse_params

    words = shlex.split(found.group(1))
    pairs = zip(words, words[1:], strict=False)
    return parse_params([value for flag, value in pairs if flag == "--param"])
