"""Files written whole or not at all, and never through a link someone planted.

Commands that write results (``kasmina sql --output``, ``kasmina export``,
``kasmina report``) must never leave a half-written file behind a failed
query, a full disk or a Ctrl-C, nor let a reader see one while it is written.
They often write into shared folders (``/tmp``, a team's share), where a
predictable temporary name is an invitation: a symlink planted there would be
followed and its target overwritten with our permissions. So the temporary
file has a random name and is created exclusively, refusing to follow a link;
the final rename replaces the destination's directory entry, so a symlink at
the destination itself is replaced by the new file and its target is left
alone.
"""

from __future__ import annotations

import os
import secrets
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO

from kasmina.errors import KasminaError

_FLAGS = os.O_RDWR | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)
_FLAGS |= getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_BINARY", 0)
_ATTEMPTS = 16


def _usual_mode() -> int:
    """What ``open(path, "w")`` would have given: 0666 less the umask."""
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


def _create_exclusive(path: Path) -> tuple[int, Path]:
    """A new file of mode 0600 beside `path`, under a name nobody could have guessed."""
    for _ in range(_ATTEMPTS):
        partial = path.with_name(f".{path.name}.{secrets.token_hex(8)}.partial")
        try:
            return os.open(partial, _FLAGS, 0o600), partial
        except FileExistsError:
            continue
    raise KasminaError(f"cannot create a temporary file beside {path}: every name was taken")


def _checked(path: Path) -> None:
    """Refuse what a file cannot replace: no name (``-o ''``, ``.``, ``/``), a missing
    folder, a folder, and what is not a regular file where it leads (a device such as
    ``/dev/null``, a pipe, a socket), which the rename would replace by a plain file."""
    if path.name in ("", ".", ".."):
        raise KasminaError(f"an output needs a file name, got {str(path)!r}")
    if not path.parent.is_dir():
        raise KasminaError(f"cannot write {path}: folder {path.parent} does not exist")
    try:
        mode = path.stat().st_mode  # through a link: what the user means by the name
    except FileNotFoundError:
        return  # a new name, or a link to nothing, which the file replaces
    if stat.S_ISDIR(mode):
        raise KasminaError(f"cannot write {path}: it is a folder")
    if not stat.S_ISREG(mode):
        raise KasminaError(
            f"cannot write {path}: it is not a regular file (a device, pipe or socket), which "
            "kasmina would replace; leave -o out to write to standard output"
        )


@contextmanager
def _replacing(path: Path) -> Iterator[int]:
    """The descriptor of a new file beside `path`; if the block succeeds, it replaces `path`.

    The file is created with ``O_EXCL | O_NOFOLLOW`` under a random name
    (``.NAME.<random>.partial``) in `path`'s folder, so the rename stays on
    one file system and is atomic; it gets the usual mode just before the
    rename. On any error it is removed and an older `path` is left as it was.
    """
    _checked(path)
    fd, partial = _create_exclusive(path)
    try:
        yield fd
        os.replace(partial, path)
    finally:
        partial.unlink(missing_ok=True)


@contextmanager
def atomic_text(path: Path) -> Iterator[IO[str]]:
    """A UTF-8 text file (newlines as written) that replaces `path` whole, or not at all."""
    with _replacing(path) as fd, os.fdopen(fd, "w", encoding="utf-8", newline="") as dest:
        yield dest
        dest.flush()
        os.fchmod(fd, _usual_mode())


@contextmanager
def atomic_bytes(path: Path) -> Iterator[IO[bytes]]:
    """`atomic_text` for bytes: Parquet writers take a binary file object."""
    with _replacing(path) as fd, os.fdopen(fd, "wb") as dest:
        yield dest
        dest.flush()
        os.fchmod(fd, _usual_mode())


__all__ = ["atomic_bytes", "atomic_text"]
