"""Superseded events of a resumed run, and the run views over the live events only.

A run continued after its process died records `RunResumed` on its ``run``
stream. The run's events after the payload's ``abandoned_after_position`` and
before the `RunResumed` row itself belong to the abandoned attempt: they
stay in `events`, which never changes, but they are no longer the run's
story. ``superseded_events`` lists them, one row each, with the attempt that
abandoned them (the resume's ``attempt`` - 1) and the position of the
resume. When ranges nest (a run resumed from a checkpoint older than its
last resume), an event is charged to the covering resume with the latest
``abandoned_after_position``, as `kasmina.ledger.attempts` does.
``live_events`` is `events` without them, column for column.

Every view that tells a run's story now reads ``live_events`` instead of
`events`, with the same columns, and the same rows for a run never resumed.
``runs`` still reads `events`: its ``events`` column counts what is stored
(`run_summary` shows that count too), and its start and finish rows are
never inside an abandoned range.

The rebuilt views are not written out again here. Each is taken from the
revision that last defined it (0001, 0003, 0004, 0008, 0009), whose upgrade
is run against a stand-in for ``op`` that keeps its statements and executes
nothing; its reads of the table (``FROM events``, ``JOIN events``) become
reads of ``live_events``. Revision files never change, so this is the exact
text they created, and the downgrade puts exactly that text back. On
PostgreSQL the views are replaced in place (``CREATE OR REPLACE VIEW``, which
also checks that every column keeps its name and type), so views built on
them and the reader role's grants stay as they are; on SQLite, which looks a
view's tables up by name when it is queried, each is dropped and created
again, dependents first down and last up.

Over a run of 20,000 events never resumed, every view takes within about 10%
of its time under 0009 on SQLite and within about 20% on PostgreSQL, so no
index is added.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-09
"""

from __future__ import annotations

import importlib.util
import re
from types import SimpleNamespace
from typing import Any

from alembic import op

from kasmina.ledger.sqljson import PayloadSql

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None

VIEWS = ("live_events", "superseded_events")

#: The views rebuilt over ``live_events``, in creation order (a view after those it reads).
REBUILT = (
    "stage_changes",
    "stage_intervals",
    "seed_outcomes",
    "gc_evictions",
    "gate_evaluations",
    "seed_timeline",
    "run_summary",
    "seed_moves",
    "gate_checks",
    "seed_endings",
    "epoch_metrics",
    "metrics",
    "decisions",
    "decision_effects",
)
#: Views over `events` left as they are: ``runs`` counts every stored row.
KEPT = ("runs",)
#: The revisions that create views, oldest first: a later definition replaces an earlier one.
SOURCES = ("0001", "0003", "0004", "0008", "0009")

#: The columns of `events` since 0005, in table order.
EVENT_COLUMNS = (
    "position",
    "event_id",
    "run_id",
    "stream_id",
    "version",
    "event_type",
    "schema_version",
    "epoch",
    "seed_id",
    "payload",
    "recorded_at",
    "prev_hash",
    "hash",
    "rank",
)
READER = "kasmina_reader"

_CREATE_VIEW = re.compile(r"\s*CREATE VIEW (\w+) AS\b")
_READS_EVENTS = re.compile(r"\b(FROM|JOIN)(\s+)events\b")
#: ``events`` as a column name (``runs.events``) rather than the table.
_EVENTS_COLUMN = re.compile(r"(\.|\bAS\s+)events\b")


class _Recorder:
    """Stands in for ``op`` while an earlier revision's upgrade runs: keeps, never executes.

    Its context and bind carry only the dialect, so nothing can reach the
    database through them; table and index operations do nothing.
    """

    def __init__(self, dialect: Any) -> None:
        self.statements: list[str] = []
        self._context = SimpleNamespace(dialect=dialect)

    def execute(self, statement: object) -> None:
        self.statements.append(str(statement))

    def get_context(self) -> SimpleNamespace:
        return self._context

    def get_bind(self) -> SimpleNamespace:
        return self._context

    def f(self, name: str) -> str:
        return name

    def __getattr__(self, name: str) -> Any:
        return lambda *args, **kwargs: None


def _earlier_views() -> dict[str, str]:
    """Every view as the earlier revisions last created it: name -> its CREATE VIEW."""
    context = op.get_context()
    if context.script is None:
        raise RuntimeError("revision 0010 reads earlier revisions: run it through Alembic")
    views: dict[str, str] = {}
    for rev in SOURCES:
        path = context.script.get_revision(rev).path
        spec = importlib.util.spec_from_file_location(f"_kasmina_revision_{rev}", path)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)  # a private copy, not Alembic's
        spec.loader.exec_module(module)
        recorder = _Recorder(context.dialect)
        module.op = recorder  # type: ignore[attr-defined]
        module.upgrade()
        for statement in recorder.statements:
            found = _CREATE_VIEW.match(statement)
            if found:
                views[found[1]] = statement
    reading = {name for name, sql in views.items() if _READS_EVENTS.search(sql)}
    if reading != {*REBUILT, *KEPT}:
        raise RuntimeError(f"revision 0010 expected the views {REBUILT + KEPT}, found {reading}")
    return views


def _over_live_events(name: str, statement: str) -> str:
    rewritten = _READS_EVENTS.sub(r"\1\2live_events", statement)
    if re.search(r"\bevents\b", _EVENTS_COLUMN.sub("", rewritten)):
        raise RuntimeError(f"revision 0010 cannot tell every read of events in view {name}")
    return rewritten


def _replace(statements: dict[str, str]) -> None:
    """Redefine the views of `REBUILT` as `statements` says, keeping their columns."""
    if op.get_context().dialect.name == "postgresql":
        for name in REBUILT:
            replacing = f"CREATE OR REPLACE VIEW {name} AS"
            op.execute(_CREATE_VIEW.sub(replacing, statements[name], count=1))
        return
    for name in reversed(REBUILT):
        op.execute(f"DROP VIEW {name}")
    for name in REBUILT:
        op.execute(statements[name])


def _live_events() -> str:
    dialect = op.get_context().dialect.name
    j = PayloadSql(dialect)
    # A row is live unless a later RunResumed of its run covers it. The unary +
    # keeps the position out of SQLite's choice of index, so a run's resumes are
    # one seek on (event_type, run_id, seed_id): offered (run_id, position), it
    # read every later event of the run, for each event. SQLite also looks the
    # run up first in the set of resumed runs, built once per query; PostgreSQL
    # plans the NOT EXISTS alone as one anti-join, which the OR would prevent.
    covered = f"""EXISTS (
            SELECT 1 FROM events r
            WHERE r.event_type = 'RunResumed' AND r.run_id = e.run_id
              AND +r.position > e.position
              AND {j.integer("abandoned_after_position", "r")} < e.position)"""
    live = f"NOT {covered}"
    if dialect != "postgresql":
        resumed = "SELECT run_id FROM events WHERE event_type = 'RunResumed'"
        live = f"e.run_id NOT IN ({resumed}) OR {live}"
    return f"""
        CREATE VIEW live_events AS
        SELECT {", ".join(f"e.{column}" for column in EVENT_COLUMNS)}
        FROM events e
        WHERE {live}
        """


def _superseded_events() -> str:
    j = PayloadSql(op.get_context().dialect.name)
    return f"""
        CREATE VIEW superseded_events AS
        WITH resumes AS (
            SELECT run_id,
                   position AS resumed_at_position,
                   {j.integer("abandoned_after_position")} AS after_position,
                   {j.integer("attempt")} AS attempt
            FROM events
            WHERE event_type = 'RunResumed'
        ), covered AS (
            SELECT e.run_id AS run_id,
                   e.position AS position,
                   e.stream_id AS stream_id,
                   e.event_type AS event_type,
                   e.epoch AS epoch,
                   r.attempt - 1 AS attempt,
                   r.resumed_at_position AS resumed_at_position,
                   ROW_NUMBER() OVER (
                       PARTITION BY e.position
                       ORDER BY r.after_position DESC, r.resumed_at_position DESC
                   ) AS nth
            FROM resumes r
            JOIN events e
              ON e.run_id = r.run_id
             AND e.position > r.after_position AND e.position < r.resumed_at_position
        )
        SELECT run_id, position, stream_id, event_type, epoch, attempt, resumed_at_position
        FROM covered
        WHERE nth = 1
        """


def upgrade() -> None:
    earlier = _earlier_views()
    op.execute(_live_events())
    op.execute(_superseded_events())
    _replace({name: _over_live_events(name, earlier[name]) for name in REBUILT})
    if op.get_context().dialect.name == "postgresql":
        # The default privileges of 0007 cover views made by the role that ran
        # it; granting outright covers a database migrated by another role too.
        op.execute(f"GRANT SELECT ON {', '.join(VIEWS)} TO {READER}")


def downgrade() -> None:
    earlier = _earlier_views()
    _replace({name: earlier[name] for name in REBUILT})
    for view in reversed(VIEWS):
        op.execute(f"DROP VIEW IF EXISTS {view}")
