"""The `run_lineage` view: which runs descend from which.

A fork (`kasmina run --fork RUN@EPOCH`) names its parent in its
`RunStarted` payload: ``parent`` holds the parent's ``run_id``, the
``epoch`` it left it at, and the ``position`` of the parent's checkpoint it
was restored from. The view has one row per (run, ancestor): ``depth`` 1 for
the parent, 2 for the parent's parent, and so on, with the ``epoch`` and
``position`` at which this line of runs leaves that ancestor. "Which runs
descend from R" is ``SELECT run_id FROM run_lineage WHERE ancestor_run_id = R``.

A fork's parent is always earlier in the log, so a real lineage has no
cycle; the depth bound keeps a forged one from looping the query. The
payload fields are read inline (not through kasmina's helpers), so that
this revision never changes with later code.

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-06
"""

from __future__ import annotations

from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None

READER = "kasmina_reader"
#: Deeper than any real lineage; a bound for a forged cycle.
MAX_DEPTH = 1000


def _lineage(dialect: str) -> str:
    if dialect == "postgresql":
        parent = "payload -> 'parent' ->> '{}'"
        integer = "BIGINT"
    else:
        parent = "json_extract(payload, '$.parent.{}')"
        integer = "INTEGER"
    return f"""
        CREATE VIEW run_lineage AS
        WITH RECURSIVE forks AS (
            SELECT run_id,
                   {parent.format("run_id")} AS parent_run_id,
                   CAST({parent.format("epoch")} AS {integer}) AS epoch,
                   CAST({parent.format("position")} AS {integer}) AS position
            FROM events
            WHERE event_type = 'RunStarted' AND stream_id = 'run' AND version = 1
              AND {parent.format("run_id")} IS NOT NULL
        ), lineage (run_id, ancestor_run_id, depth, epoch, position) AS (
            SELECT run_id, parent_run_id, 1, epoch, position
            FROM forks
            UNION ALL
            SELECT l.run_id, f.parent_run_id, l.depth + 1, f.epoch, f.position
            FROM lineage l
            JOIN forks f ON f.run_id = l.ancestor_run_id
            WHERE l.depth < {MAX_DEPTH}
        )
        SELECT run_id, ancestor_run_id, depth, epoch, position
        FROM lineage
        """


def upgrade() -> None:
    dialect = op.get_context().dialect.name
    op.execute(_lineage(dialect))
    if dialect == "postgresql":
        op.execute(f"GRANT SELECT ON run_lineage TO {READER}")


def downgrade() -> None:
    op.execute("DROP VIEW IF EXISTS run_lineage")
