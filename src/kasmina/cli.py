"""The `kasmina` command.

Only typer, click and rich are imported at start; each command imports the
ledger (and never torch, except `demo`) when it runs, so `kasmina --help` and
the read-only commands start fast. Every kasmina error becomes one line on
stderr and a non-zero exit, never a traceback.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator, Sequence
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.table import Table

from kasmina.errors import KasminaError
from kasmina.render import (
    HISTORY_COLUMNS,
    SqlFormat,
    event_json,
    follow_line,
    history_cells,
    plain,
    print_rows,
)

if TYPE_CHECKING:
    from kasmina.ledger import Ledger

DEFAULT_DB = "sqlite:///kasmina.db"

app = typer.Typer(
    name="kasmina",
    help="Lifecycle ledger for morphogenetic training.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
db_app = typer.Typer(help="Schema migrations (Alembic).", no_args_is_help=True)
app.add_typer(db_app, name="db")

out = Console(soft_wrap=True)
err = Console(stderr=True, soft_wrap=True)


class TableFormat(StrEnum):
    table = "table"
    json = "json"


class _State:
    db: str = DEFAULT_DB


state = _State()


@app.callback()
def _root(
    db: Annotated[
        str,
        typer.Option(
            "--db",
            envvar="KASMINA_DB",
            help="Database URL (sqlite:///PATH or postgresql+psycopg://USER@HOST/DB).",
        ),
    ] = DEFAULT_DB,
) -> None:
    state.db = db


def _open() -> Ledger:
    from kasmina.ledger import Ledger

    return Ledger.open(state.db)


# -- db ---------------------------------------------------------------------


@db_app.command("upgrade")
def db_upgrade(
    revision: Annotated[str, typer.Argument(help="Target revision.")] = "head",
) -> None:
    """Migrate the database up to REVISION (default: head)."""
    from kasmina.ledger import migrate

    migrate.upgrade(state.db, revision)
    out.print(f"database at revision {_current(state.db) or 'none'}")


@db_app.command("downgrade")
def db_downgrade(revision: Annotated[str, typer.Argument(help="Target revision.")]) -> None:
    """Migrate the database down to REVISION ('base' removes everything)."""
    from kasmina.ledger import migrate

    migrate.downgrade(state.db, revision)
    out.print(f"database at revision {_current(state.db) or 'none'}")


def _current(url: str) -> str | None:
    from kasmina.ledger.core import _open_store

    store = _open_store(url, "NORMAL")
    try:
        return store.schema_revision()
    finally:
        store.close()


@db_app.command("current")
def db_current() -> None:
    """Print the database's schema revision and the code's head."""
    from kasmina.ledger.migrate import HEAD_REVISION

    current = _current(state.db)
    mark = "(head)" if current == HEAD_REVISION else f"(code expects {HEAD_REVISION})"
    out.print(f"{current or 'none'} {mark}")


# -- runs and history -------------------------------------------------------


@app.command()
def runs(
    fmt: Annotated[TableFormat, typer.Option("--format")] = TableFormat.table,
) -> None:
    """List runs with their status and event counts."""
    with _open() as ledger:
        infos = ledger.runs()
    if fmt is TableFormat.json:
        for info in infos:
            out.print_json(
                json.dumps({k: plain(getattr(info, k)) for k in info.__dataclass_fields__})
            )
        return
    table = Table("run", "name", "seed", "status", "events", "started (UTC)")
    for info in infos:
        table.add_row(
            info.run_id,
            info.name or "",
            "" if info.seed is None else str(info.seed),
            info.status,
            str(info.events),
            info.started_at.strftime("%Y-%m-%d %H:%M:%S"),
        )
    out.print(table)


@app.command()
def history(
    run_id: Annotated[str, typer.Argument(metavar="RUN", help="Run id.")],
    seed_id: Annotated[str | None, typer.Option("--seed-id", help="Only this seed.")] = None,
    slot: Annotated[str | None, typer.Option("--slot", help="Only this slot.")] = None,
    fmt: Annotated[TableFormat, typer.Option("--format")] = TableFormat.table,
    follow: Annotated[
        bool,
        typer.Option(
            "--follow",
            "-f",
            help="Then print each new event as it commits, one line each; "
            "exit after the run's RunFinished.",
        ),
    ] = False,
) -> None:
    """The audit timeline of a run, a seed or a slot, oldest first."""
    with _open() as ledger:
        if follow:
            _follow(ledger, run_id, seed_id, slot, fmt)
            return
        events = ledger.history(run_id, seed_id=seed_id, slot_id=slot)
        if fmt is TableFormat.json:
            for event in events:
                sys.stdout.write(event_json(event) + "\n")
            return
        table = Table(*HISTORY_COLUMNS)
        for event in events:
            table.add_row(*history_cells(event))
        out.print(table)


def _follow(
    ledger: Ledger, run_id: str, seed_id: str | None, slot: str | None, fmt: TableFormat
) -> None:
    """`history --follow`: the table's columns (or the JSON lines) one event per line.

    The filters apply to what is printed; the run's RunFinished still ends it.
    """
    from kasmina.events import slot_stream
    from kasmina.ledger.tail import follow

    stream = None if slot is None else slot_stream(slot)
    events = follow(ledger, run_id)
    if fmt is TableFormat.table:
        sys.stdout.write(follow_line(HISTORY_COLUMNS) + "\n")
        sys.stdout.flush()
    for event in events:
        if (stream is not None and event.stream_id != stream) or (
            seed_id is not None and event.seed_id != seed_id
        ):
            continue
        if fmt is TableFormat.json:
            line = event_json(event)
        else:
            line = follow_line(history_cells(event))
        sys.stdout.write(line + "\n")
        sys.stdout.flush()


# -- writing ----------------------------------------------------------------


def _read_batch(
    run_id: str,
    file: str | None,
    event_type: str | None,
    payload: str | None,
    stream: str | None,
    epoch: int | None,
    seed_id: str | None,
) -> Iterator[tuple[int, dict[str, object]]]:
    if file is not None:
        handle = sys.stdin if file == "-" else open(file, encoding="utf-8")  # noqa: SIM115
        with handle:
            for number, line in enumerate(handle, 1):
                if line.strip():
                    yield number, _json_object(line, f"line {number}")
        return
    if event_type is None or payload is None or stream is None:
        raise KasminaError("append needs --file, or --type, --payload and --stream")
    yield (
        1,
        {
            "event_type": event_type,
            "payload": _json_object(payload, "--payload"),
            "stream_id": stream,
            "epoch": epoch,
            "seed_id": seed_id,
        },
    )


def _json_object(text: str, where: str) -> dict[str, object]:
    from kasmina.errors import PayloadInvalid

    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise PayloadInvalid(f"{where} is not valid JSON: {exc.msg} (column {exc.colno})") from None
    if not isinstance(value, dict):
        raise PayloadInvalid(f"{where} must be a JSON object")
    return value


@app.command()
def append(
    run_id: Annotated[str, typer.Argument(metavar="RUN", help="Run id.")],
    file: Annotated[
        str | None,
        typer.Option(
            "--file",
            help="JSON lines, one event each "
            "(event_type, stream_id, payload, epoch, seed_id); '-' for stdin. "
            "The whole file is one atomic batch.",
        ),
    ] = None,
    event_type: Annotated[str | None, typer.Option("--type", help="Event type.")] = None,
    payload: Annotated[str | None, typer.Option("--payload", help="Payload JSON.")] = None,
    stream: Annotated[str | None, typer.Option("--stream", help="Stream id.")] = None,
    epoch: Annotated[int | None, typer.Option("--epoch")] = None,
    seed_id: Annotated[str | None, typer.Option("--seed-id")] = None,
) -> None:
    """Record events into an existing run (validated, all or nothing)."""
    from kasmina.errors import PayloadInvalid
    from kasmina.events import event_from_dict

    batch = []
    for number, item in _read_batch(run_id, file, event_type, payload, stream, epoch, seed_id):
        where = f"event {number}"
        kind, body = item.get("event_type"), item.get("payload")
        if not isinstance(kind, str) or not isinstance(body, dict):
            raise PayloadInvalid(f"{where}: needs a string event_type and an object payload")
        stream_id = item.get("stream_id")
        if not isinstance(stream_id, str):
            raise PayloadInvalid(f"{where}: needs a string stream_id")
        ep, sid = item.get("epoch"), item.get("seed_id")
        try:
            batch.append(
                event_from_dict(
                    kind,
                    body,
                    run_id=run_id,
                    stream_id=stream_id,
                    epoch=ep if isinstance(ep, int) else None,
                    seed_id=sid if isinstance(sid, str) else None,
                )
            )
        except PayloadInvalid as exc:
            raise PayloadInvalid(f"{where}: {exc}") from None
    with _open() as ledger:
        ledger.require_run(run_id)
        result = ledger.append(batch)
    out.print(f"appended {result.appended} event(s), skipped {result.skipped} already stored")


# -- checking and querying --------------------------------------------------


@app.command()
def verify(
    run_id: Annotated[
        str | None, typer.Argument(metavar="[RUN]", help="Run id (all if omitted).")
    ] = None,
    fmt: Annotated[TableFormat, typer.Option("--format")] = TableFormat.table,
) -> None:
    """Check hash chains, version gaps and seals; exit 1 on any fault."""
    from kasmina.ledger.verify import report_json

    with _open() as ledger:
        report = ledger.verify(run_id)
    if fmt is TableFormat.json:
        sys.stdout.write(report_json(report) + "\n")
    else:
        for check in report.runs:
            seal = "sealed" if check.sealed else "unsealed (no RunFinished)"
            out.print(
                f"run {check.run_id}: {check.events} events in {check.streams} streams, {seal}"
            )
        for fault in report.faults:
            out.print(f"FAULT {fault}", markup=False)
        verdict = "OK" if report.ok else f"{len(report.faults)} fault(s)"
        out.print(f"verify: {verdict} ({report.events} events, {len(report.runs)} runs)")
    if not report.ok:
        raise typer.Exit(1)


@app.command()
def sql(
    query: Annotated[str, typer.Argument(help="A read-only SQL query.")],
    fmt: Annotated[SqlFormat, typer.Option("--format")] = SqlFormat.table,
    output: Annotated[
        Path | None,
        typer.Option("--output", "-o", help="Write the result to this file instead of stdout."),
    ] = None,
) -> None:
    """Run read-only SQL against the ledger (writes and ATTACH are refused)."""
    with _open() as ledger:
        columns, rows = ledger.sql(query)
        if output is None:
            print_rows(columns, rows, fmt, sys.stdout, out)
            return
        from kasmina.files import atomic_path

        with (
            atomic_path(output) as partial,
            partial.open("w", encoding="utf-8", newline="") as dest,
        ):
            print_rows(columns, rows, fmt, dest, Console(file=dest, width=200))
    err.print(f"wrote {output}", highlight=False)


class ExportFormat(StrEnum):
    csv = "csv"
    jsonl = "jsonl"
    parquet = "parquet"


@app.command()
def export(
    run_id: Annotated[str, typer.Argument(metavar="RUN", help="Run id.")],
    output: Annotated[
        Path,
        typer.Option(
            "--output",
            "-o",
            help="Folder to write into (made if missing; files of the same names are replaced).",
        ),
    ],
    fmt: Annotated[ExportFormat, typer.Option("--format")] = ExportFormat.csv,
) -> None:
    """Write a run's events and every SQL view to files, one per table (docs/export.md)."""
    from kasmina.export import export_run

    with _open() as ledger:
        written = export_run(ledger, run_id, output, fmt.value)
    err.print(f"wrote {len(written)} files to {output}", highlight=False, markup=False)


@app.command()
def report(
    run_id: Annotated[str, typer.Argument(metavar="RUN", help="Run id.")],
    output: Annotated[
        Path,
        typer.Option("--output", "-o", help="The HTML file to write."),
    ] = Path("run.html"),
) -> None:
    """Write one self-contained HTML page about a run: swimlanes, alpha, gates, evictions."""
    from kasmina.files import atomic_path
    from kasmina.report import render_report

    with _open() as ledger:
        page = render_report(ledger, run_id)
    with atomic_path(output) as partial, partial.open("w", encoding="utf-8", newline="") as dest:
        dest.write(page)
    kib = max(1, round(output.stat().st_size / 1024))
    err.print(f"wrote {output} ({kib:,} KiB)", highlight=False, markup=False)


@app.command()
def replay(
    run_id: Annotated[str, typer.Argument(metavar="RUN", help="Run id.")],
    at_epoch: Annotated[
        int | None, typer.Option("--at-epoch", help="State at the end of this epoch.")
    ] = None,
    at_position: Annotated[
        int | None, typer.Option("--at-position", help="State right after this event.")
    ] = None,
    fmt: Annotated[TableFormat, typer.Option("--format")] = TableFormat.table,
    reexecute: Annotated[
        bool,
        typer.Option("--verify", help="Re-execute the run and compare its events (exit 1 if not)."),
    ] = False,
    trust: Annotated[
        bool, typer.Option("--trust", help="Fold even if the hash chain does not verify.")
    ] = False,
    no_snapshots: Annotated[
        bool, typer.Option("--no-snapshots", help="Fold from the first event.")
    ] = False,
    snapshot_every: Annotated[
        int | None,
        typer.Option("--snapshot-every", help="Store a snapshot every N events folded."),
    ] = None,
) -> None:
    """A run's state at an epoch or position, folded from its log; --verify re-executes it."""
    from rich.progress import Progress

    from kasmina.replay import render, replay

    if reexecute:
        if at_epoch is not None or at_position is not None:
            raise KasminaError("--verify re-executes the whole run; drop --at-epoch/--at-position")
        _reexecute(run_id, trust)
        return
    with _open() as ledger:
        ledger.require_run(run_id)
        total = next((r.events for r in ledger.runs() if r.run_id == run_id), None)
        with Progress(console=err, disable=not err.is_terminal, transient=True) as bar:
            task = bar.add_task("folding", total=total)
            state = replay(
                ledger,
                run_id,
                at_epoch,
                at_position,
                trust=trust,
                snapshots=not no_snapshots,
                snapshot_every=snapshot_every,
                progress=lambda n: bar.update(task, completed=n),
            )
    if fmt is TableFormat.json:
        sys.stdout.write(render.state_json(state) + "\n")
    else:
        render.print_state(out, state)


def _reexecute(run_id: str, trust: bool) -> None:
    try:
        from kasmina.replay.reexecution import reexecute
    except ImportError as exc:
        raise KasminaError(
            f"replay --verify needs torch and scikit-learn ({exc.name} is missing): "
            "pip install 'kasmina[demo]'"
        ) from None
    from kasmina.replay import render

    with _open() as ledger:
        report = reexecute(ledger, run_id, trust=trust, console=err)
    render.print_reexecution(out, report)
    if not report.ok:
        raise typer.Exit(1)


@app.command()
def schema() -> None:
    """Print the JSON Schema of every event payload."""
    from kasmina.events import json_schemas

    sys.stdout.write(json.dumps(json_schemas(), indent=2, sort_keys=True) + "\n")


@app.command()
def demo(
    epochs: Annotated[int, typer.Option(help="Epochs to train.")] = 30,
    slots: Annotated[int, typer.Option(help="Number of seed slots.")] = 3,
    seed: Annotated[int, typer.Option(help="Random seed (same seed, same events).")] = 7,
    run_id: Annotated[
        str | None, typer.Option("--run-id", help="Name the run (default: a new UUID).")
    ] = None,
) -> None:
    """The main job: train a CNN on the bundled digits while seeds grow; record everything."""
    try:
        from kasmina.demo import run_demo
    except ImportError as exc:
        raise KasminaError(
            f"kasmina demo needs torch and scikit-learn ({exc.name} is missing): "
            "pip install 'kasmina[demo]'"
        ) from None
    if epochs < 1 or slots < 1:
        raise KasminaError("--epochs and --slots must be at least 1")
    with _open() as ledger:
        run_demo(ledger, epochs=epochs, slots=slots, seed=seed, console=out, run_id=run_id)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point: kasmina errors become one line on stderr and exit code 2."""
    try:
        app(args=list(argv) if argv is not None else None, prog_name="kasmina")
    except SystemExit as exc:
        code = exc.code
        return code if isinstance(code, int) else (0 if code is None else 1)
    except KasminaError as exc:
        err.print(f"error: {exc}", markup=False, highlight=False)
        return 2
    except OSError as exc:
        err.print(f"error: {exc}", markup=False, highlight=False)
        return 2
    except KeyboardInterrupt:
        err.print("interrupted", highlight=False)
        return 130
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
