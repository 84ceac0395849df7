"""`kasmina history` pages a table on a terminal (`kasmina.pager`), and only there.

``FORCE_COLOR`` makes the command take its pipe for a terminal; the pager is a
real process that writes what it was given to a file, or quits early.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from kasmina.ledger import Ledger
from kasmina.replay.synthetic import synthetic_run

BIN = str(Path(sys.executable).with_name("kasmina"))


@pytest.fixture(scope="module")
def url(tmp_path_factory: pytest.TempPathFactory) -> str:
    url = f"sqlite:///{tmp_path_factory.mktemp('pager') / 'ledger.db'}"
    with Ledger.open(url) as ledger:
        synthetic_run(ledger, epochs=200, slots=3, seed=0, gc_period=1000)
    return url


def _history(
    url: str, *extra: str, terminal: bool, pager: str | None
) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("FORCE_COLOR", "PAGER")}
    env["COLUMNS"] = "120"
    env.pop("KASMINA_PAGER", None)
    if terminal:
        env["FORCE_COLOR"] = "1"
    if pager is not None:
        env["KASMINA_PAGER"] = pager
    return subprocess.run(
        [BIN, "--db", url, "history", "latest", *extra],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )


def test_a_terminal_gets_the_table_through_the_pager(url: str, tmp_path: Path) -> None:
    paged = tmp_path / "paged.txt"
    done = _history(url, "--limit", "20", terminal=True, pager=f"sh -c 'cat > {paged}'")
    assert done.returncode == 0, done.stderr
    assert done.stdout == ""
    assert "RunStarted" in paged.read_text() and "┃" in paged.read_text()


@pytest.mark.parametrize(
    "how", [("--no-pager",), ("cat",), ("pipe",)], ids=["no-pager", "cat", "pipe"]
)
def test_no_pager_when_turned_off_or_into_a_pipe(url: str, tmp_path: Path, how: tuple[str]) -> None:
    paged = tmp_path / "paged.txt"
    pager = "cat" if how == ("cat",) else f"sh -c 'cat > {paged}'"
    extra = ("--no-pager",) if how == ("--no-pager",) else ()
    done = _history(url, "--limit", "20", *extra, terminal=how != ("pipe",), pager=pager)
    assert done.returncode == 0, done.stderr
    assert "RunStarted" in done.stdout
    assert not paged.exists()


def test_quitting_the_pager_early_is_no_error(url: str) -> None:
    """The pager reads a few bytes of a history far longer than a pipe holds, and leaves."""
    done = _history(url, terminal=True, pager="head -c 100")
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr and "Broken pipe" not in done.stderr
    assert len(done.stdout) == 100
