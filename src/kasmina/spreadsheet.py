"""Text cells a spreadsheet opens as text, never as a formula.

CSV files from `kasmina export` and `kasmina sql` end up in spreadsheets, and
a recorded string is chosen by whoever wrote the event: a cell such as
``=HYPERLINK(...)`` or ``@SUM(...)`` would run as a formula when the file is
opened (CSV injection). The usual rule is to put a ``'`` in front of a text
cell that starts with ``=``, ``+``, ``-``, ``@``, a tab or a carriage return.

Two refinements keep the files exact and auditable. A text cell that is a
plain decimal number (``-1.5``, ``+3e8``) is left alone: a spreadsheet reads it
as that number, which is harmless. And a cell that already starts with ``'``s
followed by one of those characters gets the ``'`` too, so the rule can always
be undone: remove the first character of every cell that matches
``'+[=+\\-@\\t\\r]`` at its start (`original`). Typed columns (numbers,
booleans, times) are never touched; only text is.

A row is written by `CsvWriter`: Python's CSV writer, told to end lines with
``\n``, leaves a cell holding a bare ``\r`` unquoted, and every CSV reader
takes that ``\r`` for the end of a row, so a recorded string could forge rows.
A row with such a cell is written with every field quoted.
"""

from __future__ import annotations

import csv
import re
from collections.abc import Sequence
from typing import IO

_RISKY = re.compile(r"'*[=+\-@\t\r]")
_PREFIXED = re.compile(r"'+[=+\-@\t\r]")
_NUMBER = re.compile(r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?")


def safe_cell(text: str) -> str:
    """`text` as a CSV cell a spreadsheet will not evaluate."""
    if _RISKY.match(text) and not _NUMBER.fullmatch(text):
        return "'" + text
    return text


def original(cell: str) -> str:
    """The text `safe_cell` was given: the inverse, for readers of the files."""
    return cell[1:] if _PREFIXED.match(cell) else cell


class CsvWriter:
    """CSV rows ending in ``\n`` that every reader splits where they were written."""

    def __init__(self, dest: IO[str]) -> None:
        self._minimal = csv.writer(dest, lineterminator="\n")
        self._quoted = csv.writer(dest, lineterminator="\n", quoting=csv.QUOTE_ALL)

    def writerow(self, cells: Sequence[object]) -> None:
        if any(type(c) is str and "\r" in c for c in cells):
            self._quoted.writerow(cells)
        else:
            self._minimal.writerow(cells)


__all__ = ["CsvWriter", "original", "safe_cell"]
