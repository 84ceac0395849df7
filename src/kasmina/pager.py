"""Long output on a terminal goes through a pager, as git's and psql's does.

The pager is ``$KASMINA_PAGER``, else ``$PAGER``, else ``less`` with
``LESS=FRX`` unless set (quit at once when the text fits one screen, keep
colours, leave the text on the screen). ``cat`` or an empty value turns it
off, as does a command's ``--no-pager``; into a pipe or a file nothing is
paged. A pager that cannot start is skipped: the text is printed as usual.
"""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import IO

from rich.console import Console


def pager_command() -> list[str]:
    """The pager to run; empty for none."""
    for name in ("KASMINA_PAGER", "PAGER"):
        if name in os.environ:
            words = shlex.split(os.environ[name])
            return [] if words in ([], ["cat"]) else words
    return ["less"]


@contextmanager
def paged(console: Console, *, wanted: bool = True) -> Iterator[tuple[Console, IO[str]]]:
    """A console and a text stream to print the output to: the pager's, or the usual ones.

    The reader may quit the pager before the end: what is left is dropped,
    and no broken pipe reaches them.
    """
    command = pager_command() if wanted and console.is_terminal else []
    process = None
    if command:
        env = {**os.environ, "LESS": os.environ.get("LESS", "FRX")}
        try:
            process = subprocess.Popen(command, stdin=subprocess.PIPE, text=True, env=env)
        except OSError:
            process = None
    if process is None or process.stdin is None:
        yield console, sys.stdout
        return
    pipe = process.stdin
    to_pager = Console(file=pipe, width=console.width, force_terminal=True)
    try:
        yield to_pager, pipe
    except BrokenPipeError:
        pass
    finally:
        try:
            pipe.close()
        except BrokenPipeError:
            pass
        process.wait()
