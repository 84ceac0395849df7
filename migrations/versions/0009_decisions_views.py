"""The `decisions` and `decision_effects` views: a policy's decisions and what they caused.

A `PolicyDecided` event heads the batch of its effects on the slot's stream,
and every effect (`SeedGerminated`, `SeedStageChanged`, `SeedGateEvaluated`,
`AlphaTargetSet`, `SeedFossilized`, `SeedPruned`) carries its
``decision_id``, so "which moves trace back to decision D" is one join:
``decisions JOIN decision_effects USING (run_id, decision_id)``. A
decision's arguments stay in its payload (``payload -> 'arguments'``): JSON
text is printed differently by the two databases, and a view gives the same
rows on both.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-02
"""

from __future__ import annotations

from alembic import op

from kasmina.ledger.sqljson import PayloadSql

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def _views(dialect: str) -> list[str]:
    j = PayloadSql(dialect)
    decisions = f"""
        CREATE VIEW decisions AS
        SELECT run_id,
               {j.field("decision_id")} AS decision_id,
               epoch,
               {j.field("slot_id")} AS slot_id,
               seed_id,
               {j.field("policy")} AS policy,
               {j.field("action")} AS action,
               {j.field("reason")} AS reason,
               {j.boolean("accepted")} AS accepted,
               {j.field("refusal")} AS refusal,
               position
        FROM events
        WHERE event_type = 'PolicyDecided'
    """
    effects = f"""
        CREATE VIEW decision_effects AS
        SELECT run_id,
               {j.field("decision_id")} AS decision_id,
               position,
               epoch,
               {j.field("slot_id")} AS slot_id,
               seed_id,
               event_type
        FROM events
        WHERE event_type IN ('SeedGerminated', 'SeedStageChanged', 'SeedGateEvaluated',
                             'AlphaTargetSet', 'SeedFossilized', 'SeedPruned')
          AND {j.field("decision_id")} IS NOT NULL
    """
    return [decisions, effects]


def upgrade() -> None:
    for statement in _views(op.get_bind().dialect.name):
        op.execute(statement)


def downgrade() -> None:
    op.execute("DROP VIEW IF EXISTS decision_effects")
    op.execute("DROP VIEW IF EXISTS decisions")
