"""The `metrics` view: every free-named metric of every epoch and sample, one row each.

`EpochCompleted` and `SeedTelemetrySampled` carry a user's own numbers in
``metrics`` (schema version 2 of both). The view unnests them so that they
are plain SQL: (run_id, epoch, slot_id, seed_id, name, value, position), with
``slot_id`` NULL for a run-level epoch. Non-finite values are stored as the
strings "NaN", "Infinity" and "-Infinity"; the view reads them back as
floats. PostgreSQL has all three; SQLite has the infinities but no NaN, so
a NaN is NULL there.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-02
"""

from __future__ import annotations

from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

_SQLITE = """
    CREATE VIEW metrics AS
    SELECT e.run_id,
           e.epoch,
           CASE WHEN e.event_type = 'SeedTelemetrySampled'
                THEN json_extract(e.payload, '$.slot_id') END AS slot_id,
           e.seed_id,
           m.key AS name,
           CASE m.type
                WHEN 'text' THEN CASE m.value
                    WHEN 'Infinity' THEN 9e999
                    WHEN '-Infinity' THEN -9e999
                    WHEN '-0.0' THEN -0.0
                END
                ELSE CAST(m.value AS REAL)
           END AS value,
           e.position
    FROM events AS e
    JOIN json_each(e.payload, '$.metrics') AS m
    WHERE e.event_type IN ('EpochCompleted', 'SeedTelemetrySampled')
"""

_POSTGRES = """
    CREATE VIEW metrics AS
    SELECT e.run_id,
           e.epoch,
           CASE WHEN e.event_type = 'SeedTelemetrySampled'
                THEN e.payload ->> 'slot_id' END AS slot_id,
           e.seed_id,
           m.key AS name,
           CAST(m.value #>> '{}' AS DOUBLE PRECISION) AS value,
           e.position
    FROM events AS e
    CROSS JOIN LATERAL jsonb_each(e.payload -> 'metrics') AS m(key, value)
    WHERE e.event_type IN ('EpochCompleted', 'SeedTelemetrySampled')
"""


def upgrade() -> None:
    op.execute(_POSTGRES if op.get_bind().dialect.name == "postgresql" else _SQLITE)


def downgrade() -> None:
    op.execute("DROP VIEW IF EXISTS metrics")
