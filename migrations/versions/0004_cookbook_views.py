"""Views for the SQL cookbook: moves with their metrics, gate checks one per row,
how seeds ended, per-epoch run metrics; and an index led by the event type.

`stage_changes` and `seed_outcomes` keep the columns DESIGN.md fixes for them;
the fields users ask about beside those (alpha at a move, gradient health,
prune reasons, parameters added) get views of their own instead of widening a
contract. `gate_checks` gives each check of a gate evaluation its own row so a
plain GROUP BY answers "which check blocks most" on both databases (neither
shares a way to split a list).

Every view reads one or two event types across all runs, and the recipes
join a seed's events of one type to its events of another, so the index on
(run_id, event_type) becomes (event_type, run_id, seed_id): a view's rows
are one index range, a seed's moves within a run are one seek, and lookups
by run and type still use it. Swapping rather than adding keeps an append's
index work the same. `seed_outcomes` is rebuilt with the same columns and
rows so that its end epoch is one seek on that index: asked for the first
ending by position, SQLite walked the seed-id index across every run (five
minutes for one recipe on a million events). `stage_intervals` is rebuilt
straight over `events`, partitioned by the stream column rather than the
slot id read out of JSON (the same thing: a slot's stream is
``slot/<slot_id>``), which takes a third off every recipe that uses it.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-23
"""

from __future__ import annotations

from alembic import op

from kasmina.ledger.sqljson import PayloadSql

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

VIEWS = ("seed_moves", "gate_checks", "seed_endings", "epoch_metrics")


#: The end epoch as one seek on (event_type, run_id, seed_id); the epoch of the
#: first ending, as 0001 defined it, since epochs never go back within a run.
FIRST_END_EPOCH = """(SELECT MIN(e.epoch) FROM events e
                 WHERE e.run_id = g.run_id AND e.seed_id = g.seed_id
                   AND e.event_type IN ('SeedFossilized', 'SeedPruned'))"""
#: 0001's form, restored on downgrade.
FIRST_END_BY_POSITION = """(SELECT e.epoch FROM events e
                 WHERE e.run_id = g.run_id AND e.seed_id = g.seed_id
                   AND e.event_type IN ('SeedFossilized', 'SeedPruned')
                 ORDER BY e.position LIMIT 1)"""

#: 0001's definition, restored on downgrade.
STAGE_INTERVALS_0001 = """
        CREATE VIEW stage_intervals AS
        SELECT run_id, slot_id, seed_id, to_stage AS stage, epoch AS from_epoch,
               LEAD(epoch) OVER (PARTITION BY run_id, slot_id ORDER BY position) AS to_epoch
        FROM stage_changes
        """


def _seed_outcomes(j: PayloadSql, ended_epoch: str) -> str:
    return f"""
        CREATE VIEW seed_outcomes AS
        SELECT g.run_id AS run_id,
               g.seed_id AS seed_id,
               {j.field("slot_id", "g")} AS slot_id,
               {j.field("blueprint_id", "g")} AS blueprint_id,
               g.epoch AS germinated_epoch,
               (SELECT sc.to_stage FROM stage_changes sc
                 WHERE sc.run_id = g.run_id AND sc.seed_id = g.seed_id
                   AND sc.to_stage NOT IN ('EMBARGOED', 'RESETTING', 'DORMANT')
                 ORDER BY sc.position DESC LIMIT 1) AS final_stage,
               {ended_epoch} AS ended_epoch
        FROM events g
        WHERE g.event_type = 'SeedGerminated'
        """


def upgrade() -> None:
    op.drop_index("ix_events_run_id_event_type", table_name="events")
    op.create_index(
        "ix_events_event_type_run_id_seed_id", "events", ["event_type", "run_id", "seed_id"]
    )
    j = PayloadSql(op.get_context().dialect.name)
    op.execute("DROP VIEW seed_outcomes")
    op.execute(_seed_outcomes(j, FIRST_END_EPOCH))
    op.execute("DROP VIEW stage_intervals")
    op.execute(
        f"""
        CREATE VIEW stage_intervals AS
        SELECT run_id,
               {j.field("slot_id")} AS slot_id,
               seed_id,
               {j.field("to_stage")} AS stage,
               epoch AS from_epoch,
               LEAD(epoch) OVER (PARTITION BY run_id, stream_id ORDER BY position) AS to_epoch
        FROM events
        WHERE event_type = 'SeedStageChanged'
        """
    )
    op.execute(
        f"""
        CREATE VIEW seed_moves AS
        SELECT run_id,
               {j.field("slot_id")} AS slot_id,
               seed_id,
               epoch,
               {j.field("from_stage")} AS from_stage,
               {j.field("to_stage")} AS to_stage,
               {j.field("trigger")} AS "trigger",
               {j.real("alpha")} AS alpha,
               {j.real("accuracy")} AS accuracy,
               {j.real("accuracy_delta")} AS accuracy_delta,
               {j.integer("epochs_in_stage")} AS epochs_in_stage,
               {j.real("grad_ratio")} AS grad_ratio,
               {j.boolean("has_vanishing")} AS has_vanishing,
               {j.boolean("has_exploding")} AS has_exploding,
               position
        FROM events
        WHERE event_type = 'SeedStageChanged'
        """
    )
    checks = []
    for key, passed in (("checks_failed", False), ("checks_passed", True)):
        checks.append(
            f"""
            SELECT e.run_id AS run_id,
                   {j.field("slot_id", "e")} AS slot_id,
                   e.seed_id AS seed_id,
                   e.epoch AS epoch,
                   {j.field("gate", "e")} AS gate,
                   {j.field("target_stage", "e")} AS target_stage,
                   c.value AS check_name,
                   {j.literal(passed)} AS passed,
                   e.position AS position
            FROM events e {j.elements(key, "e", "c")}
            WHERE e.event_type = 'SeedGateEvaluated'
            """
        )
    op.execute("CREATE VIEW gate_checks AS " + " UNION ALL ".join(checks))
    op.execute(
        f"""
        CREATE VIEW seed_endings AS
        SELECT run_id,
               seed_id,
               {j.field("slot_id")} AS slot_id,
               {j.field("blueprint_id")} AS blueprint_id,
               CASE event_type WHEN 'SeedFossilized' THEN 'FOSSILIZED' ELSE 'PRUNED' END
                   AS outcome,
               epoch,
               {j.field("reason")} AS reason,
               {j.field("initiator")} AS initiator,
               {j.boolean("auto_pruned")} AS auto_pruned,
               {j.boolean("scheduled")} AS scheduled,
               {j.real("improvement")} AS improvement,
               {j.integer("params_added")} AS params_added,
               {j.integer("epochs_total")} AS epochs_total,
               {j.real("alpha")} AS alpha,
               {j.real("counterfactual")} AS counterfactual,
               {j.real("blending_delta")} AS blending_delta,
               position
        FROM events
        WHERE event_type IN ('SeedFossilized', 'SeedPruned')
        """
    )
    op.execute(
        f"""
        CREATE VIEW epoch_metrics AS
        SELECT run_id,
               epoch,
               {j.real("val_accuracy")} AS val_accuracy,
               {j.real("val_loss")} AS val_loss,
               {j.real("train_accuracy")} AS train_accuracy,
               {j.real("train_loss")} AS train_loss,
               {j.real("host_grad_norm")} AS host_grad_norm,
               position
        FROM events
        WHERE event_type = 'EpochCompleted'
        """
    )


def downgrade() -> None:
    for view in reversed(VIEWS):
        op.execute(f"DROP VIEW IF EXISTS {view}")
    op.execute("DROP VIEW stage_intervals")
    op.execute(STAGE_INTERVALS_0001)
    op.execute("DROP VIEW seed_outcomes")
    op.execute(_seed_outcomes(PayloadSql(op.get_context().dialect.name), FIRST_END_BY_POSITION))
    op.drop_index("ix_events_event_type_run_id_seed_id", table_name="events")
    op.create_index("ix_events_run_id_event_type", "events", ["run_id", "event_type"])
