"""Every command that prints a table, into a pipe and on an 80-column terminal, never cuts
an id, a stage or a seed: a pipe gets the table as wide as it needs, a terminal drops
the minor columns first (`kasmina.layouts.print_table`).

The commands run as a user runs them, in a subprocess; ``FORCE_COLOR`` makes rich take
the pipe for a terminal, ``COLUMNS`` sets its width.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from kasmina.ledger import Ledger
from kasmina.replay.synthetic import synthetic_run

BIN = str(Path(sys.executable).with_name("kasmina"))
ANSI = re.compile(r"\x1b\[[0-9;]*m")
STAGES = "SELECT to_stage, seed_id FROM stage_changes ORDER BY position"


@pytest.fixture(scope="module")
def url(tmp_path_factory: pytest.TempPathFactory) -> str:
    url = f"sqlite:///{tmp_path_factory.mktemp('narrow') / 'ledger.db'}"
    with Ledger.open(url) as ledger:
        synthetic_run(ledger, epochs=12, slots=3, seed=0, gc_period=1000)
    return url


def _kasmina(url: str, *args: str, terminal: bool = False) -> str:
    env = {k: v for k, v in os.environ.items() if k not in ("FORCE_COLOR", "NO_COLOR")}
    env["COLUMNS"] = "80"
    if terminal:
        env["FORCE_COLOR"] = "1"
    done = subprocess.run(
        [BIN, "--db", url, *args], capture_output=True, text=True, env=env, check=True
    )
    return ANSI.sub("", done.stdout)


def _whole(text: str, token: str) -> bool:
    return re.search(rf"(?<![\w./-]){re.escape(token)}(?![\w./-])", text) is not None


@pytest.mark.parametrize("terminal", [False, True], ids=["pipe", "terminal-80"])
def test_no_table_cuts_an_id_a_stage_or_a_seed(url: str, terminal: bool) -> None:
    run_id = json.loads(_kasmina(url, "runs", "--format", "json"))[0]["run_id"]
    state = json.loads(_kasmina(url, "replay", "latest", "--format", "json"))
    slots = state["slots"].values() if isinstance(state["slots"], dict) else state["slots"]
    moves = json.loads(_kasmina(url, "sql", STAGES, "--format", "json"))
    events = json.loads(_kasmina(url, "history", "latest", "--format", "json"))
    assert moves and len(run_id) == 32
    expected = {
        ("runs",): [run_id],
        ("verify",): [run_id],
        ("sql", "--recipe", "run-overview"): [run_id],
        ("replay", "latest"): [run_id]
        + [s["stage"] for s in slots]
        + [s["seed_id"] for s in slots if s["seed_id"]],
        ("sql", STAGES): [m["to_stage"] for m in moves] + [m["seed_id"] for m in moves],
        ("history", "latest"): [e["event_type"] for e in events]
        + [e["stream_id"] for e in events]
        + [e["seed_id"] for e in events if e["seed_id"]],
    }
    for command, tokens in expected.items():
        shown = _kasmina(url, *command, terminal=terminal)
        cut = sorted({t for t in tokens if not _whole(shown, t)})
        assert not cut, f"kasmina {' '.join(command)} cut {cut}:\n{shown}"
        if terminal:  # a table fits; a record's line is as long as its value needs
            drawn = [line for line in shown.splitlines() if line[:1] in "┏┃┡│└"]
            assert all(len(line) <= 80 for line in drawn), command


@pytest.mark.parametrize("terminal", [False, True], ids=["pipe", "terminal-80"])
def test_a_table_with_no_rows_prints_its_header(url: str, terminal: bool) -> None:
    empty = {
        ("runs", "--name", "no-such-run"): "run",
        ("sql", "SELECT run_id, to_stage FROM stage_changes WHERE 0"): "to_stage",
        ("history", "latest", "--slot", "no-such-slot"): "detail",
    }
    for command, header in empty.items():
        shown = _kasmina(url, *command, terminal=terminal)
        assert _whole(shown, header), f"kasmina {' '.join(command)}:\n{shown}"
