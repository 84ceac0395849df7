"""Ledger format 2: the format each run's events are hashed in, recorded per run.

Format 1 hashes kasmina's own canonical JSON, chained per stream. Format 2
hashes RFC 8785 (JCS) text and links every event also to the run's event
before it, and each run's first event to the ledger's run start before it
(`kasmina.jcs`). Runs written before this revision have no row here and are
format 1, and verify as they always did; each new run gets a row in the
transaction that writes its `RunStarted`.

The table is as immutable as ``events``: no update, delete or truncate
(``ENABLE ALWAYS`` on PostgreSQL), and on SQLite no ``INSERT OR REPLACE``
over a taken run id. Downgrading drops the formats, after which the format-2
runs no longer verify; `kasmina.ledger.migrate` refuses that without
``--discard-data``.

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-06
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None

READER = "kasmina_reader"
_IMMUTABLE = "kasmina: ledger_runs is immutable ({} refused)"


def upgrade() -> None:
    op.create_table(
        "ledger_runs",
        sa.Column("run_id", sa.String(64), nullable=False),
        sa.Column("format", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("run_id", name=op.f("pk_ledger_runs")),
        sa.CheckConstraint("format >= 2", name=op.f("ck_ledger_runs_format_known")),
    )
    if op.get_context().dialect.name == "postgresql":
        op.execute(
            """
            CREATE FUNCTION kasmina_ledger_runs_immutable() RETURNS trigger
            LANGUAGE plpgsql AS $$
            BEGIN
                RAISE EXCEPTION 'kasmina: ledger_runs is immutable (% refused)', TG_OP;
            END $$
            """
        )
        op.execute(
            "CREATE TRIGGER ledger_runs_immutable BEFORE UPDATE OR DELETE ON ledger_runs "
            "FOR EACH ROW EXECUTE FUNCTION kasmina_ledger_runs_immutable()"
        )
        op.execute(
            "CREATE TRIGGER ledger_runs_no_truncate BEFORE TRUNCATE ON ledger_runs "
            "FOR EACH STATEMENT EXECUTE FUNCTION kasmina_ledger_runs_immutable()"
        )
        for trigger in ("ledger_runs_immutable", "ledger_runs_no_truncate"):
            op.execute(f"ALTER TABLE ledger_runs ENABLE ALWAYS TRIGGER {trigger}")
        op.execute(
            f"DO $$ BEGIN IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = '{READER}') "
            f"THEN GRANT SELECT ON ledger_runs TO {READER}; END IF; END $$"
        )
    else:
        for verb in ("UPDATE", "DELETE"):
            op.execute(
                f"CREATE TRIGGER ledger_runs_no_{verb.lower()} BEFORE {verb} ON ledger_runs "
                f"BEGIN SELECT RAISE(ABORT, '{_IMMUTABLE.format(verb)}'); END"
            )
        op.execute(
            "CREATE TRIGGER ledger_runs_no_replace BEFORE INSERT ON ledger_runs "
            "WHEN EXISTS (SELECT 1 FROM ledger_runs WHERE run_id = NEW.run_id) "
            f"BEGIN SELECT RAISE(ABORT, '{_IMMUTABLE.format('REPLACE')}'); END"
        )


def downgrade() -> None:
    op.drop_table("ledger_runs")
    if op.get_context().dialect.name == "postgresql":
        op.execute("DROP FUNCTION IF EXISTS kasmina_ledger_runs_immutable()")
