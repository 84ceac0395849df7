"""Files written whole or not at all.

Commands that write results (``kasmina sql --output``, ``kasmina export``,
``kasmina report``) must never leave a half-written file behind a failed
query, a full disk or a Ctrl-C, nor let a reader see one while it is written.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """Yield a temporary path beside `path`; if the block succeeds, it replaces `path`.

    The temporary file is ``.NAME.partial`` in the same folder, so the final
    rename stays on one file system and is atomic; on any error it is removed
    and an older `path` is left as it was. Writers that want a path (pyarrow)
    and writers that want a file object (``partial.open("w")``) both fit.
    """
    partial = path.with_name(f".{path.name}.partial")
    try:
        yield partial
        partial.replace(path)
    finally:
        partial.unlink(missing_ok=True)


__all__ = ["atomic_path"]
