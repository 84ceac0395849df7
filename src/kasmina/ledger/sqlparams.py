"""Named parameters for `kasmina sql`: ``:name`` in a query, given as ``--param name=value``.

The read-only path hands PostgreSQL the query as text to run inside a
function (`kasmina.ledger.readonly_postgres`), where nothing can be bound, so
each ``:name`` is replaced by the value written as a SQL literal. The person
who gives the values also writes the query, so this grants nothing new; it
only has to be exact: a ``:name`` inside a string, a quoted name or a
comment, and PostgreSQL's ``::`` casts, are left alone, and a value is
quoted so that no character of it can end the literal.

A value written as a number is a number (``epoch >= :from``, ``value > :t``
compare numbers on both databases: as text, ``0.02`` was greater than every
number on SQLite, and the filter silently matched nothing); anything else is
text, also a number spelt another way (``007``, ``.5``, ``1_000``).
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from kasmina.errors import QueryError

#: A parameter's name, and a view's (`kasmina.frames`): a plain SQL identifier.
NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_NUMBER = re.compile(r"-?(?:0|[1-9][0-9]{0,17})(?:\.[0-9]{1,17})?(?:[eE][+-]?[0-9]{1,3})?")
_DOLLAR = re.compile(r"\$([A-Za-z_][A-Za-z0-9_]*)?\$")


def parse_params(pairs: list[str]) -> dict[str, str]:
    """``NAME=VALUE`` pairs as a mapping; one line naming a malformed or repeated pair."""
    params: dict[str, str] = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or NAME.fullmatch(name) is None:
            raise QueryError(
                f"--param {pair!r} is not NAME=VALUE (a NAME is a letter or _, then letters, "
                "digits or _)"
            )
        if name in params:
            raise QueryError(f"--param {name} is given twice")
        params[name] = value
    return params


def literal(value: str, dialect: str) -> str:
    """`value` as a SQL literal: a number bare (a negative one in brackets, so that
    ``10-:n`` never reads as a comment), else a quoted string."""
    if _NUMBER.fullmatch(value):
        return f"({value})" if value.startswith("-") else value
    if "\0" in value:
        raise QueryError("a --param value cannot hold a NUL character")
    quoted = "'" + value.replace("'", "''") + "'"
    if dialect != "sqlite" and "\\" in value:  # whatever standard_conforming_strings says
        return "E" + quoted.replace("\\", "\\\\")
    return quoted


def bind(query: str, params: Mapping[str, str], dialect: str) -> str:
    """`query` with every ``:name`` outside strings, quoted names and comments replaced by
    its value; a name with no value, or a value no ``:name`` uses, is one error line."""
    out: list[str] = []
    used: set[str] = set()
    i, n = 0, len(query)
    while i < n:
        c = query[i]
        end = _skipped(query, i, dialect)
        if end > i:
            out.append(query[i:end])
            i = end
        elif c == ":" and query.startswith("::", i):
            out.append("::")
            i += 2
        elif (
            c == ":"
            and not (i > 0 and _in_name(query[i - 1]))  # arr[lo:hi] is a slice
            and (found := NAME.match(query, i + 1)) is not None
        ):
            name = found.group()
            if name not in params:
                raise QueryError(f"the query uses :{name} but no --param {name}=VALUE is given")
            used.add(name)
            out.append(literal(params[name], dialect))
            i = found.end()
        else:
            out.append(c)
            i += 1
    unused = sorted(set(params) - used)
    if unused:
        raise QueryError(f"a value for :{unused[0]} is given but the query has no :{unused[0]}")
    return "".join(out)


def has_statement(query: str, dialect: str) -> bool:
    """Whether `query` holds more than comments, semicolons and blanks, read as `bind`
    reads it: a comment's marker inside a string belongs to the string."""
    i, n = 0, len(query)
    while i < n:
        end = _skipped(query, i, dialect)
        if end > i and not query.startswith(("--", "/*"), i):
            return True  # a string or a quoted name
        if end > i:
            i = end
        elif query[i].isspace() or query[i] == ";":
            i += 1
        else:
            return True
    return False


def _skipped(query: str, i: int, dialect: str) -> int:
    """Where a string, quoted name, comment or dollar quote starting at `i` ends (else `i`);
    an unclosed one runs to the end, as the database will say."""
    c = query[i]
    if c in "'\"`" or (c == "[" and dialect == "sqlite"):
        close = "]" if c == "[" else c
        backslashes = (
            c == "'"
            and dialect != "sqlite"
            and i > 0
            and query[i - 1] in "eE"
            and not (i > 1 and _in_name(query[i - 2]))
        )
        j = i + 1
        while j < len(query):
            if backslashes and query[j] == "\\":
                j += 2
                continue
            if query[j] == close:
                if close != "]" and query.startswith(close * 2, j):
                    j += 2
                    continue
                return j + 1
            j += 1
        return len(query)
    if query.startswith("--", i):
        newline = query.find("\n", i)
        return len(query) if newline < 0 else newline + 1
    if query.startswith("/*", i):
        close_at = query.find("*/", i + 2)
        return len(query) if close_at < 0 else close_at + 2
    if c == "$" and dialect != "sqlite" and (tag := _DOLLAR.match(query, i)) is not None:
        if i > 0 and _in_name(query[i - 1]):
            return i  # part of a name, not a quote
        close_at = query.find(tag.group(), tag.end())
        return len(query) if close_at < 0 else close_at + len(tag.group())
    return i


def _in_name(char: str) -> bool:
    return char.isalnum() or char in "_$"
