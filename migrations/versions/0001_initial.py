"""The events table, its immutability triggers, and the first SQL views.

Revision ID: 0001
Revises:
Create Date: 2026-11-23
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

from kasmina.ledger.sqljson import PayloadSql

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

VIEWS = ("runs", "stage_changes", "stage_intervals", "seed_outcomes", "gc_evictions")


def upgrade() -> None:
    j = PayloadSql(op.get_context().dialect.name)
    op.create_table(
        "events",
        sa.Column(
            "position",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            primary_key=True,
            autoincrement=True,
        ),
        sa.Column("event_id", sa.String(36), nullable=False),
        sa.Column("run_id", sa.String(64), nullable=False),
        sa.Column("stream_id", sa.String(200), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("event_type", sa.String(64), nullable=False),
        sa.Column("schema_version", sa.Integer(), nullable=False),
        sa.Column("epoch", sa.Integer(), nullable=True),
        sa.Column("seed_id", sa.String(200), nullable=True),
        sa.Column("payload", sa.JSON().with_variant(JSONB(), "postgresql"), nullable=False),
        sa.Column("recorded_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("prev_hash", sa.String(64), nullable=False),
        sa.Column("hash", sa.String(64), nullable=False),
        sa.PrimaryKeyConstraint("position", name=op.f("pk_events")),
        sa.UniqueConstraint("event_id", name=op.f("uq_events_event_id")),
        sa.UniqueConstraint(
            "run_id", "stream_id", "version", name=op.f("uq_events_run_id_stream_id_version")
        ),
        sqlite_autoincrement=True,
    )
    op.create_index(op.f("ix_events_run_id_position"), "events", ["run_id", "position"])
    op.create_index(op.f("ix_events_seed_id"), "events", ["seed_id"])
    op.create_index(op.f("ix_events_run_id_event_type"), "events", ["run_id", "event_type"])

    if op.get_context().dialect.name == "postgresql":
        op.execute(
            """
            CREATE FUNCTION kasmina_events_immutable() RETURNS trigger
            LANGUAGE plpgsql AS $$
            BEGIN
                RAISE EXCEPTION 'kasmina: events are immutable (% refused)', TG_OP;
            END $$
            """
        )
        op.execute(
            "CREATE TRIGGER events_immutable BEFORE UPDATE OR DELETE ON events "
            "FOR EACH ROW EXECUTE FUNCTION kasmina_events_immutable()"
        )
        op.execute(
            "CREATE TRIGGER events_no_truncate BEFORE TRUNCATE ON events "
            "FOR EACH STATEMENT EXECUTE FUNCTION kasmina_events_immutable()"
        )
    else:
        for verb in ("UPDATE", "DELETE"):
            op.execute(
                f"CREATE TRIGGER events_no_{verb.lower()} BEFORE {verb} ON events "
                f"BEGIN SELECT RAISE(ABORT, 'kasmina: events are immutable ({verb} refused)'); END"
            )

    op.execute(
        f"""
        CREATE VIEW runs AS
        SELECT s.run_id AS run_id,
               {j.field("name", "s")} AS name,
               {j.integer("seed", "s")} AS seed,
               s.recorded_at AS started_at,
               f.recorded_at AS finished_at,
               COALESCE({j.field("status", "f")}, 'open') AS status,
               (SELECT COUNT(*) FROM events c WHERE c.run_id = s.run_id) AS events
        FROM events s
        LEFT JOIN events f ON f.run_id = s.run_id AND f.event_type = 'RunFinished'
        WHERE s.event_type = 'RunStarted'
        """
    )
    op.execute(
        f"""
        CREATE VIEW stage_changes AS
        SELECT run_id,
               {j.field("slot_id")} AS slot_id,
               seed_id,
               epoch,
               {j.field("from_stage")} AS from_stage,
               {j.field("to_stage")} AS to_stage,
               {j.field("trigger")} AS "trigger",
               position,
               recorded_at
        FROM events
        WHERE event_type = 'SeedStageChanged'
        """
    )
    op.execute(
        """
        CREATE VIEW stage_intervals AS
        SELECT run_id, slot_id, seed_id, to_stage AS stage, epoch AS from_epoch,
               LEAD(epoch) OVER (PARTITION BY run_id, slot_id ORDER BY position) AS to_epoch
        FROM stage_changes
        """
    )
    op.execute(
        f"""
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
               (SELECT e.epoch FROM events e
                 WHERE e.run_id = g.run_id AND e.seed_id = g.seed_id
                   AND e.event_type IN ('SeedFossilized', 'SeedPruned')
                 ORDER BY e.position LIMIT 1) AS ended_epoch
        FROM events g
        WHERE g.event_type = 'SeedGerminated'
        """
    )
    op.execute(
        f"""
        CREATE VIEW gc_evictions AS
        SELECT run_id,
               {j.field("cache")} AS cache,
               {j.field("reason")} AS reason,
               {j.integer("evicted")} AS evicted,
               epoch,
               position
        FROM events
        WHERE event_type = 'CacheEvicted'
        """
    )


def downgrade() -> None:
    for view in reversed(VIEWS):
        op.execute(f"DROP VIEW IF EXISTS {view}")
    if op.get_context().dialect.name == "postgresql":
        op.execute("DROP TRIGGER IF EXISTS events_no_truncate ON events")
        op.execute("DROP TRIGGER IF EXISTS events_immutable ON events")
        op.execute("DROP FUNCTION IF EXISTS kasmina_events_immutable()")
    else:
        op.execute("DROP TRIGGER IF EXISTS events_no_update")
        op.execute("DROP TRIGGER IF EXISTS events_no_delete")
    op.drop_index(op.f("ix_events_run_id_event_type"), table_name="events")
    op.drop_index(op.f("ix_events_seed_id"), table_name="events")
    op.drop_index(op.f("ix_events_run_id_position"), table_name="events")
    op.drop_table("events")
