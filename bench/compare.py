"""kasmina against its peers on one workload: append, read-back, state at an epoch, bytes.

The workload (bench/workload.py) is a synthetic run of 100 slots x E epochs:
lifecycle facts on a legal path of kasmina's stage machine plus one ~300-byte
telemetry sample per active slot per epoch, about 20,000 events by default.
Every system (bench/peers.py) records exactly those records:

- kasmina on SQLite and PostgreSQL (`Recorder.emit` of payload models, as a
  training loop does; and `Ledger.append` of prebuilt events);
- the `eventsourcing` library on SQLite and PostgreSQL (one aggregate per slot);
- MLflow's SQLAlchemy tracking store on SQLite and PostgreSQL (`log_batch`,
  one metric row per event);
- JSON lines appended to a file, with and without fsync (esper-style telemetry);
- floors: plain `sqlite3.executemany`, and psycopg `executemany`, into kasmina's tables
  (`ledger_events`, keyed by `ledger_runs`, `ledger_streams` and `ledger_types` rows).

Append throughput is measured with 1,000 events per transaction and with one
event per transaction (on the first --single-events events), every
measurement from an empty store. Then the store each system filled in the
last batched repetition is sized on disk, read back whole, and asked for the
stage of every slot at epoch N (each answer checked against the workload's). Every SQLite store runs
in WAL with synchronous=NORMAL (eventsourcing and MLflow through their
connection hooks, checked with PRAGMA queries); a second table shows those two
at their own defaults. PostgreSQL stores share one server at default
durability. Repetitions are interleaved between systems (the order rotates
every repetition) and every figure is the median of --repeat repetitions.

A measurement that makes no progress for --stall-limit seconds is interrupted
and run again from a fresh store (eventsourcing's PostgreSQL recorder now and
then hangs in psycopg's pipeline sync on this machine); the count is reported.

It prints the tables and rewrites the generated part of docs/benchmarks.md
(between its bench:begin and bench:end markers; the rest of the file is kept).

    .venv/bin/python bench/compare.py [--epochs 150] [--single-events 1000] [--repeat 5]
        [--at-epoch N] [--snapshot-every 2000] [--no-postgres] [--no-doc] [--quick] [--profile]
"""

from __future__ import annotations

import argparse
import cProfile
import gc
import io
import logging
import os
import platform
import pstats
import shlex
import shutil
import signal
import sqlite3
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    from peers import System
    from workload import Record

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "bench"))

DOC = ROOT / "docs" / "benchmarks.md"
BEGIN, END = "<!-- bench:begin -->", "<!-- bench:end -->"
BATCH = 1000
PG_PORT = 5446
INSTALL_HINT = "install with: pip install -e '.[bench]'"
PACKAGES = (
    "kasmina",
    "eventsourcing",
    "mlflow-skinny",
    "SQLAlchemy",
    "alembic",
    "psycopg",
    "psycopg-pool",
    "pydantic",
    "duckdb",
)
DOC_INTRO = """# Benchmarks: kasmina and its peers

How fast kasmina records, reads back and answers questions about a training
run, next to the tools people use for the same job: the `eventsourcing`
library, MLflow's tracking store, and JSON lines in a file. Everything between
the two markers below is written by `make bench` (`bench/compare.py`); prose
outside them is kept when the benchmark runs again.

"""
T = TypeVar("T")


def require_bench_extras(postgres: bool) -> str | None:
    """None when the bench group is installed, else the one-line error."""
    needed = ["eventsourcing", "mlflow", "duckdb", "alembic", "psycopg"]
    if postgres:
        needed.append("psycopg_pool")  # eventsourcing[postgres]
    for module in needed:
        try:
            __import__(module)
        except ImportError:
            return f"error: bench/compare.py needs {module!r} (the bench extras); {INSTALL_HINT}"
    try:
        __import__("mlflow.store.tracking.sqlalchemy_store")
    except ImportError as exc:
        return f"error: MLflow's SQL store cannot be imported ({exc}); {INSTALL_HINT}"
    return None


# -- a watchdog for hung measurements -------------------------------------------------


class Stalled(KeyboardInterrupt):
    """Raised by SIGALRM in a measurement that stopped making progress.

    A KeyboardInterrupt so that psycopg, blocked in a wait, cancels its query
    and lets go, as it does on Ctrl-C.
    """


def _alarm(signum: int, frame: FrameType | None) -> None:
    raise Stalled()


class Watchdog:
    def __init__(self, limit: float, attempts: int = 3) -> None:
        self.limit = limit
        self.attempts = attempts
        self.stalls: dict[str, int] = {}
        signal.signal(signal.SIGALRM, _alarm)

    def run(self, system: System, what: str, step: Callable[[], T]) -> T:
        """Run `step`; if it stalls, close the system's store and run it again (fresh)."""
        for attempt in range(1, self.attempts + 1):
            # re-armed every 5 s after the first alarm: a cleanup can block too
            signal.setitimer(signal.ITIMER_REAL, self.limit, 5.0)
            try:
                return step()
            except Stalled:
                self.stalls[system.label] = self.stalls.get(system.label, 0) + 1
                print(
                    f"    {system.label}: {what} made no progress for {self.limit:.0f} s "
                    f"(attempt {attempt}); running it again from a fresh store",
                    flush=True,
                )
                try:
                    system.close()
                except Stalled:
                    pass
            finally:
                signal.setitimer(signal.ITIMER_REAL, 0)
        raise RuntimeError(f"{system.label}: {what} stalled {self.attempts} times; giving up")


# -- results --------------------------------------------------------------------------


@dataclass
class Row:
    label: str
    backend: str
    values: list[float]
    #: "rate" (higher is better), "time" (seconds, lower is better), "bytes" (lower is better)
    kind: str
    ref: Row | None = None
    #: this row is the kasmina reference of its table
    is_ref: bool = False

    @property
    def median(self) -> float:
        return statistics.median(self.values)

    def ratio(self, ref: Row | None = None) -> float | None:
        """> 1 means the kasmina reference is faster (or smaller) than this row."""
        ref = ref or self.ref
        if ref is None:
            return None
        if self.kind == "rate":
            return ref.median / self.median
        return self.median / ref.median


@dataclass
class Table:
    title: str
    unit: str
    rows: list[Row]
    note: str = ""
    ratio_titles: tuple[str, ...] = ("kasmina's advantage",)
    #: further ratio columns, beyond the one against `Row.ref`
    extra_ratios: list[Callable[[Row], float | None]] = field(default_factory=list)


def fmt_value(row: Row, value: float) -> str:
    if row.kind == "time":
        return f"{value * 1000:,.1f}"
    return f"{value:,.0f}"


def fmt_ratio(r: float | None) -> str:
    return "—" if r is None else f"{r:.2f}x"


def table_cells(table: Table) -> list[list[str]]:
    out = []
    for row in table.rows:
        lo, hi = min(row.values), max(row.values)
        spread = (
            fmt_value(row, lo)
            if len(row.values) == 1
            else f"{fmt_value(row, lo)}–{fmt_value(row, hi)}"
        )
        ratios = ["ref" if row.is_ref else fmt_ratio(row.ratio())]
        ratios += [fmt_ratio(extra(row)) for extra in table.extra_ratios]
        out.append([row.label, fmt_value(row, row.median), spread, *ratios])
    return out


def headers(table: Table) -> list[str]:
    return ["system", f"median {table.unit}", "min–max", *table.ratio_titles]


def print_table(table: Table) -> None:
    cells = table_cells(table)
    head = headers(table)
    widths = [max(len(h), *(len(c[i]) for c in cells)) for i, h in enumerate(head)]

    def line(values: Sequence[str]) -> str:
        return "  ".join(
            v.ljust(widths[i]) if i == 0 else v.rjust(widths[i]) for i, v in enumerate(values)
        )

    print(f"\n{table.title}")
    if table.note:
        print(f"  {table.note}")
    print(line(head))
    print("-" * len(line(head)))
    for c in cells:
        print(line(c))


def markdown_table(table: Table) -> str:
    head = headers(table)
    lines = [f"### {table.title}", ""]
    if table.note:
        lines += [table.note, ""]
    lines.append("| " + " | ".join(head) + " |")
    lines.append("|" + "|".join(["---"] + ["---:"] * (len(head) - 1)) + "|")
    lines += ["| " + " | ".join(c) + " |" for c in table_cells(table)]
    return "\n".join(lines) + "\n"


# -- the machine and the doc ------------------------------------------------------------


def machine(pg_version: str | None) -> list[str]:
    cpu, ram, os_name = "?", "?", platform.platform()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal"):
                ram = f"{int(line.split()[1]) / 1024 / 1024:.1f} GiB"
                break
        for line in Path("/etc/os-release").read_text().splitlines():
            if line.startswith("PRETTY_NAME="):
                os_name = f"{line.split('=', 1)[1].strip(chr(34))}, Linux {platform.release()}"
    except OSError:
        pass
    return [
        f"CPU: {cpu}, {os.cpu_count()} cores; RAM {ram}",
        f"OS: {os_name}",
        f"Python {platform.python_version()}; SQLite library {sqlite3.sqlite_version}; "
        f"PostgreSQL server {pg_version or 'not used (--no-postgres)'}",
    ]


def versions() -> str:
    out = []
    for name in PACKAGES:
        try:
            out.append(f"{name} {metadata.version(name)}")
        except metadata.PackageNotFoundError:
            out.append(f"{name} (not installed)")
    return ", ".join(out)


def command_line() -> str:
    exe = os.path.relpath(sys.executable, ROOT)
    if exe.startswith(".."):
        exe = sys.executable
    script = os.path.relpath(Path(sys.argv[0]).resolve(), ROOT)
    return shlex.join([exe, script, *sys.argv[1:]])


def write_doc(section: str) -> None:
    block = f"{BEGIN}\n{section.rstrip()}\n{END}\n"
    if DOC.exists():
        text = DOC.read_text()
        if BEGIN in text and END in text:
            head, rest = text.split(BEGIN, 1)
            _, tail = rest.split(END, 1)
            text = head + block + tail.lstrip("\n")
        else:
            text = text.rstrip() + "\n\n" + block
    else:
        text = DOC_INTRO + block
    DOC.write_text(text)


def profile_kasmina(system: System, records: Sequence[Record]) -> str:
    """cProfile of one batched append, top 20 by tottime, paths shortened."""
    system.prepare()
    gc.collect()
    profiler = cProfile.Profile()
    profiler.enable()
    system.append(records, BATCH)
    profiler.disable()
    out = io.StringIO()
    pstats.Stats(profiler, stream=out).sort_stats("tottime").print_stats(20)
    lines = out.getvalue().splitlines()
    start = next((i for i, ln in enumerate(lines) if "ncalls" in ln), 0)
    total = next((ln.strip() for ln in lines if "function calls" in ln), "")
    prefixes = [str(ROOT) + "/", str(Path(sys.prefix) / "lib") + "/", sys.base_prefix + "/lib/"]

    def short(ln: str) -> str:
        for p in prefixes:
            ln = ln.replace(p, "")
        return ln

    return "\n".join([total, *(short(ln) for ln in lines[start:])]).rstrip()


# -- measuring ---------------------------------------------------------------------------


def rotate(items: list[System], rep: int) -> list[System]:
    k = rep % len(items) if items else 0
    return items[k:] + items[:k]


@dataclass
class Results:
    batched: dict[System, list[float]]
    single: dict[System, list[float]]
    reads: dict[System, list[float]]
    states: dict[tuple[System, str], list[float]]
    sizes: dict[System, float]
    stalls: dict[str, int]
    #: kasmina's read back with every payload validated as its model (`read_models`)
    model_reads: dict[System, list[float]] = field(default_factory=dict)
    profile: str = ""
    #: (step, µs per event) of a batched kasmina SQLite append (bench/costs.py).
    costs: list[tuple[str, float]] = field(default_factory=list)


def measure(
    systems: list[System],
    records: Sequence[Record],
    single: Sequence[Record],
    *,
    repeat: int,
    at_epoch: int,
    expected: dict[str, str],
    watchdog: Watchdog,
    started: float,
) -> Results:
    def append(s: System, recs: Sequence[Record], batch: int) -> float:
        def step() -> float:
            s.prepare()  # untimed: fresh store, connected, run begun
            gc.collect()
            return s.append(recs, batch)

        return len(recs) / watchdog.run(s, f"append x{batch}", step)

    # 1. appends, interleaved: every repetition runs every system, in a rotated order;
    # one event per transaction first, so that each store ends up holding the whole run
    batched: dict[System, list[float]] = {s: [] for s in systems}
    singles: dict[System, list[float]] = {s: [] for s in systems if s.single}
    for rep in range(repeat):
        order = rotate(systems, rep)
        for s in order:
            if s in singles:
                singles[s].append(append(s, single, 1))
        for s in order:
            batched[s].append(append(s, records, BATCH))
        print(
            f"  appends, repetition {rep + 1}/{repeat} done "
            f"({time.perf_counter() - started:.0f} s)",
            flush=True,
        )

    # 2. per store kind, the store of the last batched append: its size, then reads and
    # state queries
    readers = [s for s in systems if s.reads]
    sizes: dict[System, float] = {}
    for s in systems:
        if not s.reads:
            s.close()
    for s in readers:
        sizes[s] = s.bytes_per_event(len(records))
        s.prepare_state(at_epoch)
    reads: dict[System, list[float]] = {s: [] for s in readers}
    model_reads: dict[System, list[float]] = {}
    states: dict[tuple[System, str], list[float]] = {}
    methods = {s: s.state_methods() for s in readers}
    for rep in range(repeat):
        for s in rotate(readers, rep):
            gc.collect()
            n, secs = watchdog.run(s, "read-back", s.read_all)
            assert n >= len(records), f"{s.label}: read back {n} of {len(records)} events"
            reads[s].append(n / secs)
            if s.kasmina:
                gc.collect()
                n, secs = watchdog.run(s, "read-back, models", s.read_models)
                model_reads.setdefault(s, []).append(n / secs)
            for name, fn in methods[s].items():
                gc.collect()
                answer, secs = watchdog.run(s, name, lambda fn=fn: fn(at_epoch))
                if answer != expected:
                    wrong = {k: (v, expected[k]) for k, v in answer.items() if v != expected[k]}
                    raise AssertionError(f"{s.label}, {name}: wrong stages (got, want) {wrong}")
                states.setdefault((s, name), []).append(secs)
    print(f"  reads and state queries done ({time.perf_counter() - started:.0f} s)", flush=True)
    return Results(batched, singles, reads, states, sizes, watchdog.stalls, model_reads=model_reads)


# -- tables ------------------------------------------------------------------------------


def kind_of(s: System) -> str:
    return type(s).__name__


def same_backend(s: System) -> str:
    """The kasmina backend a row is compared with: JSON lines go with SQLite (embedded)."""
    return "postgres" if s.backend == "postgres" else "sqlite"


def is_kasmina_ref(s: System) -> bool:
    return s.kasmina and s.reads


def rows_for(
    data: dict[System, list[float]],
    kind: str,
    keep: Callable[[System], bool] = lambda s: True,
    *,
    single: bool = False,
    suffix: str = "",
) -> dict[System, Row]:
    out = {}
    for s, values in data.items():
        if values and keep(s):
            label = (s.single_label or s.label) if single else s.label
            out[s] = Row(label + suffix, s.backend, values, kind, is_ref=is_kasmina_ref(s))
    refs = {same_backend(s): row for s, row in out.items() if is_kasmina_ref(s)}
    for s, row in out.items():
        row.ref = refs.get(same_backend(s))
    return out


def build_tables(
    res: Results, *, events: int, single_events: int, at_epoch: int, snapshot_every: int
) -> tuple[list[Table], list[Target]]:
    def equal(s: System) -> bool:
        return s.durability == "equal"

    def own_defaults(s: System) -> bool:
        return s.durability == "defaults" or (is_kasmina_ref(s) and s.backend == "sqlite")

    batched = rows_for(res.batched, "rate", equal)
    single = rows_for(res.single, "rate", equal, single=True)
    defaults = rows_for(res.batched, "rate", own_defaults)
    defaults_single = rows_for(
        res.single, "rate", own_defaults, single=True, suffix=" — one event per transaction"
    )
    reads = rows_for(res.reads, "rate")
    models = {
        s: Row(f"{s.label}, every payload validated as its model", s.backend, values, "rate")
        for s, values in res.model_reads.items()
    }
    for s, row in models.items():
        row.ref = reads[s].ref if s in reads else None
    sizes = rows_for({s: [v] for s, v in res.sizes.items()}, "bytes")

    # state at an epoch: compared with kasmina's fold, and with kasmina's fastest method
    states: dict[tuple[System, str], Row] = {
        (s, name): Row(f"{s.label}: {name}", s.backend, values, "time")
        for (s, name), values in res.states.items()
    }
    fold: dict[str, Row] = {}
    fastest: dict[str, Row] = {}
    for (s, name), row in states.items():
        if s.kasmina:
            if name.startswith("fold (ledger.replay"):
                fold[s.backend] = row
                row.is_ref = True
            best = fastest.get(s.backend)
            if best is None or row.median < best.median:
                fastest[s.backend] = row
    for (s, _), row in states.items():
        row.ref = fold.get(same_backend(s))

    def vs_fastest(row: Row) -> float | None:
        best = fastest.get("postgres" if row.backend == "postgres" else "sqlite")
        return None if best is None else row.median / best.median

    def method(row: Row) -> str:
        return row.label.split(": ", 1)[1]

    ratio_note = (
        "Ratio: kasmina's events/s ÷ the system's, against kasmina on the same backend "
        "(JSON lines against kasmina SQLite); >1 means kasmina is faster."
    )
    tables = [
        Table(
            f"Append, {BATCH:,} events per transaction ({events:,} events)",
            "events/s",
            list(batched.values()),
            note="Equal durability. " + ratio_note,
        ),
        Table(
            f"Append, one event per transaction ({single_events:,} events)",
            "events/s",
            list(single.values()),
            note="Equal durability. " + ratio_note,
        ),
        Table(
            "Append with each SQLite peer at its own defaults",
            "events/s",
            [*defaults.values(), *defaults_single.values()],
            note="eventsourcing keeps WAL but synchronous=FULL; MLflow a rollback journal with "
            "synchronous=FULL; kasmina at its default (WAL, synchronous=NORMAL). One-event rows "
            "compare with kasmina's one-event figure. The PostgreSQL peers run at their "
            "defaults already, on the same server as kasmina (tables above), so they are not "
            "measured again. " + ratio_note,
        ),
        Table(
            f"Read back the whole run ({events:,} events)",
            "events/s",
            [*reads.values(), *models.values()],
            note="kasmina: `ledger.read`, every payload decoded (its model is validated when "
            "`payload` is first read; the last rows read every one); eventsourcing: "
            "`select_notifications` + `mapper.to_domain_event`; MLflow: `get_metric_history` "
            "per key; JSON lines: `json.loads` per line; floors: `SELECT * FROM ledger_events` "
            "of their run key, `fetchall` (+ `json.loads` of the payload on SQLite; psycopg "
            "decodes jsonb itself); kasmina reads the same tables, with their run's and "
            "streams' names and the rows' links. " + ratio_note,
        ),
        Table(
            f"Stage of every slot at epoch {at_epoch}",
            "ms",
            list(states.values()),
            ratio_titles=("÷ kasmina fold", "÷ kasmina fastest"),
            extra_ratios=[vs_fastest],
            note="Every answer is checked against the workload's. Ratio: the row's time ÷ "
            "kasmina's fold (`ledger.replay`, hash chain checked), and ÷ kasmina's fastest "
            "method on the same backend ("
            + "; ".join(f"{b}: {method(r)}" for b, r in fastest.items())
            + "); >1 means kasmina is faster. Snapshots are written beforehand, every "
            f"{snapshot_every:,} events.",
        ),
        Table(
            "Bytes on disk per event",
            "bytes",
            list(sizes.values()),
            note="SQLite: file size after `PRAGMA wal_checkpoint(TRUNCATE)` minus the empty "
            "store's; PostgreSQL: `pg_total_relation_size` (heap, indexes, TOAST) of every "
            "table minus the empty database's; JSON lines: the file. Measured once (sizes do "
            "not vary). Ratio: the system's bytes ÷ kasmina's; >1 means kasmina is smaller.",
        ),
    ]

    targets: list[Target] = []

    def pick(pool: dict[System, Row], pred: Callable[[System], bool]) -> Row | None:
        return next((row for s, row in pool.items() if pred(s)), None)

    def add(name: str, kasmina_row: Row | None, peer: Row | None, goal: float) -> None:
        if kasmina_row is not None and peer is not None:
            targets.append(Target.of(name, kasmina_row, peer, goal))

    def peer(pool: dict[System, Row], kind: str, backend: str) -> Row | None:
        return pick(pool, lambda s: kind_of(s) == kind and s.backend == backend and s.reads)

    def kasmina(pool: dict[System, Row], backend: str) -> Row | None:
        return pick(pool, lambda s: is_kasmina_ref(s) and s.backend == backend)

    # Issue 22's targets: kasmina's rate over the peer's (bytes: the peer's over kasmina's).
    for backend, where in (("sqlite", "SQLite"), ("postgres", "PostgreSQL")):
        es = "Eventsourcing"
        goal = 1.5 if backend == "sqlite" else 2.5
        add(
            f"append batched: kasmina {where} ≥ {goal:g}x eventsourcing",
            kasmina(batched, backend),
            peer(batched, es, backend),
            goal,
        )
        if backend == "sqlite":
            add(
                "append batched: kasmina SQLite ≥ 0.6x JSON lines + fsync per batch",
                kasmina(batched, backend),
                pick(batched, lambda s: kind_of(s) == "Jsonl" and s.reads),
                0.6,
            )
            add(
                "append one per transaction: kasmina SQLite ≥ 1x eventsourcing",
                kasmina(single, backend),
                peer(single, es, backend),
                1.0,
            )
            es_bytes, k_bytes = peer(sizes, es, backend), kasmina(sizes, backend)
            add("bytes per event: kasmina SQLite ≤ eventsourcing", es_bytes, k_bytes, 1.0)
        else:
            add(
                "append batched: kasmina PostgreSQL ≥ 1x psycopg executemany",
                kasmina(batched, backend),
                pick(batched, lambda s: kind_of(s) == "PgFloor"),
                1.0,
            )
        add(
            f"read back: kasmina {where} ≥ 1.2x eventsourcing",
            kasmina(reads, backend),
            peer(reads, es, backend),
            1.2,
        )
        add(
            f"read back, every payload validated too: kasmina {where} ≥ 1.2x eventsourcing",
            pick(models, lambda s, b=backend: s.backend == b),
            peer(reads, es, backend),
            1.2,
        )
    for (s, _), row in states.items():
        best = fastest.get(same_backend(s))
        if not s.kasmina and best is not None:
            name = f"state at epoch: kasmina ({method(best)}) faster than {s.label}"
            targets.append(Target.of(name, row, best, 1.0))
    return tables, targets


@dataclass
class Target:
    """One of issue 22's goals: `top`'s figure over `bottom`'s, two ways.

    `paired` is the median over repetitions of the ratio within each one,
    where both figures were measured seconds apart: on a machine whose speed
    drifts between repetitions that is the steadier estimate, and the verdict
    is read from it. `medians` is the ratio of the two medians, as before.
    """

    name: str
    paired: float | None
    medians: float
    goal: float

    @classmethod
    def of(cls, name: str, top: Row, bottom: Row, goal: float) -> Target:
        pairs = [a / b for a, b in zip(top.values, bottom.values, strict=False)]
        paired = statistics.median(pairs) if len(top.values) == len(bottom.values) else None
        return cls(name, paired, top.median / bottom.median, goal)

    @property
    def verdict(self) -> str:
        ratio = self.medians if self.paired is None else self.paired
        return "met" if ratio >= self.goal else "short"


def target_lines(targets: list[Target], markdown: bool) -> list[str]:
    out = []
    width = max((len(t.name) for t in targets), default=10)
    for t in targets:
        paired, medians, goal = fmt_ratio(t.paired), fmt_ratio(t.medians), f"{t.goal:g}x"
        if markdown:
            out.append(f"| {t.name} | {paired} | {medians} | {goal} | {t.verdict} |")
        else:
            out.append(f"{t.name:{width}}  {paired:>8}  {medians:>8}  {goal:>5}  {t.verdict}")
    return out


# -- main -----------------------------------------------------------------------------------


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--epochs", type=int, help="epochs of the run (default 150)")
    parser.add_argument("--single-events", type=int, help="one-per-transaction events (1000)")
    parser.add_argument("--repeat", type=int, help="repetitions, interleaved (default 5)")
    parser.add_argument("--at-epoch", type=int, help="N of 'stage at epoch N' (default E/2)")
    parser.add_argument("--snapshot-every", type=int, default=2000, help="kasmina's snapshots")
    parser.add_argument("--stall-limit", type=float, default=30.0, help="seconds; see above")
    parser.add_argument("--no-postgres", action="store_true", help="SQLite and files only")
    parser.add_argument("--no-doc", action="store_true", help="leave docs/benchmarks.md alone")
    parser.add_argument(
        "--quick", action="store_true", help="smoke test: 20 epochs, 100 single, 1 rep, no doc"
    )
    parser.add_argument("--profile", action="store_true", help="cProfile kasmina's SQLite append")
    args = parser.parse_args()
    epochs = args.epochs or (20 if args.quick else 150)
    single_n = args.single_events or (100 if args.quick else 1000)
    repeat = args.repeat or (1 if args.quick else 5)
    write = not (args.no_doc or args.quick)

    problem = require_bench_extras(not args.no_postgres)
    if problem:
        print(problem, file=sys.stderr)
        return 2
    for name in ("mlflow", "alembic", "eventsourcing"):
        logging.getLogger(name).setLevel(logging.WARNING)
    # a kill (not only Ctrl-C) still stops the PostgreSQL server and removes the files
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))

    import peers
    import workload

    started = time.perf_counter()
    load_before = os.getloadavg()[0]
    work = workload.build(epochs)
    records = work.records
    single = records[:single_n]
    at_epoch = args.at_epoch if args.at_epoch is not None else epochs // 2
    print(
        f"workload: {len(records):,} events, {len(work.slots)} slots x {epochs} epochs; "
        f"one-per-transaction mode: the first {len(single):,}; {repeat} repetition(s)",
        flush=True,
    )

    folder = Path(tempfile.mkdtemp(prefix="kasmina-compare-"))
    server: Any = None
    systems: list[System] = []
    pg_version = None
    try:
        pg = None
        if not args.no_postgres:
            from pgserver import start_server

            server = start_server(durable=True, port=PG_PORT)
            pg = peers.PgContext(server)
            pg_version = pg.server_version()
        ctx = peers.Context(folder, pg, work)
        systems = peers.systems(
            ctx, postgres=not args.no_postgres, snapshot_every=args.snapshot_every
        )
        for s in systems:
            s.setup()
        gc.collect()
        gc.freeze()  # what is loaded now (MLflow, SQLAlchemy...) is not scanned again
        res = measure(
            systems,
            records,
            single,
            repeat=repeat,
            at_epoch=at_epoch,
            expected=work.stages_at(at_epoch),
            watchdog=Watchdog(args.stall_limit),
            started=started,
        )
        if args.profile:
            import costs

            res.profile = profile_kasmina(systems[0], records)
            res.costs = costs.measure(records, repeat)
        settings = [f"{s.label}: {s.describe()}" for s in systems if s.describe()]
    finally:
        for s in systems:
            try:
                s.close()
            except Exception as exc:  # keep cleaning up
                print(f"closing {s.label}: {exc!r}", file=sys.stderr)
        if server is not None:
            server.stop()
        shutil.rmtree(folder, ignore_errors=True)
    elapsed = time.perf_counter() - started
    load_after = os.getloadavg()[0]

    tables, targets = build_tables(
        res,
        events=len(records),
        single_events=len(single),
        at_epoch=at_epoch,
        snapshot_every=args.snapshot_every,
    )
    for t in tables:
        print_table(t)
    print(
        "\nTargets (kasmina's events/s ÷ the peer's, or the peer's time ÷ kasmina's): "
        "paired, medians"
    )
    for line in target_lines(targets, markdown=False):
        print(line)
    print("\nSQLite settings, as checked on each store's own connection:")
    for line in settings:
        print(f"  {line}")
    stalls = "; ".join(f"{label}: {n}" for label, n in res.stalls.items())
    if stalls:
        print(f"\nmeasurements interrupted after {args.stall_limit:.0f} s and run again: {stalls}")
    if res.profile:
        print("\nwhere kasmina's batched SQLite append spends its time (top 20 by tottime):")
        print(res.profile)
    if res.costs:
        print("\neach step of a batched kasmina SQLite append, on its own (bench/costs.py):")
        for name, value in res.costs:
            print(f"  {name:46} {value:6.1f} µs/event")
    print(
        f"\ntotal {elapsed:.0f} s; load average {load_before:.2f} at the start, "
        f"{load_after:.2f} at the end"
    )
    if write:
        write_doc(
            doc_section(
                work,
                res,
                tables,
                targets,
                settings,
                repeat=repeat,
                single_events=len(single),
                elapsed=elapsed,
                loads=(load_before, load_after),
                pg_version=pg_version,
                args=args,
            )
        )
        print(f"wrote {DOC.relative_to(ROOT)}")
    return 0


def doc_section(
    work: Any,
    res: Results,
    tables: list[Table],
    targets: list[Target],
    settings: list[str],
    *,
    repeat: int,
    single_events: int,
    elapsed: float,
    loads: tuple[float, float],
    pg_version: str | None,
    args: argparse.Namespace,
) -> str:
    counts = ", ".join(f"{n:,} {t}" for t, n in sorted(work.type_counts().items()))
    stalls = "; ".join(f"{label}: {n}" for label, n in res.stalls.items()) or "none"
    parts = [
        "## Results",
        "",
        f"Generated {datetime.now(UTC):%Y-%m-%d %H:%M} UTC with:",
        "",
        "```console",
        f"$ {command_line()}",
        "```",
        "",
        f"The run took {elapsed / 60:.1f} minutes; the load average was {loads[0]:.2f} at the "
        f"start and {loads[1]:.2f} at the end (the machine is shared).",
        "",
        "**Machine.** " + " ".join(f"{m}." for m in machine(pg_version)),
        "",
        f"**Versions.** {versions()}.",
        "",
        f"**Workload** (`bench/workload.py`). One synthetic run: {len(work.slots)} slots x "
        f"{work.epochs} epochs = {len(work.records):,} events ({counts}). Every slot walks a "
        "legal path of kasmina's stage machine; telemetry payloads are about 300 bytes of "
        f"JSON. The one-event-per-transaction mode records the first {single_events:,} "
        f"events. Each figure is the median of {repeat} repetitions, interleaved between "
        "systems (the order rotates every repetition), each from an empty store; min–max is "
        "the spread. All systems run in one process: after set-up the garbage collector is run "
        "and frozen (`gc.freeze`), so that no system pays for scanning the objects of the "
        "libraries loaded for the others, and it is run again before each measurement.",
        "",
        "**Durability.** Every SQLite store runs in WAL with synchronous=NORMAL unless its "
        "label says otherwise: kasmina's default; eventsourcing's by wrapping "
        "`SQLiteConnectionPool._create_connection`; MLflow's by a SQLAlchemy `connect` "
        "listener. As checked with PRAGMA queries on each store's own connections:",
        "",
        *(f"- {line}" for line in settings),
        "",
        "PostgreSQL: one local server (unix socket) at default durability (fsync on, "
        "synchronous_commit on), shared by every PostgreSQL system, with a CHECKPOINT before "
        "each measurement.",
        "",
        "**What each system does.**",
        "",
        "- kasmina: `LedgerRecorder(ledger, run, buffer_size=1000).emit(...)` of a payload model "
        "built from each record (validation, canonical JSON, hash chain), then `flush`; "
        "`buffer_size=0` for one event per transaction. The second kasmina row times only "
        "`Ledger.append` of 1,000-event batches built beforehand with `event_from_dict`.",
        "- eventsourcing: an `Application` with one `Aggregate` per stream (100 slots and "
        "the run, created before the clock starts); `trigger_event` per record, "
        "`app.save(*touched)` per 1,000 events (one transaction) or `app.save(aggregate)` per "
        "event; the library's mapper, JSON transcoder and application recorder.",
        "- MLflow: `SqlAlchemyStore`, one run, `log_batch` with one metric row per event "
        "(key `<stream>/<event type>`, step = epoch). This is generous to MLflow: its row "
        "keeps one number where a kasmina event keeps about twelve fields.",
        "- JSON lines: one `json.dumps` line per event (uuid4 event id, stream, epoch, seed, "
        "type, payload, recorded_at), written per batch, then `flush` and `os.fsync`; "
        "one-per-transaction means an fsync per event.",
        "- Floors: rows of kasmina's shape, each with a uuid and `json.dumps` but no "
        "hashing, by `executemany` or `COPY` (one-row `INSERT` per transaction in the "
        "one-event mode), into the tables made by kasmina's migrations: `ledger_events` "
        "rows naming the run, stream and event type by key, the run's `ledger_runs` row and "
        "the types' `ledger_types` rows written before the clock starts, a stream's "
        "`ledger_streams` row when the stream is first seen.",
        "- Stage at an epoch: kasmina folds the log (`ledger.replay(run, until_epoch=N, "
        "snapshots=False)`, checking the hash chain; also with `trust=True`), starts from "
        "stored snapshots (`snapshot_run` beforehand), or queries the `stage_intervals` "
        "view; eventsourcing rebuilds each slot's aggregate with "
        "`repository.get(id, version=v)`, v taken from the workload (generous: an "
        "application would first have to find it); JSON lines are scanned until an event "
        "of a later epoch.",
        "",
        f"Measurements interrupted after {args.stall_limit:.0f} s without progress and run "
        f"again from a fresh store: {stalls}.",
        "",
    ]
    parts += [markdown_table(t) for t in tables]
    parts += [
        "### Targets",
        "",
        "Measured ratio: kasmina's events/s ÷ the peer's, or the peer's time ÷ kasmina's. "
        "Paired: the median over repetitions of the ratio within each repetition, where both "
        "were measured seconds apart, which the verdict reads; medians: the ratio of the two "
        "medians in the tables above.",
        "",
        "| target | paired | medians | goal | verdict |",
        "|---|---:|---:|---:|---|",
        *target_lines(targets, markdown=True),
        "",
    ]
    if res.costs:
        import costs

        parts += [
            "### Where a batched kasmina append spends its time",
            "",
            "`--profile` also times each step of a batched SQLite append on its own, on the "
            "same records (`bench/costs.py`; medians of the same number of repetitions). "
            "Storage is the finished rows inserted into kasmina's `ledger_events`, 1,000 per "
            "transaction, WAL + synchronous=NORMAL, with the checkpoints on a thread of "
            "their own as kasmina runs them (the row in brackets: with SQLite's inside "
            "the commit instead, for comparison, not part of the whole); the index row is "
            "that insert's difference without the (`run_key`, `position`) index.",
            "",
            *costs.render(res.costs),
            "",
        ]
    if res.profile:
        parts += [
            "### Profile of kasmina's batched SQLite append",
            "",
            "`--profile`: cProfile of one batched append of the workload, top 20 functions "
            "by own time.",
            "",
            "```text",
            res.profile,
            "```",
            "",
        ]
    return "\n".join(parts)


if __name__ == "__main__":
    raise SystemExit(main())
