"""A new SQLite ledger file comes into being whole, in WAL mode, or not at all."""

from __future__ import annotations

import contextlib
import fcntl
import glob
import os
import secrets
import sqlite3
from collections.abc import Callable, Iterator
from contextlib import contextmanager


@contextmanager
def folder_lock(path: str) -> Iterator[None]:
    """Hold an exclusive `flock` on the file's folder while a new file is made or migrated.

    The ranks of a distributed run open one new file at once; without this,
    two of them would both find it missing or empty and both create the
    schema. The lock is on the folder, never the file: closing any descriptor
    of the database file drops this process's POSIX locks on it, SQLite's
    included, and then another process may take itself for the last
    connection and delete the write-ahead log under us (a test lost committed
    runs that way). A second lock from the same process blocks: never nest it.
    """
    folder = os.open(os.path.dirname(os.path.abspath(path)), os.O_RDONLY)
    try:
        fcntl.flock(folder, fcntl.LOCK_EX)
        yield
    finally:
        os.close(folder)  # releases the flock


def create_file(path: str, build: Callable[[str], None]) -> bool:
    """Make a new database at `path` whole or not at all; False if a file is there already.

    A migration killed midway used to leave tables without a revision, a file
    that could be neither opened nor upgraded. So `build` makes the file
    under a temporary name in the same folder and it is hard-linked into
    place, which never replaces a file another process made meanwhile. Every
    builder holds the folder lock, so a temporary file found under it was
    left by a killed builder, and is removed.
    """
    folder, name = os.path.split(os.path.abspath(path))
    with folder_lock(path):
        if os.path.lexists(path):
            return False
        for stale in glob.glob(os.path.join(glob.escape(folder), f".{glob.escape(name)}.*.new*")):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(stale)
        building = os.path.join(folder, f".{name}.{secrets.token_hex(8)}.new")
        try:
            build(building)
            _to_wal(building)
            _fsync(building)
            try:
                os.link(building, path)
            except FileExistsError:
                return False  # made by something that does not take the lock: leave it be
            _fsync(folder)
        finally:
            for leftover in ("", "-journal", "-wal", "-shm"):
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(building + leftover)
    return True


def _to_wal(path: str) -> None:
    """Switch to WAL before the file is in place: the switch writes a journal of its own."""
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        conn.execute("PRAGMA journal_mode=WAL")
    finally:
        conn.close()  # the last connection: the log is folded in and removed


def _fsync(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
