"""A WAL ledger on media kasmina cannot write is still read; a write there is one line.

Reads failed with ``attempt to write a readonly database``: opening a
ledger switched it to WAL and made its ``-shm`` index, which a read-only
folder cannot hold. The media is made read-only for real: the folder 0555
and the file 0444, and the commands run in a child process that the kernel
holds to those bits (as root, without the capabilities that override them).
"""

from __future__ import annotations

import ctypes
import multiprocessing
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import rawdb
from helpers import sample

from kasmina.ledger import Ledger, migrate
from security.attacks import fingerprint, record_small_run

PR_CAPBSET_DROP = 24
#: CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH, CAP_FOWNER: what lets root ignore permissions.
OVERRIDES = (1, 2, 3)
CLI = "import sys; from kasmina.cli import main; sys.exit(main(sys.argv[1:]))"


def _as_unprivileged() -> None:
    """In the child before exec: a root process gives up overriding file permissions."""
    if os.geteuid() != 0:
        return
    libc = ctypes.CDLL(None, use_errno=True)
    for cap in OVERRIDES:
        if libc.prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_CAPBSET_DROP)")


def confined(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, *argv],
        capture_output=True,
        text=True,
        timeout=120,
        preexec_fn=_as_unprivileged,
        env={k: v for k, v in os.environ.items() if k != "KASMINA_DB"},
    )


def kasmina(url: str, *args: str) -> subprocess.CompletedProcess[str]:
    return confined("-c", CLI, "--db", url, *args)


def _kill_mid_run(url: str) -> None:
    """A writer killed before it closed: its write-ahead log and index stay beside the file."""
    ledger = Ledger.open(url)
    run = ledger.start_run("killed", seed=3, run_id="killed")
    ledger.append([sample(run.run_id, n=n) for n in range(3)])
    os.kill(os.getpid(), signal.SIGKILL)


@pytest.fixture(params=["closed", "writer-killed"])
def media(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[str, Path, int]]:
    """A sealed run and an open one on read-only media; yields (url, folder, events)."""
    folder = tmp_path / "media"
    folder.mkdir()
    url = f"sqlite:///{folder / 'ledger.db'}"
    record_small_run(url)
    with Ledger.open(url) as ledger:
        ledger.start_run("open", seed=2, run_id="open")
    events = 8
    if request.param == "writer-killed":
        child = multiprocessing.get_context("fork").Process(target=_kill_mid_run, args=(url,))
        child.start()
        child.join(120)
        assert child.exitcode == -signal.SIGKILL
        assert (folder / "ledger.db-wal").stat().st_size > 0
        events += 4
    assert rawdb.run(url, "PRAGMA journal_mode") == [("wal",)]
    before = fingerprint(url)
    names = sorted(p.name for p in folder.iterdir())
    for path in folder.iterdir():
        path.chmod(0o444)
    folder.chmod(0o555)
    try:
        probe = confined("-c", f"open({str(folder / 'probe')!r}, 'w')")
        assert probe.returncode != 0 and "PermissionError" in probe.stderr, "media not read-only"
        yield url, folder, events
        assert sorted(p.name for p in folder.iterdir()) == names
    finally:
        folder.chmod(0o755)
        for path in folder.iterdir():
            path.chmod(0o644)
    assert fingerprint(url) == before


def test_reads_work_on_read_only_media(media: tuple[str, Path, int], tmp_path: Path) -> None:
    url, _, events = media
    runs = kasmina(url, "runs")
    assert runs.returncode == 0 and "victim" in runs.stdout and "open" in runs.stdout, runs.stderr
    verify = kasmina(url, "verify")
    assert verify.returncode == 0, verify.stderr
    assert verify.stdout.splitlines()[-1].startswith(f"verify: OK ({events} events")
    history = kasmina(url, "history", "victim")
    assert history.returncode == 0, history.stderr
    assert "RunStarted" in history.stdout and "RunFinished" in history.stdout
    count = kasmina(url, "sql", "SELECT COUNT(*) AS n FROM events", "--format", "csv")
    assert count.returncode == 0 and count.stdout.split() == ["n", str(events)], count.stderr
    current = kasmina(url, "db", "current")
    assert current.stdout.strip() == f"{migrate.HEAD_REVISION} (head)", current.stderr
    page = tmp_path / "run.html"
    report = kasmina(url, "report", "victim", "-o", str(page))
    assert report.returncode == 0 and page.stat().st_size > 0, report.stderr


def test_a_write_on_read_only_media_is_one_line(media: tuple[str, Path, int]) -> None:
    url, folder, _ = media
    proc = kasmina(
        url,
        "append",
        "open",
        "--type",
        "SeedGerminated",
        "--stream",
        "slot/a",
        "--payload",
        '{"slot_id": "a", "blueprint_id": "conv_small", "params": 10}',
    )
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
    assert lines == [
        f"error: cannot write to {folder / 'ledger.db'}: the file or its folder "
        "is read-only (the ledger was opened for reading only)"
    ]
    for migration in (["upgrade"], ["downgrade", "base", "--discard-data"]):
        proc = kasmina(url, "db", *migration)
        assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
        assert proc.stderr.strip() == (
            f"error: cannot migrate {folder / 'ledger.db'}: the file or its folder is read-only"
        )


def test_a_log_that_cannot_be_read_is_refused_rather_than_skipped(tmp_path: Path) -> None:
    """A killed writer's log without its index: reading the file alone would miss commits."""
    folder = tmp_path / "media"
    folder.mkdir()
    path = folder / "ledger.db"
    url = f"sqlite:///{path}"
    record_small_run(url)
    child = multiprocessing.get_context("fork").Process(target=_kill_mid_run, args=(url,))
    child.start()
    child.join(120)
    (folder / "ledger.db-shm").unlink()
    names = sorted(p.name for p in folder.iterdir())
    for file in folder.iterdir():
        file.chmod(0o444)
    folder.chmod(0o555)
    try:
        for args in (["runs"], ["verify"], ["sql", "SELECT COUNT(*) FROM events"]):
            proc = kasmina(url, *args)
            assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
            assert proc.stderr.strip() == (
                f"error: cannot read {path}: it is on read-only media and its write-ahead log "
                f"{path}-wal may hold commits not yet in the file, which SQLite reads only in "
                "a writable folder; copy both files to one"
            )
        assert sorted(p.name for p in folder.iterdir()) == names
    finally:
        folder.chmod(0o755)
    assert rawdb.run(url, "SELECT COUNT(*) FROM events") == [(11,)]
