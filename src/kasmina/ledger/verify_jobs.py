"""Verifying one long run in several processes, each checking a range of its positions.

A row's hash covers its stream's previous hash and the run's previous hash,
and both are stored in rows before it, so a range can be checked on its own
once the state before it (each stream's last version and hash, the run's
last hash) is read from the database. That state is what one process
checking the whole run would hold there if the rows before were sound, and
the ranges before check that they are. If any range finds a fault the run is
checked again in one process, so the faults listed are always the
sequential check's, word for word: the jobs only make a sound run faster.
"""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path

from kasmina.ledger.errors import translate
from kasmina.ledger.rows import RowReader, StoredRun
from kasmina.ledger.store import Store, integer
from kasmina.ledger.verify import ChainChecker, RunChecker, SavedArtifact, check_sequentially

#: Events a job must have to pay for its process: about 0.1 s to start (it loads no
#: event models), the state before its range read, and the answer sent back.
EVENTS_PER_JOB = 100_000


@dataclass(frozen=True)
class _Start:
    """A checker's state after position `after`, read from the rows up to it."""

    after: int
    heads: dict[str, tuple[int, str]]
    run_prev: str | None
    sealed: bool


@dataclass(frozen=True)
class _Checked:
    """What a range's checker found, sent back from its process."""

    clean: bool
    count: int
    heads: dict[str, tuple[int, str]]
    run_prev: str | None
    last_position: int | None
    sealed: bool
    saved: list[SavedArtifact]


def available_cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def in_jobs(jobs: int | None) -> RunChecker:
    """A run checker that splits a long run between `jobs` processes (None: one per CPU,
    while each has `EVENTS_PER_JOB`); one job is `check_sequentially`."""
    if jobs is not None and jobs <= 1:
        return check_sequentially
    return partial(_check_in_jobs, jobs)


def _check_in_jobs(
    jobs: int | None,
    checker: ChainChecker,
    reader: RowReader,
    run: StoredRun,
    saved: list[SavedArtifact],
) -> None:
    ends = range_ends(reader.store, run, jobs)
    if not ends:
        check_sequentially(checker, reader, run, saved)
        return
    workers = [_Worker() for _ in ends]  # each interpreter starts while the states are read
    try:
        starts = [start_state(reader.store, run, after) for after in ends]
        jobs_args = (reader.store.opener(), run, checker.form, checker.link, checker.trusted)
        for worker, start, until in zip(workers, starts, [*ends[1:], None], strict=True):
            worker.send((*jobs_args, start, until))
        first = ChainChecker(reader.store, run.run_id, readable=True, form=checker.form,
                             link=checker.link, trusted=checker.trusted)  # fmt: skip
        found = [_checked(first, reader, run, None, ends[0]), *(w.result() for w in workers)]
    except BaseException:
        for worker in workers:
            worker.stop()
        raise
    results = [r for r in found if r is not None and r.clean]
    if len(results) < len(found):
        check_sequentially(checker, reader, run, saved)
        return
    last = results[-1]
    checker.count = sum(r.count for r in results)
    checker.heads, checker.sealed = last.heads, last.sealed
    checker.run_prev, checker.last_position = last.run_prev, last.last_position
    for result in results:
        saved.extend(result.saved)


class _Worker:
    """A range checked by `main` in a new Python process, its job and answer
    pickled through pipes: a new interpreter, so a script that calls `verify` without
    a ``__main__`` guard is not run again (as multiprocessing's spawn would), and no
    open connection is inherited (as fork would)."""

    def __init__(self) -> None:
        package_root = str(Path(__file__).resolve().parents[2])
        path = os.environ.get("PYTHONPATH")
        env = {**os.environ, "PYTHONPATH": package_root + (os.pathsep + path if path else "")}
        self._process: subprocess.Popen[bytes] | None = None
        try:
            self._process = subprocess.Popen(
                [sys.executable, "-c", "from kasmina.ledger.verify_jobs import main; main()"],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                env=env,
            )
        except OSError:  # no interpreter to start: `result` says None
            pass

    def send(self, job: tuple[object, ...]) -> None:
        """The range to check; the process waits for it, and ends at once without one."""
        process = self._process
        if process is None or process.stdin is None:
            return
        try:
            with process.stdin as job_pipe:
                job_pipe.write(pickle.dumps(job))
        except OSError:  # it died at once: `result` says None
            pass

    def stop(self) -> None:
        """End the process, its range no longer wanted."""
        process = self._process
        if process is not None:
            process.kill()
            process.wait()
            for pipe in (process.stdin, process.stdout):
                if pipe is not None:
                    pipe.close()

    def result(self) -> _Checked | None:
        """What the range's checker found; None if its process failed (the caller then
        checks the run in one process, and that check says what is wrong)."""
        process = self._process
        if process is None or process.stdout is None:
            return None
        with process.stdout as answer:
            out = answer.read()
        if process.wait() != 0:
            return None
        try:
            found = pickle.loads(out)
        except (pickle.UnpicklingError, EOFError, ValueError):
            return None
        return found if isinstance(found, _Checked) else None


def range_ends(store: Store, run: StoredRun, jobs: int | None) -> list[int]:
    """The last position of every range but the last; none where one job is best.

    A run too short to split is told by its first and last positions before
    its events are counted: the count reads every row of the run, and most
    runs a verify meets are short.
    """
    with translate(store.url):
        if _jobs_for(_position_span(store, run), jobs) <= 1:
            return []
        count = store.fetch("SELECT COUNT(*) FROM ledger_events WHERE run_key = ?", [run.run_key])
        events = integer(count[0][0], "a count")
        wanted = _jobs_for(events, jobs)
        if wanted <= 1:
            return []
        ends = []
        for k in range(1, wanted):
            found = store.fetch(
                "SELECT position FROM ledger_events WHERE run_key = ? "
                "ORDER BY position LIMIT 1 OFFSET ?",
                [run.run_key, events * k // wanted - 1],
            )
            ends.append(integer(found[0][0], "a position"))
        return ends


def _jobs_for(events: int, jobs: int | None) -> int:
    wanted = min(available_cpus(), events // EVENTS_PER_JOB) if jobs is None else jobs
    return min(wanted, events)


def _position_span(store: Store, run: StoredRun) -> int:
    """No fewer than the run's events, as positions are unique: two probes of the
    (run_key, position) index. Runs written side by side make it larger, never smaller."""
    sql = "SELECT position FROM ledger_events WHERE run_key = ? ORDER BY position {} LIMIT 1"
    first = store.fetch(sql.format("ASC"), [run.run_key])
    if not first:
        return 0
    last = store.fetch(sql.format("DESC"), [run.run_key])
    return integer(last[0][0], "a position") - integer(first[0][0], "a position") + 1


def start_state(store: Store, run: StoredRun, after: int) -> _Start:
    """What a checker of the whole run holds after position `after`, if the rows up
    to it are sound (the ranges before check that they are)."""
    with translate(store.url):
        heads = {}
        for key, stream in run.streams.items():
            head = _head_before(store, key, after)
            if head is not None:
                heads[str(stream)] = (head[0], str(store.view_hash(head[1])))
        last = store.fetch(
            "SELECT hash FROM ledger_events WHERE run_key = ? AND position <= ? "
            "ORDER BY position DESC LIMIT 1",
            [run.run_key, after],
        )
        sealed = store.fetch(
            "SELECT 1 FROM ledger_events WHERE run_key = ? AND position <= ? "
            "AND type_key IN (SELECT type_key FROM ledger_types WHERE event_type = 'RunFinished') "
            "LIMIT 1",
            [run.run_key, after],
        )
    return _Start(after, heads, str(store.view_hash(last[0][0])) if last else None, bool(sealed))


def _head_before(store: Store, stream_key: object, after: int) -> tuple[int, object] | None:
    """The stream's last version at or before position `after`, and its hash, found by
    halving its versions (a probe of the unique index each): in a sound run a stream's
    versions rise with position. In any other, the answer may be wrong, and a range
    before this one finds the fault that sends the run to the one-process check."""
    top = store.fetch(
        "SELECT MAX(version) FROM ledger_events WHERE stream_key = ?",
        [stream_key],  # type: ignore[list-item]
    )
    low, high = 1, top[0][0] if top and type(top[0][0]) is int else 0
    found = None
    while low <= high:
        middle = (low + high) // 2
        row = store.fetch(
            "SELECT position, hash FROM ledger_events WHERE stream_key = ? AND version = ?",
            [stream_key, middle],  # type: ignore[list-item]
        )
        if row and type(row[0][0]) is int and row[0][0] <= after:
            found, low = (middle, row[0][1]), middle + 1
        else:
            high = middle - 1
    return found


def _check_range(
    opener: Callable[[], Store],
    run: StoredRun,
    form: int,
    link: str | None,
    trusted: str | None,
    start: _Start,
    until: int | None,
) -> _Checked:
    """One range, in a process of its own."""
    store = opener()
    try:
        reader = RowReader(store, lean=True, ranked=True)
        checker = ChainChecker(
            store,
            run.run_id,
            heads=start.heads,
            sealed=start.sealed,
            readable=True,
            form=form,
            link=link,
            run_prev=start.run_prev,
            trusted=trusted,
        )
        return _checked(checker, reader, run, start.after, until)
    finally:
        store.close()


def _checked(
    checker: ChainChecker, reader: RowReader, run: StoredRun, after: int | None, until: int | None
) -> _Checked:
    saved: list[SavedArtifact] = []
    pages = reader.stored_pages(run, after=after, until=until)
    checker.check_stored(run, pages, partial(reader.render, run), saved)
    return _Checked(
        not checker.faults,
        checker.count,
        checker.heads,
        checker.run_prev,
        checker.last_position,
        checker.sealed,
        saved,
    )


def main() -> None:
    """A worker process (`_Worker`): a range's job from stdin, what its checker found to stdout."""
    job = sys.stdin.buffer.read()
    if not job:  # the parent stopped before sending one
        return
    sys.stdout.buffer.write(pickle.dumps(_check_range(*pickle.loads(job))))
