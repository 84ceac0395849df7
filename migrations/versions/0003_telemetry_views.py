"""Telemetry views: gate evaluations, a per-seed timeline, run summaries, legal moves.

Every view gives the same rows on SQLite and PostgreSQL: JSON fields are
read with `json_extract` / `->>` and cast to the same SQL types, booleans
are 0/1 on SQLite and true/false on PostgreSQL (equal as Python values), and
lists are comma-joined text. `transition_table` is written out from
`kasmina.stages` when the migration runs, so SQL checks of the moves use the
one table the state machine and the replay fold use; a change to that table
needs a new revision (a test holds the view equal to the code's table).

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-23
"""

from __future__ import annotations

from alembic import op

from kasmina.ledger.sqljson import PayloadSql
from kasmina.stages import edges

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

VIEWS = (
    "transition_table",
    "gate_evaluations",
    "seed_timeline",
    "run_summary",
)


def _sql() -> PayloadSql:
    return PayloadSql(op.get_context().dialect.name)


def upgrade() -> None:
    j = _sql()
    pairs = ", ".join(f"('{a.name}', '{b.name}')" for a, b in edges())
    op.execute(
        f"""
        CREATE VIEW transition_table AS
        WITH t (from_stage, to_stage) AS (VALUES {pairs})
        SELECT from_stage, to_stage FROM t
        """
    )
    op.execute(
        f"""
        CREATE VIEW gate_evaluations AS
        SELECT run_id,
               {j.field("slot_id")} AS slot_id,
               seed_id,
               epoch,
               {j.field("gate")} AS gate,
               {j.field("target_stage")} AS target_stage,
               {j.boolean("passed")} AS passed,
               {j.real("score")} AS score,
               COALESCE({j.field("trigger")}, 'command') AS "trigger",
               {j.joined("checks_failed")} AS checks_failed,
               {j.joined("checks_passed")} AS checks_passed,
               {j.field("message")} AS message,
               position
        FROM events
        WHERE event_type = 'SeedGateEvaluated'
        """
    )
    op.execute(
        f"""
        CREATE VIEW seed_timeline AS
        SELECT run_id,
               seed_id,
               {j.field("slot_id")} AS slot_id,
               epoch,
               {j.field("stage")} AS stage,
               {j.real("alpha")} AS alpha,
               {j.real("alpha_target")} AS alpha_target,
               {j.real("accuracy")} AS accuracy,
               {j.real("accuracy_delta")} AS accuracy_delta,
               {j.real("counterfactual")} AS counterfactual,
               position
        FROM events
        WHERE event_type = 'SeedTelemetrySampled'
        """
    )
    op.execute(
        f"""
        CREATE VIEW run_summary AS
        SELECT r.run_id AS run_id,
               r.name AS name,
               r.seed AS seed,
               r.status AS status,
               r.events AS events,
               (SELECT MAX(e.epoch) + 1 FROM events e WHERE e.run_id = r.run_id) AS epochs,
               (SELECT COUNT(*) FROM events e
                 WHERE e.run_id = r.run_id AND e.event_type = 'SeedGerminated') AS seeds,
               (SELECT COUNT(*) FROM events e
                 WHERE e.run_id = r.run_id AND e.event_type = 'SeedFossilized') AS fossilized,
               (SELECT COUNT(*) FROM events e
                 WHERE e.run_id = r.run_id AND e.event_type = 'SeedPruned') AS pruned,
               (SELECT COALESCE(SUM(g.evicted), 0) FROM gc_evictions g
                 WHERE g.run_id = r.run_id) AS evicted,
               (SELECT {j.real("val_accuracy", "e")} FROM events e
                 WHERE e.run_id = r.run_id AND e.event_type = 'EpochCompleted'
                 ORDER BY e.position DESC LIMIT 1) AS final_val_accuracy,
               r.started_at AS started_at,
               r.finished_at AS finished_at
        FROM runs r
        """
    )


def downgrade() -> None:
    for view in reversed(VIEWS):
        op.execute(f"DROP VIEW IF EXISTS {view}")
