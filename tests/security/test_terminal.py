"""Attack: ids and payload strings that drive the terminal, or break rich's markup.

Before: a run id like ``evil[/red]`` crashed `runs` and `verify` with a rich
MarkupError, and escape sequences recorded in run, stream and seed ids or
payload strings reached the terminal raw (``sql``, ``history --follow``, ...):
a recorded string could clear the screen, rewrite earlier lines or hide text.
Now every string from the database is shown with its control characters
escaped (``\\x1b``) and never read as markup; JSON output keeps the exact data.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from kasmina.events import EpochCompleted, SeedGerminated, slot_stream
from kasmina.ledger import Ledger
from security.attacks import fingerprint, kasmina

RUN = "evil[/red]\x1b[2J\x1b]0;owned\x07\u202e"
SLOT = "b\x1b[31m1\r"
SEED = "seed[bold]\x08\x08\x9b31m\u2066"
BLUEPRINT = "conv\x1b[1A\x1b[Kforged line\x1b\\"
DIGEST_KEY = "w\x1b]8;;http://evil.example\x07"
#: What may never reach a terminal from the data (rich adds no ANSI off a terminal).
RAW = ("\x1b", "\x07", "\x08", "\r", "\x9b", "\u202e", "\u2066")


def record_hostile_run(url: str) -> None:
    with Ledger.open(url) as ledger:
        run = ledger.start_run(name="name\x1b[5m[/]", seed=3, run_id=RUN)
        run.recorder.emit(
            SeedGerminated(slot_id=SLOT, blueprint_id=BLUEPRINT, params=4),
            stream_id=slot_stream(SLOT),
            epoch=0,
            seed_id=SEED,
        )
        run.recorder.emit(
            EpochCompleted(val_accuracy=0.5, param_digests={DIGEST_KEY: "v\r"}),
            stream_id="run",
            epoch=0,
        )
        run.finish()


@pytest.fixture
def hostile_url(attacked_url: str) -> str:
    record_hostile_run(attacked_url)
    return attacked_url


SHOWN_RUN = r"evil[/red]\x1b[2J\x1b]0;owned\x07\u202e"
SHOWN_SEED = r"seed[bold]\x08\x08\x9b31m\u2066"
SHOWN_SLOT = r"b\x1b[31m1\x0d"
#: Each command, and the escaped strings it must show.
COMMANDS = {
    "runs": (["runs"], [SHOWN_RUN, r"name\x1b[5m[/]"]),
    "verify": (["verify"], [SHOWN_RUN]),
    "verify-run": (["verify", RUN], [SHOWN_RUN]),
    "history": (["history", RUN], [SHOWN_SEED, SHOWN_SLOT]),
    "history-follow": (["history", RUN, "--follow"], [SHOWN_SEED, SHOWN_SLOT]),
    "sql": (["sql", "SELECT * FROM events ORDER BY position"], [SHOWN_RUN, SHOWN_SEED]),
    "sql-views": (["sql", "SELECT * FROM seed_outcomes"], [SHOWN_RUN, SHOWN_SEED]),
    "replay": (["replay", RUN], [SHOWN_RUN, SHOWN_SLOT, SHOWN_SEED]),
}


def _assert_safe(text: str) -> None:
    for raw in RAW:
        assert raw not in text, f"{raw!r} reached the terminal"


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_database_strings_reach_the_terminal_escaped(hostile_url: str, command: str) -> None:
    args, expected = COMMANDS[command]
    before = fingerprint(hostile_url)
    proc = kasmina(hostile_url, *args)
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr and "MarkupError" not in proc.stderr
    _assert_safe(proc.stdout + proc.stderr)
    for text in expected:
        assert text in proc.stdout
    assert fingerprint(hostile_url) == before


def test_an_error_naming_a_hostile_id_is_one_escaped_line(hostile_url: str) -> None:
    before = fingerprint(hostile_url)
    proc = kasmina(hostile_url, "history", "gone\x1b[2J[/red]")
    assert proc.returncode == 2
    _assert_safe(proc.stdout + proc.stderr)
    lines = proc.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and r"gone\x1b[2J[/red]" in lines[0]
    assert fingerprint(hostile_url) == before


@pytest.mark.parametrize("fmt", ["json", "jsonl"])
def test_json_keeps_the_exact_strings(hostile_url: str, fmt: str) -> None:
    before = fingerprint(hostile_url)
    proc = kasmina(hostile_url, "history", RUN, "--format", fmt)
    assert proc.returncode == 0, proc.stderr
    events = (
        json.loads(proc.stdout)
        if fmt == "json"
        else [json.loads(line) for line in proc.stdout.splitlines()]
    )
    assert {e["run_id"] for e in events} == {RUN}
    germinated = next(e for e in events if e["event_type"] == "SeedGerminated")
    assert germinated["seed_id"] == SEED and germinated["stream_id"] == slot_stream(SLOT)
    assert germinated["payload"]["blueprint_id"] == BLUEPRINT
    epoch = next(e for e in events if e["event_type"] == "EpochCompleted")
    assert epoch["payload"]["param_digests"] == {DIGEST_KEY: "v\r"}
    assert fingerprint(hostile_url) == before


def test_sql_json_keeps_the_exact_strings(hostile_url: str) -> None:
    query = "SELECT run_id, seed_id FROM events WHERE seed_id IS NOT NULL AND run_id <> 'victim'"
    proc = kasmina(hostile_url, "sql", query, "--format", "json")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout) == [{"run_id": RUN, "seed_id": SEED}]


def test_a_stored_revision_reaches_the_terminal_escaped(tmp_path: Path) -> None:
    """`db current` printed `alembic_version` raw, and as markup: `[/red]` crashed it."""
    import rawdb

    from security.attacks import record_small_run

    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    record_small_run(url)
    rawdb.run(url, "UPDATE alembic_version SET version_num = '\x1b[2J[/red]'")
    proc = kasmina(url, "db", "current")
    assert proc.returncode == 0, proc.stderr
    _assert_safe(proc.stdout + proc.stderr)
    assert proc.stdout.startswith(r"\x1b[2J[/red] (code expects ")


@pytest.mark.parametrize("command", ["sql", "report", "export"])
def test_an_output_path_is_echoed_escaped(attacked_url: str, tmp_path: Path, command: str) -> None:
    target = tmp_path / "x\x1b[2J\x1b[31my"
    args = {
        "sql": ["sql", "SELECT 1", "-o", str(target)],
        "report": ["report", "victim", "-o", str(target)],
        "export": ["export", "victim", "-o", str(target)],
    }[command]
    proc = kasmina(attacked_url, *args)
    assert proc.returncode == 0, proc.stderr
    _assert_safe(proc.stdout + proc.stderr)
    assert r"x\x1b[2J\x1b[31my" in proc.stderr
