"""Adapters for bench/compare.py: every system that records the workload, kasmina included.

Each adapter has a label, a backend ("sqlite", "postgres" or "file") and

- `setup()`: once, untimed: the empty store every measurement is copied from
  (an SQLite template file, or a PostgreSQL template database), so schema
  migrations (MLflow's Alembic chain, kasmina's) run once, not per repetition;
- `prepare()`: untimed: a fresh empty store from the template, connected, with
  the run (kasmina's `RunStarted`, eventsourcing's aggregates, MLflow's
  experiment and run) created;
- `append(records, batch)`: the timed part, returning seconds: `batch` events
  per transaction (1 = one event per transaction);

and, where the system can answer them, `read_all()` -> (events, seconds),
`state_methods()` -> {name: epoch -> (stages, seconds)} and
`bytes_per_event(n)`. Peer libraries are imported here (and only in bench/).

Durability is equal unless a label says otherwise: SQLite stores run in WAL
with ``synchronous=NORMAL`` (eventsourcing's and MLflow's through their
connection hooks, checked with a PRAGMA query), PostgreSQL stores share one
server at default durability (fsync on, synchronous_commit on).
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from uuid import UUID

import psycopg
from eventsourcing.application import Application
from eventsourcing.domain import Aggregate
from eventsourcing.sqlite import SQLiteConnection, SQLiteConnectionPool
from workload import Record, Workload

from kasmina.events import EVENT_TYPES, event_from_dict
from kasmina.ledger import Ledger, migrate
from kasmina.ledger.formats import LEDGER_FORMAT
from kasmina.ledger.run import LedgerRecorder
from kasmina.ledger.store import INSERT_COLUMNS, micros
from kasmina.replay import replay, snapshot_run

StateFn = Callable[[int], tuple[dict[str, str], float]]
SCHEMA_VERSION = {name: cls.schema_version for name, cls in EVENT_TYPES.items()}
#: What the floors write into kasmina's ``ledger_events`` (revision 0014): every column an
#: append writes but ``rank`` (NULL), the run and stream by key.
FLOOR_COLUMNS = tuple(column for column in INSERT_COLUMNS if column != "rank")
EVENT_COLUMNS = ", ".join(FLOOR_COLUMNS)
NEW_RUN = "INSERT INTO ledger_runs (run_id, format) VALUES (?, ?) RETURNING run_key"
NEW_STREAM = "INSERT INTO ledger_streams (run_key, stream_id) VALUES (?, ?) RETURNING stream_key"
NEW_TYPE = "INSERT INTO ledger_types (event_type) VALUES (?) RETURNING type_key"
#: A floor's read: its own rows, as stored (``payload`` is column 9, as in ``events``).
FLOOR_READ = "SELECT * FROM ledger_events WHERE run_key = ? ORDER BY position"
SQLITE_SYNC = {0: "OFF", 1: "NORMAL", 2: "FULL", 3: "EXTRA"}


# -- shared context: working folder, PostgreSQL server, templates ---------------------


@dataclass
class PgContext:
    """The benchmark's PostgreSQL server (tests/pgserver.py) and its admin connection."""

    server: Any  # tests/pgserver.PgServer

    @property
    def host(self) -> str:
        return str(self.server.socket_dir)

    @property
    def port(self) -> int:
        return int(self.server.port)

    def url(self, db: str) -> str:
        return str(self.server.url(db))

    def conninfo(self, db: str = "postgres") -> str:
        return str(self.server.conninfo(db))

    def admin(self, *statements: str) -> None:
        with psycopg.connect(self.conninfo(), autocommit=True) as conn:
            for s in statements:
                conn.execute(s)  # type: ignore[arg-type]

    def fresh(self, db: str, template: str) -> None:
        """Drop `db` and create it again from `template`, then checkpoint (all untimed)."""
        self.admin(
            f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)',
            f'CREATE DATABASE "{db}" TEMPLATE "{template}"',
            "CHECKPOINT",
        )

    def drop(self, db: str) -> None:
        self.admin(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)')

    def table_bytes(self, db: str) -> int:
        """pg_total_relation_size (heap, indexes, TOAST) of every table in `public`."""
        with psycopg.connect(self.conninfo(db), autocommit=True) as conn:
            row = conn.execute(
                "SELECT COALESCE(SUM(pg_total_relation_size(c.oid)), 0) FROM pg_class c "
                "JOIN pg_namespace n ON n.oid = c.relnamespace "
                "WHERE n.nspname = 'public' AND c.relkind IN ('r', 'm', 'p')"
            ).fetchone()
        return int(row[0]) if row else 0

    def server_version(self) -> str:
        with psycopg.connect(self.conninfo(), autocommit=True) as conn:
            row = conn.execute("SHOW server_version").fetchone()
        return str(row[0]) if row else "?"


@dataclass
class Context:
    work: Path
    pg: PgContext | None
    workload: Workload
    #: template key -> SQLite file or PostgreSQL database name (built once)
    templates: dict[str, str] = field(default_factory=dict)
    #: template key -> size of the empty store, in bytes
    template_bytes: dict[str, int] = field(default_factory=dict)
    counter: int = 0

    def fresh_path(self, stem: str, suffix: str = ".db") -> Path:
        self.counter += 1
        return self.work / f"{stem}-{self.counter}{suffix}"


def remove_sqlite(path: Path | None) -> None:
    if path is None:
        return
    for suffix in ("", "-wal", "-shm", "-journal"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)


def checkpoint_size(path: Path) -> int:
    """The file's size once its write-ahead log is folded in and truncated."""
    conn = sqlite3.connect(path)
    try:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        conn.close()
    wal = Path(f"{path}-wal")
    return path.stat().st_size + (wal.stat().st_size if wal.exists() else 0)


def file_pragmas(conn: sqlite3.Connection) -> tuple[str, str]:
    mode = str(conn.execute("PRAGMA journal_mode").fetchone()[0])
    sync = SQLITE_SYNC.get(int(conn.execute("PRAGMA synchronous").fetchone()[0]), "?")
    return mode, sync


def chunks(records: Sequence[Record], size: int) -> list[Sequence[Record]]:
    return [records[i : i + size] for i in range(0, len(records), size)]


def metric_value(r: Record) -> float:
    """The number an MLflow metric row keeps for an event: its first numeric field."""
    p = r.payload
    for key in ("accuracy", "val_accuracy", "score", "alpha", "target", "improvement"):
        value = p.get(key)
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
    return 0.0


# -- the interface -------------------------------------------------------------------


class System:
    label: str = ""
    backend: str = ""  # "sqlite" | "postgres" | "file"
    kasmina: bool = False
    #: "equal" (WAL + synchronous=NORMAL on SQLite) or "defaults" (the library's own)
    durability: str = "equal"
    #: This adapter is the one its store kind is read back and sized with.
    reads: bool = False
    single: bool = True
    single_label: str | None = None
    #: journal_mode / synchronous as checked on the adapter's own connection
    pragmas: tuple[str, str] | None = None

    #: `Context.template_bytes` key of the empty store this one starts from.
    template = ""

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx

    def setup(self) -> None:
        """Build the template (once)."""

    def prepare(self) -> None:
        raise NotImplementedError

    def append(self, records: Sequence[Record], batch: int) -> float:
        raise NotImplementedError

    def read_all(self) -> tuple[int, float]:
        raise NotImplementedError

    def read_models(self) -> tuple[int, float]:
        """kasmina's `read_all` with every payload validated besides."""
        raise NotImplementedError

    def prepare_state(self, epoch: int) -> None:
        """Untimed work before the state-at-epoch queries (snapshots, versions)."""

    def state_methods(self) -> dict[str, StateFn]:
        return {}

    def bytes_per_event(self, events: int) -> float:
        """Bytes added to the empty store (the ``template`` one), per event."""
        base = self.ctx.template_bytes[self.template]
        if self.backend == "sqlite":
            path = getattr(self, "path", None)
            assert path is not None
            return (checkpoint_size(path) - base) / events
        assert self.ctx.pg is not None
        return (self.ctx.pg.table_bytes(getattr(self, "key", "")) - base) / events

    def close(self) -> None:
        """Release connections and files."""

    def describe(self) -> str:
        if self.pragmas is None:
            return ""
        return f"journal_mode={self.pragmas[0]}, synchronous={self.pragmas[1]}"


# -- kasmina ---------------------------------------------------------------------------


class Kasmina(System):
    """kasmina's public API: `Recorder.emit` of payload models, or `Ledger.append` batches."""

    kasmina = True

    def __init__(
        self, ctx: Context, backend: str, *, prebuilt: bool = False, snapshot_every: int = 2_000
    ) -> None:
        super().__init__(ctx)
        self.backend = backend
        self.template = f"kasmina-{backend}"
        self.prebuilt = prebuilt
        self.snapshot_every = snapshot_every
        where = "SQLite" if backend == "sqlite" else "PostgreSQL"
        self.label = (
            f"kasmina {where}, Ledger.append of prebuilt events" if prebuilt else f"kasmina {where}"
        )
        self.reads = not prebuilt
        self.key = f"kasmina_{backend}{'_prebuilt' if prebuilt else ''}"
        self.path: Path | None = None
        self.ledger: Ledger | None = None
        self.run_id = ""

    def setup(self) -> None:
        tkey = f"kasmina-{self.backend}"
        if tkey in self.ctx.templates:
            return
        if self.backend == "sqlite":
            path = self.ctx.work / "template-kasmina.db"
            migrate.upgrade(f"sqlite:///{path}")
            self.ctx.templates[tkey] = str(path)
            self.ctx.template_bytes[tkey] = checkpoint_size(path)
        else:
            pg = self.ctx.pg
            assert pg is not None
            pg.admin('CREATE DATABASE "template_kasmina"')
            migrate.upgrade(pg.url("template_kasmina"))
            self.ctx.templates[tkey] = "template_kasmina"
            self.ctx.template_bytes[tkey] = pg.table_bytes("template_kasmina")

    @property
    def url(self) -> str:
        if self.backend == "sqlite":
            return f"sqlite:///{self.path}"
        assert self.ctx.pg is not None
        return self.ctx.pg.url(self.key)

    def prepare(self) -> None:
        self.close()
        tkey = f"kasmina-{self.backend}"
        if self.backend == "sqlite":
            remove_sqlite(self.path)
            self.path = self.ctx.fresh_path(self.key)
            shutil.copyfile(self.ctx.templates[tkey], self.path)
        else:
            assert self.ctx.pg is not None
            self.ctx.pg.fresh(self.key, self.ctx.templates[tkey])
        self.ledger = Ledger.open(self.url, synchronous="NORMAL")
        if self.backend == "sqlite":
            assert self.path is not None
            conn = sqlite3.connect(self.path)
            try:
                mode = str(conn.execute("PRAGMA journal_mode").fetchone()[0])
            finally:
                conn.close()
            self.pragmas = (mode, "NORMAL (Ledger.open(synchronous='NORMAL'))")
        self.run_id = self.ledger.start_run("bench", seed=0, config={"bench": "compare"}).run_id

    def append(self, records: Sequence[Record], batch: int) -> float:
        ledger, run_id = self.ledger, self.run_id
        assert ledger is not None
        if self.prebuilt:
            events = [
                event_from_dict(
                    r.event_type,
                    r.payload,
                    run_id=run_id,
                    stream_id=r.stream_id,
                    epoch=r.epoch,
                    seed_id=r.seed_id,
                )
                for r in records
            ]
            batches = [events[i : i + batch] for i in range(0, len(events), batch)]
            append = ledger.append
            t0 = time.perf_counter()
            for b in batches:
                append(b)
            elapsed = time.perf_counter() - t0
        else:
            recorder = LedgerRecorder(ledger, run_id, buffer_size=batch if batch > 1 else 0)
            classes = EVENT_TYPES
            emit = recorder.emit
            t0 = time.perf_counter()
            for r in records:  # what a training loop does: build the model, record it
                emit(
                    classes[r.event_type](**r.payload),
                    stream_id=r.stream_id,
                    epoch=r.epoch,
                    seed_id=r.seed_id,
                )
            recorder.flush()
            elapsed = time.perf_counter() - t0
        ledger.finish_run(run_id, "completed")  # untimed: seals the run
        return elapsed

    def read_all(self) -> tuple[int, float]:
        """Every event with its payload decoded, as eventsourcing's mapper gives its
        events: `StoredEvent.data`; the model is validated when `payload` is first read."""
        assert self.ledger is not None
        t0 = time.perf_counter()
        events = list(self.ledger.read(self.run_id))
        return len(events), time.perf_counter() - t0

    def read_models(self) -> tuple[int, float]:
        """`read_all`, and every payload validated as its model besides."""
        assert self.ledger is not None
        t0 = time.perf_counter()
        payloads = [event.payload for event in self.ledger.read(self.run_id)]
        return len(payloads), time.perf_counter() - t0

    def prepare_state(self, epoch: int) -> None:
        assert self.ledger is not None
        snapshot_run(self.ledger, self.run_id, every=self.snapshot_every)

    def state_methods(self) -> dict[str, StateFn]:
        ledger, run_id, slots = self.ledger, self.run_id, self.ctx.workload.slots
        assert ledger is not None

        def fold(
            epoch: int, *, snapshots: bool, trust: bool = False
        ) -> tuple[dict[str, str], float]:
            t0 = time.perf_counter()
            state = replay(ledger, run_id, epoch, snapshots=snapshots, trust=trust)
            answer = {s: state.slot(s).stage.name for s in slots}
            return answer, time.perf_counter() - t0

        def view(epoch: int) -> tuple[dict[str, str], float]:
            query = (
                "SELECT slot_id, stage FROM stage_intervals "
                f"WHERE run_id = '{run_id}' AND from_epoch <= {int(epoch)} "
                f"AND (to_epoch IS NULL OR to_epoch > {int(epoch)})"
            )
            t0 = time.perf_counter()
            _, rows = ledger.sql(query)
            answer = dict.fromkeys(slots, "DORMANT")  # a slot with no move yet has no row
            answer.update({str(r[0]): str(r[1]) for r in rows})
            return answer, time.perf_counter() - t0

        return {
            "fold (ledger.replay, snapshots=False)": lambda e: fold(e, snapshots=False),
            "fold, trust=True (no hash check)": lambda e: fold(e, snapshots=False, trust=True),
            f"snapshots (every {self.snapshot_every:,} events)": lambda e: fold(e, snapshots=True),
            "SQL view stage_intervals": view,
        }

    def close(self) -> None:
        ledger, self.ledger = self.ledger, None
        if ledger is not None:
            ledger.close()


# -- eventsourcing ----------------------------------------------------------------------

#: SQLite file -> synchronous level set on every new connection eventsourcing opens to it.
_ES_SYNCHRONOUS: dict[str, str] = {}
_es_original_create = SQLiteConnectionPool._create_connection


def _es_create_connection(self: SQLiteConnectionPool) -> SQLiteConnection:
    """eventsourcing's own connection factory, then `PRAGMA synchronous` for files we name."""
    conn = _es_original_create(self)
    level = _ES_SYNCHRONOUS.get(self.db_name)
    if level is not None:
        conn.cursor().execute(f"PRAGMA synchronous={level}")
    return conn


SQLiteConnectionPool._create_connection = _es_create_connection  # type: ignore[method-assign]


class Stream(Aggregate):
    """One aggregate per stream (`slot/<id>` and `run`); each event type is a class."""

    def __init__(self, stream_id: str) -> None:
        self.stream_id = stream_id
        self.stage = "DORMANT"

    @staticmethod
    def create_id(stream_id: str) -> UUID:  # type: ignore[override]
        return uuid.uuid5(uuid.NAMESPACE_URL, f"kasmina-bench/{stream_id}")

    class Recorded(Aggregate.Event):
        epoch: int
        seed_id: str | None
        payload: dict[str, Any]

    class SeedStageChanged(Recorded):
        def apply(self, aggregate: Any) -> None:
            aggregate.stage = self.payload["to_stage"]

    class SeedGerminated(Recorded):
        pass

    class SeedGateEvaluated(Recorded):
        pass

    class AlphaTargetSet(Recorded):
        pass

    class SeedFossilized(Recorded):
        pass

    class SeedPruned(Recorded):
        pass

    class SeedTelemetrySampled(Recorded):
        pass

    class EpochCompleted(Recorded):
        pass


class BenchApp(Application[UUID]):
    name = "KasminaBench"


class Eventsourcing(System):
    """The `eventsourcing` library's normal path: aggregate events, mapper, JSON, recorder."""

    def __init__(self, ctx: Context, backend: str, *, durability: str = "equal") -> None:
        super().__init__(ctx)
        self.backend = backend
        self.template = f"es-{backend}"
        self.durability = durability
        where = "SQLite" if backend == "sqlite" else "PostgreSQL"
        suffix = " (its defaults: WAL, synchronous=FULL)" if durability == "defaults" else ""
        self.label = f"eventsourcing {where}{suffix}"
        self.reads = durability == "equal"
        self.key = f"es_{backend}_{durability}"
        self.path: Path | None = None
        self.app: BenchApp | None = None
        self.aggregates: dict[str, Stream] = {}
        self.versions: dict[str, int] = {}

    def env(self, target: str) -> dict[str, str]:
        if self.backend == "sqlite":
            return {"PERSISTENCE_MODULE": "eventsourcing.sqlite", "SQLITE_DBNAME": target}
        pg = self.ctx.pg
        assert pg is not None
        return {
            "PERSISTENCE_MODULE": "eventsourcing.postgres",
            "POSTGRES_DBNAME": target,
            "POSTGRES_HOST": pg.host,
            "POSTGRES_PORT": str(pg.port),
            "POSTGRES_USER": "postgres",
            "POSTGRES_PASSWORD": "",
        }

    def setup(self) -> None:
        tkey = f"es-{self.backend}"
        if tkey in self.ctx.templates:
            return
        if self.backend == "sqlite":
            path = self.ctx.work / "template-es.db"
            BenchApp(env=self.env(str(path))).close()  # creates the table, sets WAL
            self.ctx.templates[tkey] = str(path)
            self.ctx.template_bytes[tkey] = checkpoint_size(path)
        else:
            pg = self.ctx.pg
            assert pg is not None
            pg.admin('CREATE DATABASE "template_es"')
            BenchApp(env=self.env("template_es")).close()
            self.ctx.templates[tkey] = "template_es"
            self.ctx.template_bytes[tkey] = pg.table_bytes("template_es")

    def prepare(self) -> None:
        self.close()
        tkey = f"es-{self.backend}"
        if self.backend == "sqlite":
            remove_sqlite(self.path)
            if self.path is not None:
                _ES_SYNCHRONOUS.pop(str(self.path), None)
            self.path = self.ctx.fresh_path(self.key)
            shutil.copyfile(self.ctx.templates[tkey], self.path)
            if self.durability == "equal":
                _ES_SYNCHRONOUS[str(self.path)] = "NORMAL"
            self.app = BenchApp(env=self.env(str(self.path)))
            self.pragmas = self._check_pragmas()
        else:
            assert self.ctx.pg is not None
            self.ctx.pg.fresh(self.key, self.ctx.templates[tkey])
            self.app = BenchApp(env=self.env(self.key))
        streams = ["run", *(f"slot/{s}" for s in self.ctx.workload.slots)]
        self.aggregates = {s: Stream(stream_id=s) for s in streams}
        self.app.save(*self.aggregates.values())  # untimed, like kasmina's RunStarted

    def _check_pragmas(self) -> tuple[str, str]:
        """journal_mode and synchronous on eventsourcing's writer and reader connections."""
        assert self.app is not None
        datastore = self.app.factory.datastore  # type: ignore[attr-defined]
        seen = set()
        for commit in (True, False):
            with datastore.transaction(commit=commit) as cur:
                cur.execute("PRAGMA journal_mode")
                mode = str(cur.fetchone()[0])
                cur.execute("PRAGMA synchronous")
                seen.add((mode, SQLITE_SYNC.get(int(cur.fetchone()[0]), "?")))
        assert len(seen) == 1, f"connections differ: {seen}"
        found = seen.pop()
        want = ("wal", "NORMAL" if self.durability == "equal" else "FULL")
        assert found == want, f"{self.label}: {found}, expected {want}"
        return found

    def append(self, records: Sequence[Record], batch: int) -> float:
        app, aggregates = self.app, self.aggregates
        assert app is not None
        classes = {name: getattr(Stream, name) for name in {r.event_type for r in records}}
        touched: dict[str, Stream] = {}
        pending = 0
        t0 = time.perf_counter()
        for r in records:
            aggregate = aggregates[r.stream_id]
            aggregate.trigger_event(
                classes[r.event_type], epoch=r.epoch, seed_id=r.seed_id, payload=r.payload
            )
            touched[r.stream_id] = aggregate
            pending += 1
            if pending == batch:
                app.save(*touched.values())  # one transaction
                touched.clear()
                pending = 0
        if touched:
            app.save(*touched.values())
        return time.perf_counter() - t0

    def read_all(self) -> tuple[int, float]:
        app = self.app
        assert app is not None
        recorder, mapper = app.recorder, app.mapper
        t0 = time.perf_counter()
        events = []
        start = 1
        while True:
            page = recorder.select_notifications(start, 1000)
            events.extend(mapper.to_domain_event(n) for n in page)
            if len(page) < 1000:
                break
            start = page[-1].id + 1
        return len(events), time.perf_counter() - t0

    def prepare_state(self, epoch: int) -> None:
        counts = self.ctx.workload.stream_counts_at(epoch)
        # the version each slot's aggregate had at the end of the epoch: 1 (created) + its
        # events up to then, known from the workload (a generous shortcut: an application
        # would have to look it up)
        self.versions = {s: 1 + counts.get(f"slot/{s}", 0) for s in self.ctx.workload.slots}

    def state_methods(self) -> dict[str, StateFn]:
        app = self.app
        assert app is not None
        ids = {s: Stream.create_id(f"slot/{s}") for s in self.ctx.workload.slots}

        def at(epoch: int) -> tuple[dict[str, str], float]:
            get = app.repository.get
            t0 = time.perf_counter()
            answer = {s: get(ids[s], version=v).stage for s, v in self.versions.items()}
            return answer, time.perf_counter() - t0

        return {"repository.get(slot, version=v) per slot": at}

    def close(self) -> None:
        app, self.app = self.app, None
        if app is not None:
            app.close()


# -- MLflow ------------------------------------------------------------------------------


class Mlflow(System):
    """MLflow's SQLAlchemy tracking store: one run, `log_batch` of one metric row per event."""

    def __init__(self, ctx: Context, backend: str, *, durability: str = "equal") -> None:
        super().__init__(ctx)
        self.backend = backend
        self.template = f"mlflow-{backend}"
        self.durability = durability
        where = "SQLite" if backend == "sqlite" else "PostgreSQL"
        suffix = (
            " (its defaults: rollback journal, synchronous=FULL)"
            if durability == "defaults"
            else ""
        )
        self.label = f"MLflow {where}{suffix}"
        self.reads = durability == "equal"
        self.key = f"mlflow_{backend}_{durability}"
        self.path: Path | None = None
        self.store: Any = None
        self.uri = ""
        self.run_id = ""
        self.keys: list[str] = []

    def _uri(self, target: str) -> str:
        if self.backend == "sqlite":
            return f"sqlite:///{target}"
        assert self.ctx.pg is not None
        return self.ctx.pg.url(target)

    @staticmethod
    def _open(uri: str, artifacts: Path) -> Any:
        from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

        return SqlAlchemyStore(uri, str(artifacts))

    @staticmethod
    def _dispose(store: Any, uri: str) -> None:
        from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

        store.engine.dispose()
        SqlAlchemyStore._engine_map.pop(uri, None)  # MLflow caches one engine per URI

    def setup(self) -> None:
        tkey = f"mlflow-{self.backend}"
        if tkey in self.ctx.templates:
            return
        artifacts = self.ctx.work / "mlflow-artifacts"
        if self.backend == "sqlite":
            path = self.ctx.work / "template-mlflow.db"
            uri = self._uri(str(path))
            self._dispose(self._open(uri, artifacts), uri)  # runs MLflow's migrations once
            self.ctx.templates[tkey] = str(path)
            self.ctx.template_bytes[tkey] = checkpoint_size(path)
        else:
            pg = self.ctx.pg
            assert pg is not None
            pg.admin('CREATE DATABASE "template_mlflow"')
            uri = self._uri("template_mlflow")
            self._dispose(self._open(uri, artifacts), uri)
            self.ctx.templates[tkey] = "template_mlflow"
            self.ctx.template_bytes[tkey] = pg.table_bytes("template_mlflow")

    def prepare(self) -> None:
        self.close()
        tkey = f"mlflow-{self.backend}"
        if self.backend == "sqlite":
            remove_sqlite(self.path)
            self.path = self.ctx.fresh_path(self.key)
            shutil.copyfile(self.ctx.templates[tkey], self.path)
            self.uri = self._uri(str(self.path))
        else:
            assert self.ctx.pg is not None
            self.ctx.pg.fresh(self.key, self.ctx.templates[tkey])
            self.uri = self._uri(self.key)
        store = self.store = self._open(self.uri, self.ctx.work / "mlflow-artifacts")
        if self.backend == "sqlite":
            if self.durability == "equal":
                from sqlalchemy import event

                def on_connect(dbapi_conn: Any, _record: Any) -> None:
                    cur = dbapi_conn.cursor()
                    cur.execute("PRAGMA journal_mode=WAL")
                    cur.execute("PRAGMA synchronous=NORMAL")
                    cur.close()

                event.listen(store.engine, "connect", on_connect)
                store.engine.dispose()  # pooled connections reconnect through the hook
            with store.engine.connect() as conn:
                mode = str(conn.exec_driver_sql("PRAGMA journal_mode").scalar())
                sync = SQLITE_SYNC.get(
                    int(conn.exec_driver_sql("PRAGMA synchronous").scalar()), "?"
                )
            self.pragmas = (mode, sync)
            want = ("wal", "NORMAL") if self.durability == "equal" else ("delete", "FULL")
            assert self.pragmas == want, f"{self.label}: {self.pragmas}, expected {want}"
        experiment = store.create_experiment("bench")
        run = store.create_run(
            experiment, user_id="bench", start_time=int(time.time() * 1000), tags=[], run_name="b"
        )
        self.run_id = run.info.run_id

    def append(self, records: Sequence[Record], batch: int) -> float:
        from mlflow.entities import Metric

        store, run_id = self.store, self.run_id
        base = int(time.time() * 1000)
        groups = chunks(records, batch)
        keys: set[str] = set()
        t0 = time.perf_counter()
        i = 0
        for group in groups:
            metrics = []
            for r in group:
                key = f"{r.stream_id}/{r.event_type}"
                keys.add(key)
                # distinct timestamps: MLflow drops a repeated (key, value, step, timestamp)
                metrics.append(Metric(key, metric_value(r), base + i, r.epoch))
                i += 1
            store.log_batch(run_id, metrics=metrics, params=[], tags=[])
        elapsed = time.perf_counter() - t0
        self.keys = sorted(keys)
        return elapsed

    def read_all(self) -> tuple[int, float]:
        store, run_id = self.store, self.run_id
        t0 = time.perf_counter()
        n = 0
        for key in self.keys:
            n += len(store.get_metric_history(run_id, key))
        return n, time.perf_counter() - t0

    def close(self) -> None:
        store, self.store = self.store, None
        if store is not None:
            self._dispose(store, self.uri)


# -- JSON lines ----------------------------------------------------------------------------


def jsonl_line(r: Record) -> str:
    return json.dumps(
        {
            "event_id": str(uuid.uuid4()),
            "stream": r.stream_id,
            "epoch": r.epoch,
            "seed": r.seed_id,
            "type": r.event_type,
            "payload": r.payload,
            "recorded_at": datetime.now(UTC).isoformat(),
        }
    )


class Jsonl(System):
    """esper-style telemetry: one `json.dumps` line per event appended to a file."""

    backend = "file"

    def __init__(self, ctx: Context, *, fsync: bool) -> None:
        super().__init__(ctx)
        self.fsync = fsync
        self.label = "JSON lines, fsync per batch" if fsync else "JSON lines, no fsync"
        self.single_label = "JSON lines, fsync per event" if fsync else None
        self.reads = fsync
        self.key = "jsonl_fsync" if fsync else "jsonl_nofsync"
        self.path: Path | None = None
        self.file: Any = None

    def prepare(self) -> None:
        self.close()
        if self.path is not None:
            self.path.unlink(missing_ok=True)
        self.path = self.ctx.fresh_path(self.key, ".jsonl")
        self.file = open(self.path, "a", encoding="utf-8")

    def append(self, records: Sequence[Record], batch: int) -> float:
        f = self.file
        fsync, fileno = self.fsync, f.fileno()
        groups = chunks(records, batch)
        t0 = time.perf_counter()
        for group in groups:
            f.write("".join([jsonl_line(r) + "\n" for r in group]))
            f.flush()
            if fsync:
                os.fsync(fileno)
        return time.perf_counter() - t0

    def read_all(self) -> tuple[int, float]:
        assert self.path is not None
        t0 = time.perf_counter()
        with open(self.path, encoding="utf-8") as f:
            events = [json.loads(line) for line in f]
        return len(events), time.perf_counter() - t0

    def state_methods(self) -> dict[str, StateFn]:
        slots = self.ctx.workload.slots
        path = self.path

        def scan(epoch: int) -> tuple[dict[str, str], float]:
            assert path is not None
            t0 = time.perf_counter()
            stages = dict.fromkeys(slots, "DORMANT")
            with open(path, encoding="utf-8") as f:
                for line in f:
                    e = json.loads(line)
                    if e["epoch"] > epoch:
                        break
                    if e["type"] == "SeedStageChanged":
                        p = e["payload"]
                        stages[p["slot_id"]] = p["to_stage"]
            return stages, time.perf_counter() - t0

        return {"scan until epoch > N": scan}

    def bytes_per_event(self, events: int) -> float:
        assert self.path is not None
        return self.path.stat().st_size / events

    def close(self) -> None:
        if self.file is not None:
            self.file.close()
            self.file = None


# -- floors ----------------------------------------------------------------------------------


class StreamKeys:
    """A floor's stream keys: remembered, or a ``ledger_streams`` row made when a stream is
    first seen, by `new` inside the transaction the floor has open (as kasmina does)."""

    def __init__(self, new: Callable[[str], int]) -> None:
        self.new = new
        self.keys: dict[str, int] = {}

    def __call__(self, stream: str) -> int:
        key = self.keys.get(stream)
        if key is None:
            key = self.keys[stream] = self.new(stream)
        return key


def floor_types(records: Sequence[Record], new: Callable[[str], int]) -> dict[str, int]:
    """A floor's event types by key, each made by `new` before the clock starts."""
    return {name: new(name) for name in dict.fromkeys(r.event_type for r in records)}


def floor_rows(
    run_key: int,
    types: dict[str, int],
    stream_key: Callable[[str], int],
    records: Sequence[Record],
    versions: dict[str, int],
    *,
    postgres: bool,
) -> list[tuple[Any, ...]]:
    """What a careful hand-written logger of kasmina's schema does per row: a uuid's 16
    bytes, stdlib JSON, the time (integer microseconds on SQLite), no hash (a
    constant 32 bytes)."""
    now = datetime.now(UTC)
    at = now if postgres else micros(now)
    rows = []
    for r in records:
        v = versions[r.stream_id] = versions.get(r.stream_id, 0) + 1
        event_id = uuid.uuid4()
        rows.append(
            (
                event_id.bytes,
                run_key,
                stream_key(r.stream_id),
                v,
                types[r.event_type],
                SCHEMA_VERSION[r.event_type],
                r.epoch,
                r.seed_id,
                json.dumps(r.payload),
                at,
                b"\xff" * 32,
            )
        )
    return rows


class SqliteFloor(System):
    """Plain `sqlite3.executemany` into kasmina's own tables (WAL, synchronous=NORMAL): since
    revision 0014, ``ledger_events`` rows keyed by a ``ledger_runs`` row written in
    `prepare` and ``ledger_streams`` rows written as streams are first seen."""

    backend = "sqlite"
    template = "kasmina-sqlite"
    label = "floor: sqlite3 executemany"
    reads = True

    def __init__(self, ctx: Context) -> None:
        super().__init__(ctx)
        self.single_label = "floor: sqlite3 INSERT per transaction"
        self.path: Path | None = None
        self.conn: sqlite3.Connection | None = None
        self.run_key = 0
        self.types: dict[str, int] = {}
        self.stream_key: StreamKeys | None = None

    def setup(self) -> None:
        Kasmina(self.ctx, "sqlite").setup()  # the same template as kasmina's

    def prepare(self) -> None:
        self.close()
        remove_sqlite(self.path)
        self.path = self.ctx.fresh_path("floor_sqlite")
        shutil.copyfile(self.ctx.templates["kasmina-sqlite"], self.path)
        self.conn = sqlite3.connect(self.path, isolation_level=None)
        self.conn.execute("PRAGMA journal_mode=WAL")
        self.conn.execute("PRAGMA synchronous=NORMAL")
        self.pragmas = file_pragmas(self.conn)
        conn = self.conn
        conn.execute("BEGIN IMMEDIATE")
        (self.run_key,) = conn.execute(NEW_RUN, (uuid.uuid4().hex, LEDGER_FORMAT)).fetchone()
        self.types = floor_types(
            self.ctx.workload.records,
            lambda name: int(conn.execute(NEW_TYPE, (name,)).fetchone()[0]),
        )
        conn.execute("COMMIT")
        self.stream_key = StreamKeys(
            lambda stream: int(conn.execute(NEW_STREAM, (self.run_key, stream)).fetchone()[0])
        )

    def append(self, records: Sequence[Record], batch: int) -> float:
        conn, stream_key = self.conn, self.stream_key
        assert conn is not None and stream_key is not None
        sql = f"INSERT INTO ledger_events ({EVENT_COLUMNS}) VALUES ({', '.join('?' * 11)})"
        groups = chunks(records, batch)
        versions: dict[str, int] = {}
        t0 = time.perf_counter()
        for group in groups:
            conn.execute("BEGIN IMMEDIATE")
            rows = floor_rows(self.run_key, self.types, stream_key, group, versions, postgres=False)
            conn.executemany(sql, rows)
            conn.execute("COMMIT")
        return time.perf_counter() - t0

    def read_all(self) -> tuple[int, float]:
        conn = self.conn
        assert conn is not None
        t0 = time.perf_counter()
        rows = conn.execute(FLOOR_READ, (self.run_key,)).fetchall()
        payloads = [json.loads(r[9]) for r in rows]
        return len(payloads), time.perf_counter() - t0

    def close(self) -> None:
        conn, self.conn = self.conn, None
        if conn is not None:
            conn.close()


class PgFloor(System):
    """psycopg `executemany` of INSERTs into kasmina's PostgreSQL tables (issue 22's floor;
    psycopg runs it in pipeline mode), keyed as `SqliteFloor`'s rows are."""

    backend = "postgres"
    template = "kasmina-postgres"
    label = "floor: psycopg executemany"
    reads = True
    key = "floor_pg"

    def __init__(self, ctx: Context) -> None:
        super().__init__(ctx)
        self.conn: psycopg.Connection[Any] | None = None
        self.run_key = 0
        self.types: dict[str, int] = {}
        self.stream_key: StreamKeys | None = None

    def setup(self) -> None:
        Kasmina(self.ctx, "postgres").setup()

    def prepare(self) -> None:
        self.close()
        assert self.ctx.pg is not None
        self.ctx.pg.fresh(self.key, self.ctx.templates["kasmina-postgres"])
        conn = self.conn = psycopg.connect(self.ctx.pg.conninfo(self.key), autocommit=True)
        row = conn.execute(pg_sql(NEW_RUN), (uuid.uuid4().hex, LEDGER_FORMAT)).fetchone()
        self.run_key = int(row[0]) if row else 0

        def new_type(name: str) -> int:
            found = conn.execute(pg_sql(NEW_TYPE), (name,)).fetchone()
            return int(found[0]) if found else 0

        self.types = floor_types(self.ctx.workload.records, new_type)

        def new_stream(stream: str) -> int:  # in the transaction `conn` has open
            found = conn.execute(pg_sql(NEW_STREAM), (self.run_key, stream)).fetchone()
            return int(found[0]) if found else 0

        self.stream_key = StreamKeys(new_stream)

    def append(self, records: Sequence[Record], batch: int) -> float:
        conn, stream_key = self.conn, self.stream_key
        assert conn is not None and stream_key is not None
        groups = chunks(records, batch)
        versions: dict[str, int] = {}
        insert_sql = (
            f"INSERT INTO ledger_events ({EVENT_COLUMNS}) VALUES "
            f"({', '.join(['%s'] * 8)}, CAST(%s AS jsonb), %s, %s)"
        )
        t0 = time.perf_counter()
        for group in groups:
            with conn.transaction(), conn.cursor() as cur:
                rows = floor_rows(
                    self.run_key, self.types, stream_key, group, versions, postgres=True
                )
                if batch == 1:
                    cur.execute(insert_sql, rows[0])
                else:
                    cur.executemany(insert_sql, rows)
        return time.perf_counter() - t0

    def read_all(self) -> tuple[int, float]:
        conn = self.conn
        assert conn is not None
        t0 = time.perf_counter()
        with conn.cursor() as cur:
            # psycopg decodes the jsonb payloads into dicts
            cur.execute(pg_sql(FLOOR_READ), (self.run_key,))
            rows = cur.fetchall()
        return len(rows), time.perf_counter() - t0

    def close(self) -> None:
        conn, self.conn = self.conn, None
        if conn is not None:
            conn.close()


def pg_sql(text: str) -> str:
    return text.replace("?", "%s")


# -- the line-up -------------------------------------------------------------------------------


def systems(ctx: Context, *, postgres: bool, snapshot_every: int) -> list[System]:
    """Every adapter, in table order: SQLite, file, PostgreSQL."""
    out: list[System] = [
        Kasmina(ctx, "sqlite", snapshot_every=snapshot_every),
        Kasmina(ctx, "sqlite", prebuilt=True),
        Eventsourcing(ctx, "sqlite"),
        Mlflow(ctx, "sqlite"),
        SqliteFloor(ctx),
        Jsonl(ctx, fsync=True),
        Jsonl(ctx, fsync=False),
        Eventsourcing(ctx, "sqlite", durability="defaults"),
        Mlflow(ctx, "sqlite", durability="defaults"),
    ]
    if postgres:
        out += [
            Kasmina(ctx, "postgres", snapshot_every=snapshot_every),
            Kasmina(ctx, "postgres", prebuilt=True),
            Eventsourcing(ctx, "postgres"),
            Mlflow(ctx, "postgres"),
            PgFloor(ctx),
        ]
    return out


__all__ = [
    "Context",
    "PgContext",
    "System",
    "checkpoint_size",
    "systems",
]
