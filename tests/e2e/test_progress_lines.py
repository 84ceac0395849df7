"""Long commands off a terminal: progress lines on stderr that name the work, and
standard output as it would be without them.

``KASMINA_PROGRESS_S=0`` makes a line due at every update; the subprocesses'
stderr is a pipe, so no bar is drawn.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from test_cli import kasmina

from kasmina.ledger import Ledger
from kasmina.replay.synthetic import synthetic_run

EPOCHS = 2
ROWS = re.compile(r"^exporting: ([\d,]+) rows, \d+ s$")
RUN_ID = re.compile(r"^[0-9a-f]{32}$")


@pytest.fixture(autouse=True)
def every_update(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KASMINA_PROGRESS_S", "0")


def _progress(stderr: str, what: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith(f"{what}: ")]


def test_export_counts_the_rows_it_writes(tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path / 'l.db'}"
    with Ledger.open(db) as ledger:
        run_id = synthetic_run(ledger, epochs=300, slots=2, seed=0, gc_period=50)
    done = kasmina("export", run_id, "--format", "jsonl", "-o", str(tmp_path / "out"), db=db)
    assert done.returncode == 0, done.stderr
    assert done.stdout == ""
    *lines, last = done.stderr.splitlines()
    assert last.startswith("wrote ") and lines
    counts = [ROWS.match(line) for line in lines]
    assert all(counts), lines
    written = sum(len(f.read_text().splitlines()) for f in (tmp_path / "out").iterdir())
    assert [int(m.group(1).replace(",", "")) for m in counts if m][-1] == written > 1000


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, str, str]:
    """A short `kasmina demo`, run with a line at every epoch: its URL, stdout and stderr."""
    pytest.importorskip("torch")
    db = f"sqlite:///{tmp_path_factory.mktemp('progress') / 'demo.db'}"
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("KASMINA_PROGRESS_S", "0")
        done = kasmina("demo", "--epochs", str(EPOCHS), "--slots", "1", "--seed", "3", db=db)
    assert done.returncode == 0, done.stderr
    return db, done.stdout, done.stderr


def test_demo_shows_the_epochs_trained_on_stderr_only(demo: tuple[str, str, str]) -> None:
    _, stdout, stderr = demo
    assert _progress(stderr, "training")[-1].startswith(f"training: {EPOCHS}/{EPOCHS} epochs")
    assert stdout.startswith("run id: ") and "training" not in stdout


def test_replay_verify_shows_the_re_run_and_the_comparison(demo: tuple[str, str, str]) -> None:
    db, stdout, _ = demo
    run_id = stdout.split()[2]
    done = kasmina("replay", run_id, "--verify", db=db)
    assert done.returncode == 0, done.stdout + done.stderr
    assert _progress(done.stderr, "training")[-1].startswith(f"training: {EPOCHS}/{EPOCHS}")
    compared = _progress(done.stderr, "comparing")
    total = re.search(r"(\d+) events compared", done.stdout)
    assert compared and total, done.stdout + done.stderr
    assert compared[-1].startswith(f"comparing: {int(total.group(1)):,} events")
    assert "training: " not in done.stdout and "comparing: " not in done.stdout


def test_run_gives_the_programs_loop_stderr_for_its_epochs(tmp_path: Path) -> None:
    pytest.importorskip("torch")
    from kasmina.demo import DemoConfig

    db = f"sqlite:///{tmp_path / 'l.db'}"
    config = json.dumps(DemoConfig(epochs=EPOCHS, slots=1).to_json())
    done = kasmina("run", "kasmina.demo:main", "--config", config, "--seed", "3", db=db)
    assert done.returncode == 0, done.stderr
    assert _progress(done.stderr, "training")[-1].startswith(f"training: {EPOCHS}/{EPOCHS}")
    [line] = done.stdout.splitlines()
    assert RUN_ID.match(line), done.stdout
