"""The read-only role `kasmina_reader` that `kasmina sql` runs under (PostgreSQL only).

A READ ONLY transaction still lets a superuser's connection read files, copy
to programs and signal backends, so the SQL path drops to a role that holds
SELECT on kasmina's tables and views and nothing else. Roles belong to the
cluster, not to the database: the role is made once (by whichever database
migrates first, idempotently) and each database grants its own objects.
Objects the migrating role creates later (views of later revisions) are
granted by default privileges, so a revision cannot forget to.

Inside a single SELECT the session user may switch back with
``set_config('role', ...)`` and then run a query string as itself
(``query_to_xml`` and kin). `kasmina_reader_rows` runs the user's statement
inside a SECURITY DEFINER function owned by the reader, where PostgreSQL
refuses any change of ``role`` or ``session_authorization``.

The migrating role becomes a member of the reader, so that it may ``SET
ROLE`` to it and own its function. Downgrade revokes this database's grants
and drops the function; the role and memberships stay, since other databases
of the cluster may use them.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from alembic.util import CommandError

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

READER = "kasmina_reader"
_RELATIONS = (
    "events",
    "snapshots",
    "alembic_version",
    "runs",
    "stage_changes",
    "stage_intervals",
    "seed_outcomes",
    "gc_evictions",
    "transition_table",
    "gate_evaluations",
    "seed_timeline",
    "run_summary",
    "seed_moves",
    "gate_checks",
    "seed_endings",
    "epoch_metrics",
)
_FUNCTION = "kasmina_reader_rows(text)"
_CREATE_FUNCTION = f"""
    CREATE FUNCTION {_FUNCTION} RETURNS SETOF record
    LANGUAGE plpgsql STABLE SECURITY DEFINER AS $$
    BEGIN
        RETURN QUERY EXECUTE $1;
    END
    $$
"""


def _scalar(sql: str) -> object:
    return op.get_bind().execute(sa.text(sql)).scalar()


def _schema() -> str:
    schema = str(_scalar("SELECT current_schema()"))
    return op.get_bind().dialect.identifier_preparer.quote(schema)


def _ensure_role() -> None:
    if _scalar(f"SELECT 1 FROM pg_roles WHERE rolname = '{READER}'"):
        return
    if not _scalar("SELECT rolsuper OR rolcreaterole FROM pg_roles WHERE rolname = current_user"):
        raise CommandError(
            f"role {READER} does not exist and this role may not create roles: an "
            f"administrator must run `CREATE ROLE {READER} NOLOGIN` once per cluster first"
        )
    # Another database of the cluster may be making it at this very moment.
    op.execute(
        f"""
        DO $$ BEGIN
            CREATE ROLE {READER} NOLOGIN;
        EXCEPTION WHEN duplicate_object OR unique_violation THEN NULL;
        END $$
        """
    )


def _join_role() -> None:
    if _scalar(f"SELECT pg_has_role(current_user, '{READER}', 'MEMBER')"):
        return
    if not _scalar("SELECT rolsuper OR rolcreaterole FROM pg_roles WHERE rolname = current_user"):
        raise CommandError(
            f"this role is not a member of {READER} and may not grant it: an administrator "
            f"must run `GRANT {READER} TO {_scalar('SELECT current_user')}` first"
        )
    op.execute(f"GRANT {READER} TO CURRENT_USER")


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    schema = _schema()
    _ensure_role()
    _join_role()
    op.execute(f"GRANT USAGE ON SCHEMA {schema} TO {READER}")
    op.execute(f"GRANT SELECT ON {', '.join(_RELATIONS)} TO {READER}")
    op.execute(f"ALTER DEFAULT PRIVILEGES IN SCHEMA {schema} GRANT SELECT ON TABLES TO {READER}")
    op.execute(_CREATE_FUNCTION)
    op.execute(f"REVOKE ALL ON FUNCTION {_FUNCTION} FROM PUBLIC")
    # A new owner needs CREATE on the schema at the moment it takes the function, not after.
    op.execute(f"GRANT CREATE ON SCHEMA {schema} TO {READER}")
    op.execute(f"ALTER FUNCTION {_FUNCTION} OWNER TO {READER}")
    op.execute(f"REVOKE CREATE ON SCHEMA {schema} FROM {READER}")


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    schema = _schema()
    op.execute(f"DROP FUNCTION IF EXISTS {_FUNCTION}")
    op.execute(f"ALTER DEFAULT PRIVILEGES IN SCHEMA {schema} REVOKE SELECT ON TABLES FROM {READER}")
    op.execute(f"REVOKE SELECT ON {', '.join(_RELATIONS)} FROM {READER}")
    op.execute(f"REVOKE USAGE ON SCHEMA {schema} FROM {READER}")
