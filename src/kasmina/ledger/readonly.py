"""What the read-only SQL path of both backends shares: its timeout and its refusals.

`kasmina sql` is where people who may not write meet the ledger; each
backend builds its own walls (`kasmina.ledger.readonly_sqlite`,
`kasmina.ledger.readonly_postgres`), and both speak of them in the same words.
"""

from __future__ import annotations

import math

from kasmina.errors import QueryError, ReadOnlyViolation

#: How long one query may run, in seconds, unless the caller says otherwise.
DEFAULT_TIMEOUT_S = 30.0

#: The PostgreSQL role `kasmina sql` runs under (migration 0007 makes it).
READER_ROLE = "kasmina_reader"


def check_timeout(timeout_s: float) -> float:
    """The timeout, refused unless it is a finite number of seconds above zero."""
    if not (math.isfinite(timeout_s) and timeout_s > 0):
        raise QueryError(f"the query timeout must be a positive number of seconds, not {timeout_s}")
    return timeout_s


def timed_out(timeout_s: float) -> QueryError:
    return QueryError(f"query exceeded the {timeout_s:g} s timeout (see --timeout)")


def several_statements() -> ReadOnlyViolation:
    return ReadOnlyViolation(
        "refused: kasmina sql runs one statement per call, this text holds several"
    )


def not_a_query(detail: str) -> ReadOnlyViolation:
    return ReadOnlyViolation(
        "refused: the SQL path is read-only and runs only a query "
        f"(SELECT, VALUES, TABLE or WITH ... SELECT) ({detail})"
    )
