"""`superseded_events` charges each abandoned event to the attempt that wrote it.

Revision 0010 charged an event to the covering resume with the latest
``abandoned_after_position``, less one. When an attempt dies before its
first checkpoint, the next one resumes from the same checkpoint, and the
first attempt's events were then charged to the second. An event is left
behind by the attempt that recorded it: one more than the run's resumes
recorded before it, which is what ``attempt`` now says (as
`kasmina.ledger.attempts` does). ``resumed_at_position`` is the first resume
that set the event aside. The rows (which events are superseded) and the
columns do not change, so ``live_events`` is untouched.

On PostgreSQL the view is replaced in place (its grants stay); on SQLite it
is dropped and made again. The downgrade puts 0010's definition back, copied
here as that revision made it.

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-06
"""

from __future__ import annotations

from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def _integer(dialect: str, key: str, table: str = "") -> str:
    column = f"{table}.payload" if table else "payload"
    if dialect == "postgresql":
        return f"CAST(({column} ->> '{key}') AS BIGINT)"
    return f"CAST(json_extract({column}, '$.{key}') AS INTEGER)"


def _by_writer(dialect: str) -> str:
    return f"""
        CREATE VIEW superseded_events AS
        WITH resumes AS (
            SELECT run_id,
                   position AS resumed_at_position,
                   {_integer(dialect, "abandoned_after_position")} AS after_position
            FROM events
            WHERE event_type = 'RunResumed'
        ), covered AS (
            SELECT e.run_id AS run_id,
                   e.position AS position,
                   e.stream_id AS stream_id,
                   e.event_type AS event_type,
                   e.epoch AS epoch,
                   r.resumed_at_position AS resumed_at_position,
                   ROW_NUMBER() OVER (
                       PARTITION BY e.position ORDER BY r.resumed_at_position
                   ) AS nth
            FROM resumes r
            JOIN events e
              ON e.run_id = r.run_id
             AND e.position > r.after_position AND e.position < r.resumed_at_position
        )
        SELECT c.run_id, c.position, c.stream_id, c.event_type, c.epoch,
               1 + (SELECT COUNT(*) FROM resumes p
                    WHERE p.run_id = c.run_id
                      AND p.resumed_at_position < c.position) AS attempt,
               c.resumed_at_position
        FROM covered c
        WHERE c.nth = 1
        """


def _as_in_0010(dialect: str) -> str:
    return f"""
        CREATE VIEW superseded_events AS
        WITH resumes AS (
            SELECT run_id,
                   position AS resumed_at_position,
                   {_integer(dialect, "abandoned_after_position")} AS after_position,
                   {_integer(dialect, "attempt")} AS attempt
            FROM events
            WHERE event_type = 'RunResumed'
        ), covered AS (
            SELECT e.run_id AS run_id,
                   e.position AS position,
                   e.stream_id AS stream_id,
                   e.event_type AS event_type,
                   e.epoch AS epoch,
                   r.attempt - 1 AS attempt,
                   r.resumed_at_position AS resumed_at_position,
                   ROW_NUMBER() OVER (
                       PARTITION BY e.position
                       ORDER BY r.after_position DESC, r.resumed_at_position DESC
                   ) AS nth
            FROM resumes r
            JOIN events e
              ON e.run_id = r.run_id
             AND e.position > r.after_position AND e.position < r.resumed_at_position
        )
        SELECT run_id, position, stream_id, event_type, epoch, attempt, resumed_at_position
        FROM covered
        WHERE nth = 1
        """


def _replace(statement: str) -> None:
    if op.get_context().dialect.name == "postgresql":
        op.execute(statement.replace("CREATE VIEW", "CREATE OR REPLACE VIEW", 1))
        return
    op.execute("DROP VIEW superseded_events")
    op.execute(statement)


def upgrade() -> None:
    _replace(_by_writer(op.get_context().dialect.name))


def downgrade() -> None:
    _replace(_as_in_0010(op.get_context().dialect.name))
