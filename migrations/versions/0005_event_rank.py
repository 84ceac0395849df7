"""The writer's rank on every event: which process of a distributed run wrote it.

A run trained data-parallel is written by several processes, and "which rank
recorded this" is a question users ask in SQL (events per rank, a rank that
went quiet), so the rank is a column rather than a field inside each payload.
It is NULL for a run written by one process, and it is hashed only when set:
every event recorded before this revision keeps its hash, and a rank edited
afterwards breaks the chain like any other column.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-23
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("events", sa.Column("rank", sa.Integer(), nullable=True))


def downgrade() -> None:
    op.drop_column("events", "rank")
