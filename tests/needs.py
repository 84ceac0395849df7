"""What the suite needs from the machine, and what a missing piece does to a test.

`make test` and `.ci/run` set ``KASMINA_REQUIRE_PG=1``: there a missing
PostgreSQL server or client tool fails the tests that need it, naming what to
install, so a machine without it cannot pass by skipping them. Elsewhere (a
quick `pytest` on a laptop) those tests skip. Tests never install anything:
`.ci/run` does.
"""

from __future__ import annotations

import os
import shutil
from typing import NoReturn

import pytest

REQUIRED = os.environ.get("KASMINA_REQUIRE_PG") == "1"


def missing(what: str) -> NoReturn:
    if REQUIRED:
        pytest.fail(f"KASMINA_REQUIRE_PG=1 but {what}", pytrace=False)
    pytest.skip(what)


def tool(package: str, *names: str) -> str:
    """The first of `names` on PATH; `package` is the Debian package that provides it."""
    for name in names:
        found = shutil.which(name)
        if found is not None:
            return found
    missing(f"no {' or '.join(names)} on PATH (install the Debian package {package}; .ci/run does)")
