"""Writer holds: a run is held by every process writing it, until it seals it or stops.

`kasmina runs close` seals a run whose writer crashed, and must never seal
one whose writer is alive. Nothing in the database can tell the two apart
(a crashed writer leaves its rows, or a heartbeat, behind), so a hold is a
lock that dies with its holder: on SQLite an `flock` on a file per run in a
folder beside the ledger (this module), on PostgreSQL a session advisory
lock (`kasmina.ledger.postgres`). Writers share it (the ranks of a
distributed run all write); the closer takes it alone, so it is refused
while any writer holds it.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from kasmina.errors import RunHeld


class FileHolds:
    """A SQLite ledger's holds, in ``<file>-writers`` (named as SQLite names its own
    files), one file per run held. A file's name is a digest of the run id
    (never the id, which comes from users); its text is the last holder's
    process id and host, to name it in a refusal. The last holder to let
    go removes it, and the folder when it is empty, so that the folder is there
    only while runs are being written."""

    def __init__(self, ledger_path: str) -> None:
        self.folder = Path(f"{ledger_path}-writers")
        self._held: dict[str, int] = {}
        self._lock = threading.Lock()

    def _path(self, run_id: str) -> Path:
        return self.folder / f"{hashlib.sha256(run_id.encode()).hexdigest()[:32]}.lock"

    def _locked(self, path: Path, how: int) -> int | None:
        """A descriptor of `path` locked `how`, or None while another holds it.

        A file removed by its last holder between our open and our lock is
        opened again: a lock on a removed file is seen by no one.
        """
        while True:
            self.folder.mkdir(exist_ok=True)
            try:
                fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
            except FileNotFoundError:  # the last holder removed the folder: make it again
                continue
            try:
                fcntl.flock(fd, how | fcntl.LOCK_NB)
                if os.path.exists(path) and os.path.samestat(os.fstat(fd), os.stat(path)):
                    return fd
            except BlockingIOError:
                os.close(fd)
                return None
            except BaseException:
                os.close(fd)
                raise
            os.close(fd)

    def hold(self, run_id: str) -> bool:
        """Share the run's hold while this process writes it; True when this call took it.
        Where it cannot be had (a closer holds it for a moment, a folder kasmina cannot
        write) the write goes on unheld: holding only guards against `alone`."""
        if run_id in self._held:
            return False
        with self._lock:
            if run_id in self._held:
                return False
            try:
                fd = self._locked(self._path(run_id), fcntl.LOCK_SH)
            except OSError:
                return False
            if fd is None:
                return False
            try:  # who holds it, for a refusal to name; the hold stands without it
                os.ftruncate(fd, 0)
                os.pwrite(fd, f"{os.getpid()} {socket.gethostname()}\n".encode(), 0)
            except OSError:
                pass
            self._held[run_id] = fd
            return True

    def release(self, run_id: str) -> None:
        with self._lock:
            fd = self._held.pop(run_id, None)
            if fd is not None:
                self._let_go(self._path(run_id), fd)

    def release_all(self) -> None:
        with self._lock:
            for run_id, fd in list(self._held.items()):
                self._let_go(self._path(run_id), fd)
            self._held.clear()

    def _let_go(self, path: Path, fd: int) -> None:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # the last holder: remove it
            self._remove(path)
        except OSError:
            pass
        os.close(fd)

    def _remove(self, path: Path) -> None:
        """The run's file, and the folder once no run is held: nothing stays beside the
        ledger but while it is written."""
        path.unlink(missing_ok=True)
        try:
            self.folder.rmdir()
        except OSError:
            pass  # another run's file is in it

    @contextmanager
    def alone(self, run_id: str) -> Iterator[None]:
        """Hold the run alone for the block; `RunHeld` naming a holder while any has it."""
        self.release(run_id)
        path = self._path(run_id)
        fd = self._locked(path, fcntl.LOCK_EX)
        if fd is None:
            raise RunHeld(run_id, _holder(path))
        try:
            yield
        finally:
            self._remove(path)
            os.close(fd)


def _holder(path: Path) -> str:
    try:
        words = path.read_text(errors="replace").split()
    except OSError:
        words = []
    if len(words) >= 2 and words[0].isdigit():
        host = "".join(c for c in words[1] if c.isalnum() or c in "-._")[:64]
        return f"process {words[0]} on host {host}"
    return "another process"
