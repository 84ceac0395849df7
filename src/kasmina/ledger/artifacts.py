"""The artifact store: files (checkpoints) kept by their SHA-256, beside the ledger.

The ledger records a file's digest and size; the store keeps its bytes under
a name made from the digest alone, so two equal checkpoints are one file, a
file cannot change without its name lying, and no path read back from the
database ever chooses which file is opened. Writes go to a temporary file
in the same folder, are synced, and are renamed into place, so a process
killed mid-write leaves no half file under a digest's name.
"""

from __future__ import annotations

import hashlib
import os
import re
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

from kasmina.errors import KasminaError
from kasmina.ledger.urls import sqlite_path

#: The environment variable naming the store when ``--artifacts`` is not given.
ARTIFACTS_ENV = "KASMINA_ARTIFACTS"
_DIGEST = re.compile(r"[0-9a-f]{64}")


class ArtifactError(KasminaError):
    """An artifact that cannot be stored or read back as recorded."""


def artifact_path(digest: str) -> str:
    """Where a digest's file lives, relative to the store (what `CheckpointSaved.path` holds)."""
    if not _DIGEST.fullmatch(digest):
        raise ArtifactError(f"{digest!r} is not a SHA-256 digest")
    return f"sha256/{digest[:2]}/{digest}"


class Problem(NamedTuple):
    """Why a recorded artifact does not check out: its file is `missing`, or is not as recorded."""

    missing: bool
    detail: str


@dataclass(frozen=True)
class Stored:
    digest: str
    size: int
    path: str


@dataclass(frozen=True)
class ArtifactStore:
    root: Path

    def put(self, data: bytes) -> Stored:
        """Keep `data` under its digest (a file already there with that digest is kept)."""
        digest = hashlib.sha256(data).hexdigest()
        relative = artifact_path(digest)
        target = self.root / relative
        if not (target.is_file() and self._digest_of(target) == digest):
            target.parent.mkdir(parents=True, exist_ok=True)
            fd, temporary = tempfile.mkstemp(dir=target.parent, prefix=".partial-")
            try:
                with os.fdopen(fd, "wb") as out:
                    out.write(data)
                    out.flush()
                    os.fsync(out.fileno())
                os.replace(temporary, target)
            except BaseException:
                Path(temporary).unlink(missing_ok=True)
                raise
            _sync_folder(target.parent)
        return Stored(digest, len(data), relative)

    def get(self, digest: str) -> bytes:
        """The bytes stored under `digest`, checked against it."""
        problem = self.problem(digest, None)
        if problem is not None:
            raise ArtifactError(problem.detail)
        return (self.root / artifact_path(digest)).read_bytes()

    def problem(self, digest: str, size: int | None, path: str | None = None) -> Problem | None:
        """What is wrong with the recorded artifact `digest`, or None when its file is sound."""
        try:
            relative = artifact_path(digest)
        except ArtifactError as exc:
            return Problem(False, str(exc))
        if path is not None and path != relative:
            return Problem(
                False, f"artifact {digest} is recorded at {path!r}, not at its place {relative!r}"
            )
        file = self.root / relative
        if not file.is_file():
            return Problem(True, f"artifact {digest} is missing from {self.root}")
        found = self._digest_of(file)
        if found != digest:
            return Problem(False, f"artifact {digest} is corrupt: its file hashes to {found}")
        if size is not None and file.stat().st_size != size:
            return Problem(
                False, f"artifact {digest} has {file.stat().st_size} bytes, {size} recorded"
            )
        return None

    @staticmethod
    def _digest_of(file: Path) -> str:
        digest = hashlib.sha256()
        with file.open("rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                digest.update(chunk)
        return digest.hexdigest()


def _sync_folder(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def artifact_store(
    url: str, explicit: str | os.PathLike[str] | None = None, env: Mapping[str, str] | None = None
) -> ArtifactStore | None:
    """The store for the ledger at `url`: `explicit`, else ``KASMINA_ARTIFACTS``, else the
    folder ``<file>.artifacts`` beside a SQLite file; None where there is none (PostgreSQL).
    """
    chosen = explicit if explicit is not None else (env or os.environ).get(ARTIFACTS_ENV)
    if chosen:
        return ArtifactStore(Path(chosen).expanduser().resolve())
    path = sqlite_path(url)
    if path is None or path == ":memory:":
        return None
    file = Path(path).expanduser().resolve()
    return ArtifactStore(file.with_name(file.name + ".artifacts"))


__all__ = [
    "ARTIFACTS_ENV",
    "ArtifactError",
    "ArtifactStore",
    "Problem",
    "Stored",
    "artifact_path",
    "artifact_store",
]
