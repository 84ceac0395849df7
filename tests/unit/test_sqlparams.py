"""`:name` parameters become literals only where the database would read a name."""

from __future__ import annotations

import sqlite3

import pytest

from kasmina.errors import QueryError
from kasmina.ledger.sqlparams import bind, has_statement, literal, parse_params


@pytest.mark.parametrize("dialect", ["sqlite", "postgresql"])
def test_placeholders_outside_strings_names_and_comments_are_bound(dialect: str) -> None:
    query = (
        "SELECT :a, ':a', \"x:a\", e.x::int -- :a\n/* :a */ FROM t WHERE b = :b AND arr[lo:hi] = 1"
    )
    bound = bind(query, {"a": "7", "b": "seed-1"}, dialect)
    assert bound == (
        "SELECT 7, ':a', \"x:a\", e.x::int -- :a\n"
        "/* :a */ FROM t WHERE b = 'seed-1' AND arr[lo:hi] = 1"
    )


def test_postgresql_dollar_quotes_and_escape_strings_are_skipped() -> None:
    query = "SELECT $$ :a $$, $t$ :a $t$, E'\\' :a', :a"
    assert bind(query, {"a": "1"}, "postgresql") == "SELECT $$ :a $$, $t$ :a $t$, E'\\' :a', 1"


def test_a_value_cannot_end_its_literal() -> None:
    hostile = "x'; DROP TABLE events; --"
    conn = sqlite3.connect(":memory:")
    [(back,)] = conn.execute(bind("SELECT :v", {"v": hostile}, "sqlite")).fetchall()
    assert back == hostile
    assert literal("a\\'b", "postgresql") == "E'a\\\\''b'"


def test_numbers_are_numbers_and_the_rest_text() -> None:
    given = ("12", "-3", "1.5", "-0.02", "1e3", "2.5E-4", "007", ".5", "1.", "1_000", "nan")
    assert [literal(v, "sqlite") for v in given] == [
        "12",
        "(-3)",
        "1.5",
        "(-0.02)",
        "1e3",
        "2.5E-4",
        "'007'",
        "'.5'",
        "'1.'",
        "'1_000'",
        "'nan'",
    ]


def test_a_negative_value_after_a_minus_is_not_a_comment() -> None:
    conn = sqlite3.connect(":memory:")
    query = bind("SELECT 10-:n, :s", {"n": "-3", "s": "kept"}, "sqlite")
    assert conn.execute(query).fetchall() == [(13, "kept")]


def test_a_decimal_filters_as_a_number() -> None:
    """As text, 0.02 compared greater than every number on SQLite: the filter matched none."""
    conn = sqlite3.connect(":memory:")
    conn.execute("CREATE TABLE m (value REAL)")
    conn.executemany("INSERT INTO m VALUES (?)", [(0.01,), (0.05,), (1.0,)])
    query = bind("SELECT COUNT(*) FROM m WHERE value > :t", {"t": "0.02"}, "sqlite")
    assert conn.execute(query).fetchall() == [(2,)]


def test_missing_unused_and_malformed_parameters_are_one_line_each() -> None:
    with pytest.raises(QueryError, match=r"uses :a but no --param a=VALUE"):
        bind("SELECT :a", {}, "sqlite")
    with pytest.raises(QueryError, match=r"a value for :b is given but the query has no :b"):
        bind("SELECT :a", {"a": "1", "b": "2"}, "sqlite")
    with pytest.raises(QueryError, match=r"'1x=2' is not NAME=VALUE"):
        parse_params(["1x=2"])
    with pytest.raises(QueryError, match=r"--param a is given twice"):
        parse_params(["a=1", "a=2"])
    with pytest.raises(QueryError, match="NUL"):
        literal("a\0b", "sqlite")


def test_a_statement_is_what_is_left_beside_comments_and_semicolons() -> None:
    for empty in ("", " ; ; ", "-- nothing", "/* c */ ;", "/* open"):
        assert not has_statement(empty, "sqlite"), empty
    for query in ("SELECT 1", "'--'", "/* c */ SELECT 1 -- x", "$$;$$"):
        assert has_statement(query, "postgresql"), query
