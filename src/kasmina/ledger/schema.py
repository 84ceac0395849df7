"""The ledger's tables as SQLAlchemy metadata.

Migrations are the only place DDL runs; this model exists so that Alembic can
prove (``alembic check``) that the migrations and the code agree, and so that
every constraint has a stable name through the naming convention.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import (
    JSON,
    BigInteger,
    CheckConstraint,
    DateTime,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from kasmina.canonical import Json
from kasmina.ledger.store import COLUMNS as COLUMNS  # the one list, re-exported here

NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

metadata = MetaData(naming_convention=NAMING_CONVENTION)

#: SQLite only makes a rowid alias (and so a cheap increasing key) of INTEGER.
PositionType = BigInteger().with_variant(Integer(), "sqlite")
PayloadType = JSON().with_variant(JSONB(), "postgresql")


class Base(DeclarativeBase):
    metadata = metadata


class LedgerRunRow(Base):
    """A run: its key in `LedgerEventRow`, the ledger format it is hashed in, and in
    format 2 the hash of the run start before it (what its first event links to)."""

    __tablename__ = "ledger_runs"

    run_key: Mapped[int] = mapped_column(PositionType, primary_key=True, autoincrement=True)
    run_id: Mapped[str] = mapped_column(String(64))
    format: Mapped[int] = mapped_column(Integer)
    start_prev: Mapped[bytes | None] = mapped_column(LargeBinary)

    __table_args__ = (
        UniqueConstraint("run_id"),
        CheckConstraint("format >= 1", name="format_known"),
        {"sqlite_autoincrement": True},
    )


class LedgerStreamRow(Base):
    """A stream of a run, by key."""

    __tablename__ = "ledger_streams"

    stream_key: Mapped[int] = mapped_column(PositionType, primary_key=True, autoincrement=True)
    run_key: Mapped[int] = mapped_column(BigInteger)
    stream_id: Mapped[str] = mapped_column(String(200))

    __table_args__ = (UniqueConstraint("run_key", "stream_id"), {"sqlite_autoincrement": True})


class LedgerTypeRow(Base):
    """An event type, by key: rows and the index views read by type hold the key."""

    __tablename__ = "ledger_types"

    type_key: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    event_type: Mapped[str] = mapped_column(String(64))

    __table_args__ = (UniqueConstraint("event_type"), {"sqlite_autoincrement": True})


class LedgerEventRow(Base):
    """An event as stored; the `events` view reads it with the columns of DESIGN §2.

    The id is 16 bytes (a UUID), the hash 32 bytes, the time integer
    microseconds on SQLite, the type a key of `LedgerTypeRow`; there is no
    ``prev_hash``: it is the stream's previous hash. An id or hash of another
    form, from an older ledger, is kept as text (SQLite) or as NUL-led UTF-8
    (PostgreSQL; see revision 0014).
    """

    __tablename__ = "ledger_events"

    position: Mapped[int] = mapped_column(PositionType, primary_key=True, autoincrement=True)
    event_id: Mapped[bytes] = mapped_column(LargeBinary)
    run_key: Mapped[int] = mapped_column(BigInteger)
    stream_key: Mapped[int] = mapped_column(BigInteger)
    version: Mapped[int] = mapped_column(Integer)
    type_key: Mapped[int] = mapped_column(Integer)
    schema_version: Mapped[int] = mapped_column(Integer)
    epoch: Mapped[int | None] = mapped_column(Integer)
    seed_id: Mapped[str | None] = mapped_column(String(200))
    payload: Mapped[Json] = mapped_column(PayloadType)
    recorded_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True).with_variant(BigInteger(), "sqlite")
    )
    hash: Mapped[bytes] = mapped_column(LargeBinary)
    #: The writing process's rank in a distributed run; NULL for one process.
    rank: Mapped[int | None] = mapped_column(Integer)

    __table_args__ = (
        UniqueConstraint("event_id"),
        UniqueConstraint("stream_key", "version"),
        Index(None, "run_key", "position"),
        Index(None, "type_key", "run_key", "seed_id"),
        {"sqlite_autoincrement": True},
    )


class RunTipRow(Base):
    """A signature of a run's last event after an append (`kasmina.signing.tip_message`)."""

    __tablename__ = "run_tips"

    run_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    position: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    hash: Mapped[str] = mapped_column(String(64))
    public_key: Mapped[str] = mapped_column(String(64))
    signature: Mapped[str] = mapped_column(String(128))


class SnapshotRow(Base):
    """Folded replay state at a position (see `kasmina.replay.snapshots`)."""

    __tablename__ = "snapshots"

    snapshot_id: Mapped[int] = mapped_column(PositionType, primary_key=True, autoincrement=True)
    run_id: Mapped[str] = mapped_column(String(64))
    position: Mapped[int] = mapped_column(BigInteger)
    epoch: Mapped[int | None] = mapped_column(Integer)
    events: Mapped[int] = mapped_column(BigInteger)
    event_hash: Mapped[str] = mapped_column(String(64))
    format: Mapped[int] = mapped_column(Integer)
    state: Mapped[str] = mapped_column(Text)
    hash: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))

    __table_args__ = (UniqueConstraint("run_id", "position"), {"sqlite_autoincrement": True})


#: The read-only views the migrations create, in creation order: what
#: exports write out beside the events, and what the migration test holds the
#: database to.
VIEWS: tuple[str, ...] = (
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
    "metrics",
    "decisions",
    "decision_effects",
    "live_events",
    "superseded_events",
    "run_lineage",
)
