"""SQL expressions reading payload fields, written once for both databases.

The views must give the same rows on SQLite and PostgreSQL, so every field is
read and cast the same way in each: ``json_extract`` on SQLite and ``->>`` on
PostgreSQL, with numbers cast to matching types, booleans left as 0/1 on
SQLite and ``boolean`` on PostgreSQL (equal as Python values), and string
lists joined with commas. Migrations build their views from these, so a view
added later reads fields exactly as the first ones do.
"""

from __future__ import annotations


def sql_literal(text: str) -> str:
    """A SQL string literal, for the read-only query path, which takes no parameters."""
    return "'" + text.replace("'", "''") + "'"


class PayloadSql:
    """Expression builders for one dialect; `table` qualifies the payload column."""

    def __init__(self, dialect: str) -> None:
        self.pg = dialect == "postgresql"

    def field(self, key: str, table: str = "") -> str:
        col = f"{table}.payload" if table else "payload"
        return f"({col} ->> '{key}')" if self.pg else f"json_extract({col}, '$.{key}')"

    def integer(self, key: str, table: str = "") -> str:
        return f"CAST({self.field(key, table)} AS {'BIGINT' if self.pg else 'INTEGER'})"

    def real(self, key: str, table: str = "") -> str:
        kind = "DOUBLE PRECISION" if self.pg else "REAL"
        return f"CAST({self.field(key, table)} AS {kind})"

    def boolean(self, key: str, table: str = "") -> str:
        return f"CAST({self.field(key, table)} AS BOOLEAN)" if self.pg else self.field(key, table)

    def literal(self, value: bool) -> str:
        if self.pg:
            return "TRUE" if value else "FALSE"
        return "1" if value else "0"

    def joined(self, key: str) -> str:
        """A list of strings as comma-joined text, in order; NULL when empty."""
        if self.pg:
            return (
                f"NULLIF(array_to_string(ARRAY(SELECT jsonb_array_elements_text("
                f"payload -> '{key}')), ','), '')"
            )
        return f"(SELECT group_concat(value, ',') FROM json_each(payload, '$.{key}'))"

    def elements(self, key: str, table: str, alias: str) -> str:
        """A FROM-clause item giving one row (column ``value``) per list element."""
        if self.pg:
            return (
                f"CROSS JOIN LATERAL jsonb_array_elements_text({table}.payload -> '{key}') "
                f"AS {alias}(value)"
            )
        return f"JOIN json_each({table}.payload, '$.{key}') AS {alias}"


__all__ = ["PayloadSql", "sql_literal"]
