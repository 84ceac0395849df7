"""Size: history, sql and export stream, whatever the run's length.

Before: `history RUN` built one rich table of every event (a 108,000-event
run took 104 s and 1.17 GB; on a million events it had printed nothing and
held 909 MB after 90 s), and `sql` did the same for its table. Now every
format streams: a result longer than a screenful is printed as fixed-width
lines as it is read. These tests hold each command's peak Python memory,
measured by tracemalloc, to a small fraction of what it prints: anything
that gathers the rows first needs more than the output itself. No timing.
"""

from __future__ import annotations

import tracemalloc
from collections.abc import Iterator
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path

import pytest

from kasmina.cli import main
from kasmina.ledger import Ledger
from kasmina.replay.synthetic import synthetic_run

#: A short run and one three times as long (about 10,000 and 30,000 events).
EPOCHS = {"short": 1100, "long": 3300}


class Sink:
    """A stdout that counts what is written and keeps none of it."""

    def __init__(self) -> None:
        self.chars = 0
        self.lines = 0

    def write(self, text: str) -> int:
        self.chars += len(text)
        self.lines += text.count("\n")
        return len(text)

    def flush(self) -> None:
        pass

    def isatty(self) -> bool:
        return False


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, dict[str, str]]]:
    url = f"sqlite:///{tmp_path_factory.mktemp('size') / 'long.db'}"
    with Ledger.open(url) as ledger:
        ids = {
            size: synthetic_run(ledger, epochs=epochs, slots=8, seed=0, gc_period=1000)
            for size, epochs in EPOCHS.items()
        }
    yield url, ids


def _peak(argv: list[str]) -> tuple[int, Sink]:
    sink = Sink()
    with redirect_stdout(Sink()):  # type: ignore[type-var]
        main(argv[:2] + ["runs"])  # imports and caches warmed outside the measurement
    tracemalloc.start()
    try:
        with redirect_stdout(sink), redirect_stderr(Sink()):  # type: ignore[type-var]
            code = main(argv)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert code == 0
    return peak, sink


COMMANDS = {
    "history-jsonl": ["history", "{run}", "--format", "jsonl"],
    "history-json": ["history", "{run}", "--format", "json"],
    "history-csv": ["history", "{run}", "--format", "csv"],
    "history-table": ["history", "{run}"],
    "sql-csv": ["sql", "SELECT * FROM events WHERE run_id = '{run}'", "--format", "csv"],
    "sql-json": ["sql", "SELECT * FROM events WHERE run_id = '{run}'", "--format", "json"],
    "sql-jsonl": ["sql", "SELECT * FROM events WHERE run_id = '{run}'", "--format", "jsonl"],
    "sql-table": ["sql", "SELECT * FROM events WHERE run_id = '{run}'"],
    "export-csv": ["export", "{run}", "--format", "csv", "-o", "{tmp}"],
}


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_memory_does_not_grow_with_the_run(
    runs: tuple[str, dict[str, str]],
    command: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    url, ids = runs
    peaks, sizes = {}, {}
    for size, run_id in ids.items():
        folder = tmp_path / size
        argv = [a.replace("{run}", run_id).replace("{tmp}", str(folder)) for a in COMMANDS[command]]
        with capsys.disabled():
            peaks[size], sink = _peak(["--db", url, *argv])
        sizes[size] = (
            sum(p.stat().st_size for p in folder.iterdir()) if folder.exists() else sink.chars
        )
    assert sizes["long"] > 2.5 * sizes["short"]  # three times the events, printed
    # Gathering the rows first would need three times the memory too.
    assert peaks["long"] < 1.3 * peaks["short"], f"peaks {peaks}, output {sizes}"
    assert peaks["long"] < sizes["long"]


def test_a_long_table_is_printed_as_lines_a_short_one_as_a_table(
    runs: tuple[str, dict[str, str]], capsys: pytest.CaptureFixture[str]
) -> None:
    url, ids = runs
    main(["--db", url, "sql", "SELECT position FROM events LIMIT 5"])
    assert capsys.readouterr().out.splitlines()[0].startswith("┏")
    main(["--db", url, "history", ids["short"]])
    lines = capsys.readouterr().out.splitlines()
    with Ledger.open(url) as ledger:
        events = next(r.events for r in ledger.runs() if r.run_id == ids["short"])
    assert lines[0].split() == ["pos", "epoch", "stream", "v", "event", "seed", "detail"]
    assert len(lines) == events + 1 and lines[1].split()[0] == "1"
