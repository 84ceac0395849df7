"""Ledger format 2: the format each run's events are hashed in, recorded per run.

Format 1 hashes kasmina's own canonical JSON, chained per stream. Format 2
hashes RFC 8785 (JCS) text and links every event also to the run's event
before it, and each run's first event to the ledger's run start before it
(`kasmina.jcs`). Runs written before this revision have no row here and are
format 1, and verify as they always did; each new run gets a row in the
transaction that writes its `RunStarted`.

``run_tips`` holds, when the writer has a signing key, an Ed25519 signature
of the run's last event after each append (its position and hash, which in
format 2 commit to every event of the run before it): an event appended by
anyone without the key leaves the run's end unsigned.

Both tables are as immutable as ``events``: no update, delete or truncate
(``ENABLE ALWAYS`` on PostgreSQL), and on SQLite no ``INSERT OR REPLACE``
over a taken key. Downgrading drops the formats, after which the format-2
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
#: Each table and the columns a row of it may never be replaced on.
_KEYS = {"ledger_runs": ("run_id",), "run_tips": ("run_id", "position")}


def upgrade() -> None:
    op.create_table(
        "ledger_runs",
        sa.Column("run_id", sa.String(64), nullable=False),
        sa.Column("format", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("run_id", name=op.f("pk_ledger_runs")),
        sa.CheckConstraint("format >= 2", name=op.f("ck_ledger_runs_format_known")),
    )
    op.create_table(
        "run_tips",
        sa.Column("run_id", sa.String(64), nullable=False),
        sa.Column("position", sa.BigInteger(), nullable=False),
        sa.Column("hash", sa.String(64), nullable=False),
        sa.Column("public_key", sa.String(64), nullable=False),
        sa.Column("signature", sa.String(128), nullable=False),
        sa.PrimaryKeyConstraint("run_id", "position", name=op.f("pk_run_tips")),
    )
    if op.get_context().dialect.name == "postgresql":
        op.execute(
            """
            CREATE FUNCTION kasmina_ledger_immutable() RETURNS trigger
            LANGUAGE plpgsql AS $$
            BEGIN
                RAISE EXCEPTION 'kasmina: % is immutable (% refused)', TG_TABLE_NAME, TG_OP;
            END $$
            """
        )
        for table in _KEYS:
            op.execute(
                f"CREATE TRIGGER {table}_immutable BEFORE UPDATE OR DELETE ON {table} "
                "FOR EACH ROW EXECUTE FUNCTION kasmina_ledger_immutable()"
            )
            op.execute(
                f"CREATE TRIGGER {table}_no_truncate BEFORE TRUNCATE ON {table} "
                "FOR EACH STATEMENT EXECUTE FUNCTION kasmina_ledger_immutable()"
            )
            for trigger in (f"{table}_immutable", f"{table}_no_truncate"):
                op.execute(f"ALTER TABLE {table} ENABLE ALWAYS TRIGGER {trigger}")
            op.execute(
                f"DO $$ BEGIN IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = '{READER}') "
                f"THEN GRANT SELECT ON {table} TO {READER}; END IF; END $$"
            )
    else:
        for table, keys in _KEYS.items():
            for verb in ("UPDATE", "DELETE"):
                op.execute(
                    f"CREATE TRIGGER {table}_no_{verb.lower()} BEFORE {verb} ON {table} "
                    f"BEGIN SELECT RAISE(ABORT, 'kasmina: {table} is immutable ({verb} refused)'); "
                    "END"
                )
            taken = " AND ".join(f"{key} = NEW.{key}" for key in keys)
            op.execute(
                f"CREATE TRIGGER {table}_no_replace BEFORE INSERT ON {table} "
                f"WHEN EXISTS (SELECT 1 FROM {table} WHERE {taken}) "
                f"BEGIN SELECT RAISE(ABORT, 'kasmina: {table} is immutable (REPLACE refused)'); "
                "END"
            )


def downgrade() -> None:
    op.drop_table("run_tips")
    op.drop_table("ledger_runs")
    if op.get_context().dialect.name == "postgresql":
        op.execute("DROP FUNCTION IF EXISTS kasmina_ledger_immutable()")
