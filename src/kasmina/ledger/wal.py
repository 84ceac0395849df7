"""Copying SQLite's write-ahead log back into the database, on a thread of its own.

In WAL mode every commit appends pages to the log, and a copy-back (SQLite
calls it a checkpoint; kasmina keeps that word for a training run's saved
state) copies them into the database file and syncs both. SQLite runs that copy
inside whichever ``COMMIT`` takes the log past 1,000 pages, so one append in
two or three paid for the copy and two ``fsync`` calls; profiling a batched
append put that at about 40% of its storage time. The sqlite3 module releases
the GIL while SQLite works, so a copy-back on another connection, in another
thread, overlaps with the caller building its next batch instead.

Durability is unchanged. A ``PASSIVE`` copy-back waits for no reader or
writer, a commit never waits for it, and it is requested after about the
same amount of log as SQLite's own (see `WalCopier.committed`); under
``synchronous=NORMAL`` the log is synced at each copy-back, as before, and
under ``FULL`` at each commit, as before.

The log file is longer, though. SQLite starts it over only when a transaction
begins with all of it copied back, and a busy writer has usually begun its
next one by the time the thread is done. So the writer keeps SQLite's own
copy-back (``wal_autocheckpoint``) as a backstop at `BACKSTOP_PAGES` (16 MiB): when the log reaches
that, the writer finds nearly all of it copied already, finishes the copy,
and the log starts over. Measured on the benchmark's workload, batched
appends were about 20% faster than with the copy-back inside the commit,
and 11% faster than with SQLite's own at the backstop's size alone.
"""

from __future__ import annotations

import sqlite3
import threading
import weakref

#: Log pages (4 KiB) after which a copy-back is requested: SQLite's default.
COPY_PAGES = 1000
#: The writer's own automatic copy-back, for when the thread has fallen behind.
BACKSTOP_PAGES = 4 * COPY_PAGES
#: A transaction rewrites a leaf page of the table and of each index at least.
PAGES_PER_TRANSACTION = 8
#: A row is about 1 KiB in the table and its indexes, logged with their pages.
ROWS_PER_PAGE = 2.5


class _Shared:
    """What the writer and the thread share; the thread holds this, never its owner."""

    def __init__(self) -> None:
        self.cond = threading.Condition()
        self.requested = 0
        self.done = 0
        self.copies = 0
        self.stop = False

    def stop_thread(self) -> None:
        with self.cond:
            self.stop = True
            self.cond.notify_all()


class WalCopier:
    """One daemon thread with its own connection, woken as the log grows.

    The thread starts at the first request and stops at `close`, or when the
    store that owns this is garbage-collected without closing.
    """

    def __init__(self, path: str) -> None:
        self._path = path
        self._pages = 0.0
        self._shared = _Shared()
        self._thread: threading.Thread | None = None
        weakref.finalize(self, self._shared.stop_thread)

    @property
    def copies(self) -> int:
        """Copy-backs this thread has finished (for tests and diagnostics)."""
        return self._shared.copies

    def committed(self, rows: int) -> None:
        """Count a commit of `rows` rows toward the next copy-back (estimated log pages)."""
        shared = self._shared
        with shared.cond:
            self._pages += PAGES_PER_TRANSACTION + rows / ROWS_PER_PAGE
            if self._pages < COPY_PAGES or shared.stop:
                return
            self._pages = 0.0
            shared.requested += 1
            if self._thread is None:
                self._thread = threading.Thread(
                    target=_run, args=(self._path, shared), name="kasmina-wal", daemon=True
                )
                self._thread.start()
            shared.cond.notify_all()

    def drain(self) -> None:
        """Wait until every copy-back requested so far has run."""
        shared = self._shared
        with shared.cond:
            while shared.done < shared.requested and self._alive():
                shared.cond.wait(0.1)

    def close(self) -> None:
        """Stop the thread after any copy-back in progress (the writer's close ends the log)."""
        self._shared.stop_thread()
        thread = self._thread
        if thread is not None and thread.is_alive():
            thread.join()

    def _alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()


def _run(path: str, shared: _Shared) -> None:
    try:
        conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=0)
    except sqlite3.Error:
        return  # the file is gone or unreadable; the writer's backstop copies alone
    try:
        while True:
            with shared.cond:
                while shared.done == shared.requested and not shared.stop:
                    shared.cond.wait()
                if shared.stop:
                    return
                target = shared.requested
            try:
                conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
                copied = True
            except sqlite3.OperationalError:
                copied = False  # busy: another process is copying the same file back
            with shared.cond:
                shared.done = target
                shared.copies += copied
                shared.cond.notify_all()
    finally:
        conn.close()
