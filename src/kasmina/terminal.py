"""Text from the database made safe to show on a terminal.

Run ids, stream ids, seed ids and payload strings are chosen by whoever
recorded the events. Printed raw, an escape sequence in one can move the
cursor, rewrite earlier lines, retitle the window or hide text (``ESC [``,
OSC, ``\\r``, ``\\b``, bidi overrides), and a ``[/red]`` breaks rich's markup.
So every such string is shown through `visible` (each control character as
its escape, e.g. ``\\x1b``, ``\\u202e``) and reaches rich as a `Text`, never
as markup. JSON and CSV output keep the exact data: it is meant for programs.
"""

from __future__ import annotations

from rich.text import Text

#: C0 controls, DEL, C1 controls, bidi embeddings, overrides, isolates and
#: marks, and the Unicode line and paragraph separators.
_CONTROLS = (
    [*range(0x00, 0x20), *range(0x7F, 0xA0)]
    + [0x061C, 0x200E, 0x200F, 0x2028, 0x2029]
    + [*range(0x202A, 0x202F), *range(0x2066, 0x206A)]
)
_ESCAPES = {c: (f"\\x{c:02x}" if c < 0x100 else f"\\u{c:04x}") for c in _CONTROLS}


def visible(text: str) -> str:
    """`text` with every control character written as its escape."""
    return text.translate(_ESCAPES)


def cell(text: object) -> Text:
    """A table cell (or any rich renderable) that shows `text` as it is, safely."""
    return Text(visible(str(text)))


__all__ = ["cell", "visible"]
