"""The `kasmina` command.

Only typer, click and rich are imported at start; each command imports the
ledger (and never torch, except `demo`) when it runs, so `kasmina --help` and
the read-only commands start fast. Every kasmina error becomes one line on
stderr and a non-zero exit, never a traceback.
"""

from __future__ import annotations

import json
import os
import shlex
import sys
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from enum import StrEnum
from itertools import islice
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
import typer.main

try:  # typer vendors click from 0.2x on; before, it depended on click itself
    from typer._click.exceptions import ClickException
except ImportError:  # pragma: no cover
    from click.exceptions import ClickException  # type: ignore[import-not-found,no-redef,unused-ignore,assignment]
from rich.console import Console

from kasmina.errors import KasminaError
from kasmina.layouts import (
    HISTORY_COLUMNS,
    HISTORY_FIELDS,
    DataFormat,
    follow_line,
    history_cells,
    history_json,
    history_values,
    print_rows,
    print_table,
    write_csv,
    write_json,
)
from kasmina.ledger.refs import FORMS
from kasmina.run_list import (
    RUN_COLUMNS,
    RUN_DROPPABLE,
    RUN_FIELDS,
    RunSort,
    run_cells,
    run_values,
    selected,
    since_time,
)
from kasmina.terminal import visible

if TYPE_CHECKING:
    from kasmina.events import NewEvent, StoredEvent
    from kasmina.ledger import Ledger

DEFAULT_DB = "sqlite:///kasmina.db"
#: The largest integer either database stores: a bigger bound would overflow in the driver.
INT64_MAX = 2**63 - 1
_RUN_HELP = f"The run: {FORMS}."
_HELP_NAMES = ["-h", "--help"]
#: What `history --no-samples` leaves out.
SAMPLES = "SeedTelemetrySampled"

app = typer.Typer(
    name="kasmina",
    help="Lifecycle ledger for morphogenetic training.",
    no_args_is_help=True,
    add_completion=True,
    context_settings={"help_option_names": _HELP_NAMES},
    pretty_exceptions_enable=False,
)
db_app = typer.Typer(help="Schema migrations (Alembic).", no_args_is_help=True)
app.add_typer(db_app, name="db")
runs_app = typer.Typer(invoke_without_command=True)
app.add_typer(runs_app, name="runs")

out = Console(soft_wrap=True)
err = Console(stderr=True, soft_wrap=True)


class _State:
    db: str = DEFAULT_DB
    artifacts: str | None = None


state = _State()


def _print_version(wanted: bool) -> None:
    if wanted:
        from kasmina.versions import package_version

        version = package_version("kasmina") or "unknown"
        out.print(f"kasmina {version}", highlight=False, markup=False)
        raise typer.Exit()


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
    artifacts: Annotated[
        str | None,
        typer.Option(
            "--artifacts",
            envvar="KASMINA_ARTIFACTS",
            help="Folder of the checkpoint store (default: beside a SQLite file).",
        ),
    ] = None,
    version: Annotated[
        bool,
        typer.Option(
            "--version", is_eager=True, callback=_print_version, help="Print the version and exit."
        ),
    ] = False,
) -> None:
    state.db = db
    state.artifacts = artifacts


def _open(*, create: bool = False) -> Ledger:
    """The ledger at ``--db``; only a command that records a new run may create it."""
    from kasmina.ledger import Ledger

    return Ledger.open(state.db, create=create, artifacts=state.artifacts)


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
def db_downgrade(
    revision: Annotated[str, typer.Argument(help="Target revision.")],
    discard_data: Annotated[
        bool,
        typer.Option(
            "--discard-data", help="Drop the recorded data the downgrade removes (else refused)."
        ),
    ] = False,
) -> None:
    """Migrate the database down to REVISION ('base' removes everything).

    A downgrade that would drop recorded events, or a column of them, is
    refused with what it would drop, unless --discard-data is given.
    """
    from kasmina.ledger import migrate

    lost = migrate.downgrade(state.db, revision, discard_data=discard_data)
    dropped = f" (dropped {' and '.join(lost)})" if lost else ""
    out.print(f"database at revision {_current(state.db) or 'none'}{dropped}", markup=False)


def _current(url: str) -> str | None:
    from kasmina.ledger.core import open_store

    store = open_store(url, "NORMAL", create=False)
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
    out.print(f"{visible(current or 'none')} {mark}", markup=False, highlight=False)


@db_app.command("grant-reader")
def db_grant_reader(
    role: Annotated[str, typer.Argument(metavar="LOGIN_ROLE", help="A PostgreSQL login role.")],
) -> None:
    """Let a PostgreSQL login role run `kasmina sql` (as kasmina_reader: SELECT only)."""
    from kasmina.ledger.core import open_store
    from kasmina.ledger.postgres import PostgresStore

    store = open_store(state.db, "NORMAL", create=False)
    try:
        if not isinstance(store, PostgresStore):
            raise KasminaError(
                "kasmina db grant-reader is for PostgreSQL: a SQLite ledger has no roles "
                "(whoever can read the file can query it)"
            )
        store.grant_reader(role)
    finally:
        store.close()
    out.print(f"granted kasmina_reader to {role}", markup=False, highlight=False)


# -- runs and history -------------------------------------------------------


class ClosedStatus(StrEnum):
    failed = "failed"
    aborted = "aborted"


class RunStatusChoice(StrEnum):
    """What `runs --status` can match: a run's seal (`RunStatus`), or none yet."""

    open = "open"
    completed = "completed"
    failed = "failed"
    aborted = "aborted"


@runs_app.callback()
def runs(
    ctx: typer.Context,
    fmt: Annotated[DataFormat, typer.Option("--format")] = DataFormat.table,
    name: Annotated[
        str | None, typer.Option(help="Only runs whose name matches this shell pattern (wide*).")
    ] = None,
    status: Annotated[
        RunStatusChoice | None, typer.Option(help="Only runs of this status.")
    ] = None,
    since: Annotated[
        str | None,
        typer.Option(
            metavar="WHEN", help="Only runs started since a date or time, or an age (3d, 12h)."
        ),
    ] = None,
    sort: Annotated[RunSort, typer.Option(help="The column to sort by.")] = RunSort.started,
    reverse: Annotated[bool, typer.Option("--reverse", help="Largest (or latest) first.")] = False,
) -> None:
    """List runs: name, status, epochs, final validation accuracy, events and duration."""
    from datetime import UTC, datetime

    if ctx.invoked_subcommand is not None:
        return
    start = None if since is None else since_time(since, datetime.now(UTC))
    with _open() as ledger:
        infos = ledger.runs(summary=True)
    chosen = selected(infos, name=name, status=status, since=start, sort=sort, reverse=reverse)
    if fmt is not DataFormat.table:
        print_rows(RUN_FIELDS, (run_values(info) for info in chosen), fmt, sys.stdout, out)
        return
    rows = ([visible(cell) for cell in run_cells(info)] for info in chosen)
    print_table(RUN_COLUMNS, rows, out, sys.stdout, droppable=RUN_DROPPABLE)


@runs_app.command("close")
def runs_close(
    run_id: Annotated[str, typer.Argument(metavar="RUN", help=_RUN_HELP)],
    status: Annotated[
        ClosedStatus, typer.Option(help="How the run ended: failed (it crashed) or aborted.")
    ],
) -> None:
    """Seal an open run whose writer crashed and will not resume it; refused while a
    process still writes it."""
    with _open() as ledger:
        run_id = ledger.resolve_run(run_id)
        digest = ledger.close_run(run_id, status.value)
    out.print(f"closed run {visible(run_id)} as {status.value} (seal {digest[:12]})", markup=False)


@app.command()
def history(
    run_id: Annotated[str, typer.Argument(metavar="RUN", help=_RUN_HELP)],
    seed_id: Annotated[str | None, typer.Option("--seed-id", help="Only this seed.")] = None,
    slot: Annotated[str | None, typer.Option("--slot", help="Only this slot.")] = None,
    fmt: Annotated[DataFormat, typer.Option("--format")] = DataFormat.table,
    follow: Annotated[
        bool,
        typer.Option(
            "--follow",
            "-f",
            help="Then print each new event as it commits, one line each; "
            "exit after the run's RunFinished.",
        ),
    ] = False,
    live: Annotated[
        bool,
        typer.Option(
            "--live",
            help="Leave out the events a resumed run's abandoned attempts left behind "
            "(RunResumed itself stays).",
        ),
    ] = False,
    types: Annotated[
        list[str] | None,
        typer.Option("--type", metavar="TYPE", help="Only events of this type (repeatable)."),
    ] = None,
    no_samples: Annotated[
        bool,
        typer.Option(
            "--no-samples", help="Leave out SeedTelemetrySampled, the bulk of a long run."
        ),
    ] = False,
    since_epoch: Annotated[
        int | None,
        typer.Option(
            min=0,
            max=INT64_MAX,
            help="Start at the run's first event of epoch N or later.",
            metavar="N",
        ),
    ] = None,
    limit: Annotated[
        int | None,
        typer.Option(min=1, max=INT64_MAX, help="Print at most N events.", metavar="N"),
    ] = None,
    no_pager: Annotated[
        bool,
        typer.Option(
            "--no-pager", help="Print a long table straight to the terminal ($KASMINA_PAGER)."
        ),
    ] = False,
) -> None:
    """The audit timeline of a run, a seed or a slot, oldest first.

    A resumed run keeps what its abandoned attempts recorded after their last
    checkpoint; those events are superseded. The table marks each one
    "superseded (attempt N)", N being the attempt that left it behind, and
    JSON and CSV give that number as `abandoned_attempt` (null for a live
    event). `--live` leaves them out, as the SQL views do, and keeps
    `RunResumed`: it is part of the run's story (the `live_events` view
    keeps it too) and says where the skipped positions went.
    """
    chosen = Selection(tuple(types or ()), (SAMPLES,) if no_samples else (), since_epoch)
    if follow and limit is not None:
        raise KasminaError("--follow prints events until the run ends: drop --limit")
    with _open() as ledger:
        run_id = ledger.resolve_run(run_id)
        _known_types(ledger, chosen.types, follow=follow)
        if follow:
            _follow(ledger, run_id, seed_id, slot, fmt, live, chosen)
            return
        found = ledger.history(
            run_id,
            seed_id=seed_id,
            slot_id=slot,
            types=chosen.types,
            skip_types=chosen.skip_types,
            since_epoch=chosen.since_epoch,
        )
        events = _marked(ledger, run_id, found)
        if live:
            events = (m for m in events if m[1] is None)
        if limit is not None:
            events = islice(events, limit)
        if fmt is DataFormat.json or fmt is DataFormat.jsonl:
            items = (history_json(e, a) for e, a in events)
            write_json(items, sys.stdout, lines=fmt is DataFormat.jsonl)
        elif fmt is DataFormat.csv:
            write_csv(HISTORY_FIELDS, (history_values(e, a) for e, a in events), sys.stdout)
        else:
            from kasmina.pager import paged

            cells = (history_cells(e, a) for e, a in events)
            with paged(out, wanted=not no_pager) as (console, dest):
                print_table(HISTORY_COLUMNS, cells, console, dest, follow_line, foldable=(6,))


def _known_types(ledger: Ledger, types: Sequence[str], *, follow: bool) -> None:
    """Refuse a `--type` neither kasmina's nor recorded here: a typo must not print nothing.

    Following, the type may be a user's own that the run has yet to record:
    a warning then, and the run is followed.
    """
    from kasmina.events import EVENT_TYPES

    unknown = [t for t in types if t not in EVENT_TYPES]
    if not unknown:
        return
    import difflib

    recorded = ledger.event_types()
    for name in unknown:
        if name in recorded:
            continue
        close = difflib.get_close_matches(name, [*EVENT_TYPES, *recorded], n=1)
        hint = f" (did you mean {close[0]}?)" if close else ""
        problem = f"no event type {name!r}: not one of kasmina's, and this ledger has recorded "
        if not follow:
            raise KasminaError(f"{problem}none{hint}")
        line = f"warning: {problem}none yet{hint}; following in case it comes"
        err.print(visible(line), highlight=False, markup=False)


def _marked(
    ledger: Ledger, run_id: str, events: Iterable[StoredEvent]
) -> Iterator[tuple[StoredEvent, int | None]]:
    """Each event with the abandoned attempt that left it behind, or None while it is live.

    The run's `Attempts` are read once, and again at a `RunResumed` they do
    not know yet (one that committed after they were read, as `--follow`
    sees): from there on the new resume's abandoned events are marked. An
    event printed before its resume committed was live when printed; the
    `RunResumed` line says which positions it sets aside.
    """
    attempts = ledger.attempts(run_id)
    for event in events:
        if event.event_type == "RunResumed" and all(
            before != event.position for _, before, _ in attempts.ranges
        ):
            attempts = ledger.attempts(run_id)
        yield event, attempts.abandoned_by(event.position)


def _follow(
    ledger: Ledger,
    run_id: str,
    seed_id: str | None,
    slot: str | None,
    fmt: DataFormat,
    live: bool,
    chosen: Selection,
) -> None:
    """`history --follow`: the table's columns, JSON lines or CSV rows, one event per line.

    The filters (`--live` too) apply to what is printed; the run's
    RunFinished still ends it. One JSON document cannot be printed an event
    at a time, so ``json`` is refused in favour of ``jsonl``.
    """
    from kasmina.events import slot_stream
    from kasmina.ledger.tail import follow

    if fmt is DataFormat.json:
        raise KasminaError("--follow prints one event per line: use --format jsonl, not json")
    stream = None if slot is None else slot_stream(slot)
    events = _marked(ledger, run_id, follow(ledger, run_id))
    if fmt is DataFormat.table:
        sys.stdout.write(follow_line(HISTORY_COLUMNS) + "\n")
    elif fmt is DataFormat.csv:
        write_csv(HISTORY_FIELDS, (), sys.stdout)
    sys.stdout.flush()
    for event, abandoned in events:
        if (
            (stream is not None and event.stream_id != stream)
            or (seed_id is not None and event.seed_id != seed_id)
            or (live and abandoned is not None)
            or not chosen.keeps(event)
        ):
            continue
        if fmt is DataFormat.jsonl:
            sys.stdout.write(history_json(event, abandoned) + "\n")
        elif fmt is DataFormat.csv:
            write_csv(HISTORY_FIELDS, [history_values(event, abandoned)], sys.stdout, header=False)
        else:
            sys.stdout.write(follow_line(history_cells(event, abandoned)) + "\n")
        sys.stdout.flush()


@dataclass
class Selection:
    """`history`'s --type, --no-samples and --since-epoch, for `--follow` to apply as
    events come (without it, `Ledger.history` asks the database for them)."""

    types: tuple[str, ...]
    skip_types: tuple[str, ...]
    since_epoch: int | None
    #: Whether an event of epoch `since_epoch` or later has come (then every event counts).
    reached: bool = False

    def keeps(self, event: StoredEvent) -> bool:
        if self.since_epoch is not None and not self.reached:
            self.reached = event.epoch is not None and event.epoch >= self.since_epoch
            if not self.reached:
                return False
        return (not self.types or event.event_type in self.types) and (
            event.event_type not in self.skip_types
        )


# -- writing ----------------------------------------------------------------


def _read_batch(
    run_id: str,
    file: str | None,
    event_type: str | None,
    payload: str | None,
    stream: str | None,
    envelope: dict[str, str | int | None],
) -> list[NewEvent]:
    """The batch to append: every line of --file, or the one event the options describe.

    Both go through `kasmina.event_lines`, so a field is checked the same way
    whichever way it was given.
    """
    from kasmina.event_lines import event_from_line, json_object, read_events

    described = event_type is not None or payload is not None or stream is not None
    if file is not None:
        if described or any(value is not None for value in envelope.values()):
            raise KasminaError("append takes --file or the event's options, not both")
        return list(read_events(file, run_id))
    if event_type is None or payload is None or stream is None:
        raise KasminaError("append needs --file, or --type, --payload and --stream")
    item = {
        "event_type": event_type,
        "payload": json_object(payload, "--payload"),
        "stream_id": stream,
        **envelope,
    }
    return [event_from_line(item, run_id=run_id, where="the event")]


@app.command()
def append(
    run_id: Annotated[str, typer.Argument(metavar="RUN", help=_RUN_HELP)],
    file: Annotated[
        str | None,
        typer.Option(
            "--file",
            help="JSON lines, one event each (event_type, stream_id, payload; optionally "
            "epoch, seed_id, event_id, version); '-' for stdin. The whole file is one "
            "atomic batch; events with fixed event_id values make a retry a no-op.",
        ),
    ] = None,
    event_type: Annotated[str | None, typer.Option("--type", help="Event type.")] = None,
    payload: Annotated[str | None, typer.Option("--payload", help="Payload JSON.")] = None,
    stream: Annotated[str | None, typer.Option("--stream", help="Stream id.")] = None,
    epoch: Annotated[int | None, typer.Option("--epoch")] = None,
    seed_id: Annotated[str | None, typer.Option("--seed-id")] = None,
    event_id: Annotated[
        str | None,
        typer.Option("--event-id", help="The event's UUID, so that a retry is a no-op."),
    ] = None,
) -> None:
    """Record events into an existing run (validated, all or nothing)."""
    envelope: dict[str, str | int | None] = {
        "epoch": epoch,
        "seed_id": seed_id,
        "event_id": event_id,
    }
    with _open() as ledger:
        run_id = ledger.resolve_run(run_id)
        batch = _read_batch(run_id, file, event_type, payload, stream, envelope)
        result = ledger.append(batch)
    out.print(f"appended {result.appended} event(s), skipped {result.skipped} already stored")


# -- checking and querying --------------------------------------------------


@app.command()
def verify(
    run_id: Annotated[
        str | None, typer.Argument(metavar="[RUN]", help=f"{_RUN_HELP} All runs if omitted.")
    ] = None,
    fmt: Annotated[
        DataFormat,
        typer.Option(
            "--format",
            help="json: one document; jsonl: a line per run checked, then per fault; "
            "csv: a row per fault.",
        ),
    ] = DataFormat.table,
    anchor: Annotated[
        Path | None,
        typer.Option(help="Also prove the ledger still holds all this anchor covered."),
    ] = None,
    public_key: Annotated[
        str | None,
        typer.Option(
            help="Pin seals and anchors to this Ed25519 key (64 hex digits or a .pub file; "
            "default $KASMINA_PUBLIC_KEY)."
        ),
    ] = None,
    jobs: Annotated[
        int | None,
        typer.Option(
            min=1,
            help="Processes to split a long run between (default: one per CPU while "
            "each gets 100,000 events).",
        ),
    ] = None,
) -> None:
    """Check hash chains, version gaps, seals and signatures; exit 1 on any fault."""
    from kasmina.ledger import anchors
    from kasmina.ledger.verify import FAULT_FIELDS, fault_values, report_json, report_lines
    from kasmina.signing import trusted_public_key

    trusted = trusted_public_key(public_key)
    anchored = None
    if anchor is not None:
        anchored = anchors.read_anchor(_read_text(anchor, "anchor"), str(anchor))
    with _open() as ledger:
        if run_id is not None:
            run_id = ledger.resolve_run(run_id)
        report = ledger.verify(run_id, trusted=trusted, jobs=jobs)
        if anchored is not None:
            report.faults.extend(anchors.check_anchor(ledger, anchored, trusted))
    if fmt is DataFormat.json:
        sys.stdout.write(report_json(report) + "\n")
    elif fmt is DataFormat.jsonl:
        write_json(report_lines(report), sys.stdout, lines=True)
    elif fmt is DataFormat.csv:
        write_csv(FAULT_FIELDS, map(fault_values, report.faults), sys.stdout)
    else:
        for check in report.runs:
            seal = "sealed" if check.sealed else "open (no RunFinished)"
            out.print(
                f"run {visible(check.run_id)}: {check.events} events in {check.streams} "
                f"streams, {seal}, format {check.format}",
                markup=False,
            )
        for fault in report.faults:
            out.print(f"FAULT {visible(str(fault))}", markup=False)
        verdict = "OK" if report.ok else f"{len(report.faults)} fault(s)"
        runs = len(report.runs)
        out.print(
            f"verify: {verdict} ({report.events} events, {runs} run{'' if runs == 1 else 's'})"
        )
    if not report.ok:
        raise typer.Exit(1)


def _read_text(path: Path, what: str) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = getattr(exc, "strerror", None) or exc
        raise KasminaError(f"cannot read {what} {path}: {reason}") from None


@app.command()
def keygen(
    output: Annotated[
        Path | None,
        typer.Option(
            "-o",
            "--output",
            help="Key file (default $KASMINA_SIGNING_KEY, else ~/.config/kasmina).",
        ),
    ] = None,
    force: Annotated[bool, typer.Option("--force", help="Replace a key file that exists.")] = False,
) -> None:
    """Make an Ed25519 signing key for run seals and anchors; print its public key."""
    from kasmina.signing import SIGNING_KEY_ENV, default_key_path, generate

    path = output or default_key_path()
    key = generate(path, overwrite=force)
    out.print(
        f"wrote {visible(str(path))} (mode 0600) and its public key to {visible(str(path))}.pub",
        markup=False,
    )
    out.print(f"public key: {key.public_hex}", markup=False)
    if os.environ.get(SIGNING_KEY_ENV) != str(path):
        out.print(
            f"sign seals and anchors with: export {SIGNING_KEY_ENV}={shlex.quote(str(path))}",
            markup=False,
        )


@app.command()
def anchor(
    output: Annotated[Path, typer.Option("--output", "-o", help="The anchor file to write.")],
    run_id: Annotated[
        str | None,
        typer.Argument(metavar="[RUN]", help=f"{_RUN_HELP} The whole ledger if omitted."),
    ] = None,
) -> None:
    """Write the heads of a run or the ledger to a file; signed if $KASMINA_SIGNING_KEY is set."""
    from kasmina.files import atomic_text
    from kasmina.ledger.anchors import anchor_json, make_anchor
    from kasmina.signing import SIGNING_KEY_ENV, configured_key

    key = configured_key()
    with _open() as ledger:
        if run_id is not None:
            run_id = ledger.resolve_run(run_id)
        made = make_anchor(ledger, run_id, key)
    with atomic_text(output) as file:
        file.write(anchor_json(made))
    events = sum(run.events for run in made.runs.values())
    signed = f"signed by {key.public_hex[:16]}…" if key else f"unsigned (no {SIGNING_KEY_ENV})"
    out.print(
        f"anchored {len(made.runs)} run(s), {events} events, to {visible(str(output))}, {signed}",
        markup=False,
    )


@contextmanager
def _cancelled_on_interrupt() -> Iterator[None]:
    """Ctrl-C: the database has cancelled the query by now; one line and 130, as shells expect."""
    try:
        yield
    except KeyboardInterrupt:
        err.print("interrupted: the query was cancelled", highlight=False, markup=False)
        raise typer.Exit(130) from None


@app.command(context_settings={"ignore_unknown_options": True})
def sql(
    query: Annotated[
        str | None,
        typer.Argument(
            metavar="[QUERY]",
            help="A read-only SQL query; - reads it from stdin. A leading -- comment is fine.",
        ),
    ] = None,
    file: Annotated[
        Path | None, typer.Option("--file", "-f", help="Read the query from this file.")
    ] = None,
    recipe: Annotated[
        str | None,
        typer.Option(metavar="NAME", help="Run a recipe of the SQL cookbook (docs/sql.md)."),
    ] = None,
    params: Annotated[
        list[str] | None,
        typer.Option(
            "--param",
            metavar="NAME=VALUE",
            help="A value for :NAME in the query (repeatable; a number is a number).",
        ),
    ] = None,
    run: Annotated[
        str | None,
        typer.Option(metavar="RUN", help=f"The id of this run is :run in the query. {_RUN_HELP}"),
    ] = None,
    fmt: Annotated[DataFormat, typer.Option("--format")] = DataFormat.table,
    output: Annotated[
        Path | None,
        typer.Option("--output", "-o", help="Write the result to this file instead of stdout."),
    ] = None,
    timeout: Annotated[
        float, typer.Option("--timeout", help="Cancel the query after this many seconds.")
    ] = 30.0,
) -> None:
    """Run read-only SQL against the ledger (writes and ATTACH are refused)."""
    from kasmina.ledger.sqlparams import parse_params

    text = _query_text(query, file, recipe)
    values = parse_params(params or [])
    with _open() as ledger, _cancelled_on_interrupt():
        if run is not None:
            if "run" in values:
                raise KasminaError("give the run once: --run RUN or --param run=ID, not both")
            values["run"] = ledger.resolve_run(run)
        columns, rows = ledger.sql(text, params=values, timeout_s=timeout)
        if output is None:
            print_rows(columns, rows, fmt, sys.stdout, out)
            return
        from kasmina.files import atomic_text

        with atomic_text(output) as dest:
            print_rows(columns, rows, fmt, dest, Console(file=dest, width=200))
    err.print(f"wrote {visible(str(output))}", highlight=False, markup=False)


def _query_text(query: str | None, file: Path | None, recipe: str | None) -> str:
    """The query from the one place it was given: the argument, stdin (-), a file, a recipe."""
    sources = (("QUERY", query), ("--file", file), ("--recipe", recipe))
    given = [what for what, value in sources if value is not None]
    if len(given) != 1:
        raise KasminaError(
            "give the query once: as QUERY, - for stdin, --file PATH or --recipe NAME"
            + (f" (got {' and '.join(given)})" if given else "")
        )
    if recipe is not None:
        from kasmina.recipes import recipe as cookbook

        return cookbook(recipe)
    if file is not None:
        return _read_text(file, "query file")
    assert query is not None
    if query != "-":
        return query
    raw = getattr(sys.stdin, "buffer", None)  # a text stream without bytes is text already
    try:
        return sys.stdin.read() if raw is None else raw.read().decode("utf-8")
    except UnicodeDecodeError as exc:
        raise KasminaError(f"the query on standard input is not UTF-8: {exc.reason}") from None


class ExportFormat(StrEnum):
    csv = "csv"
    jsonl = "jsonl"
    parquet = "parquet"


@app.command()
def export(
    run_id: Annotated[str, typer.Argument(metavar="RUN", help=_RUN_HELP)],
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
    from kasmina.progress import Progress

    with _open() as ledger, Progress("exporting", None, err, unit="rows") as progress:
        run_id = ledger.resolve_run(run_id)
        written = export_run(ledger, run_id, output, fmt.value, progress=progress.update)
    err.print(
        f"wrote {len(written)} files to {visible(str(output))}", highlight=False, markup=False
    )


@app.command()
def report(
    run_ids: Annotated[
        list[str],
        typer.Argument(
            metavar="RUN",
            help=_RUN_HELP + " Two runs or more give one page comparing them.",
            show_default=False,
        ),
    ],
    output: Annotated[
        Path,
        typer.Option("--output", "-o", help="The HTML file to write."),
    ] = Path("run.html"),
    metric: Annotated[
        list[str] | None,
        typer.Option(
            "--metric",
            "-m",
            metavar="NAME",
            help="Chart this metric (repeat for more; default: every metric recorded once "
            "per epoch). Any EpochCompleted or per-slot metric, free-named ones included.",
            show_default=False,
        ),
    ] = None,
    watch: Annotated[
        bool,
        typer.Option(
            "--watch",
            help="Keep rewriting the page as events commit, until every run is sealed; "
            "the page reloads itself meanwhile.",
        ),
    ] = False,
    every: Annotated[
        float,
        typer.Option("--every", min=0.2, max=3600.0, help="With --watch: seconds between looks."),
    ] = 2.0,
) -> None:
    """Write one self-contained HTML page about a run, or comparing several runs."""
    from kasmina.files import atomic_text
    from kasmina.report import render_runs

    with _open() as ledger:
        resolved = list(dict.fromkeys(ledger.resolve_run(r) for r in run_ids))
        if watch:
            from kasmina.report.watch import Mark
            from kasmina.report.watch import watch as follow

            def wrote(mark: Mark) -> None:
                state = "sealed" if mark.sealed else "open"
                err.print(
                    f"wrote {visible(str(output))} ({sum(mark.events):,} events, {state})",
                    highlight=False,
                    markup=False,
                )

            try:
                follow(ledger, resolved, output, metric, every_s=every, wrote=wrote)
            except KeyboardInterrupt:
                err.print(f"stopped watching; {output} is as last written", markup=False)
            return
        from kasmina.progress import Progress
        from kasmina.report import READ_STEPS

        done = 0
        with Progress(
            "reading the runs' views", READ_STEPS * len(resolved), err, unit="reads"
        ) as bar:

            def step() -> None:
                nonlocal done
                done += 1
                bar.update(done)

            page = render_runs(ledger, resolved, metric, step=step)
    with atomic_text(output) as dest:
        dest.write(page)
    kib = max(1, round(output.stat().st_size / 1024))
    err.print(f"wrote {visible(str(output))} ({kib:,} KiB)", highlight=False, markup=False)


@app.command()
def replay(
    run_id: Annotated[str, typer.Argument(metavar="RUN", help=_RUN_HELP)],
    at_epoch: Annotated[
        int | None,
        typer.Option("--at-epoch", min=0, max=INT64_MAX, help="State at the end of this epoch."),
    ] = None,
    at_position: Annotated[
        int | None,
        typer.Option("--at-position", min=0, max=INT64_MAX, help="State right after this event."),
    ] = None,
    fmt: Annotated[
        DataFormat,
        typer.Option(
            "--format",
            help="json: the whole state; jsonl and csv: a slot a row. With --verify: the "
            "comparison, jsonl a line for the run then one per divergence, csv a row per "
            "differing field.",
        ),
    ] = DataFormat.table,
    reexecute: Annotated[
        bool,
        typer.Option("--verify", help="Re-execute the run and compare its events (exit 1 if not)."),
    ] = False,
    trust: Annotated[
        bool, typer.Option("--trust", help="Fold even if the hash chain does not verify.")
    ] = False,
    allow_code_change: Annotated[
        bool,
        typer.Option(
            "--allow-code-change", help="With --verify: re-run a program whose code has changed."
        ),
    ] = False,
    device: Annotated[
        str | None,
        typer.Option(help="With --verify: re-execute on this device (default: the run's own)."),
    ] = None,
    no_snapshots: Annotated[
        bool, typer.Option("--no-snapshots", help="Fold from the first event.")
    ] = False,
    snapshot_every: Annotated[
        int | None,
        typer.Option(
            "--snapshot-every", min=1, max=INT64_MAX, help="Store a snapshot every N events folded."
        ),
    ] = None,
) -> None:
    """A run's state at an epoch or position, folded from its log; --verify re-executes it."""
    from kasmina.progress import Progress
    from kasmina.replay import display, replay

    if reexecute:
        if at_epoch is not None or at_position is not None:
            raise KasminaError("--verify re-executes the whole run; drop --at-epoch/--at-position")
        _reexecute(run_id, trust, allow_code_change, device, fmt)
        return
    with _open() as ledger:
        run_id = ledger.resolve_run(run_id)
        total = next((r.events for r in ledger.runs() if r.run_id == run_id), None)
        with Progress("folding", total, err) as progress:
            state = replay(
                ledger,
                run_id,
                at_epoch,
                at_position,
                trust=trust,
                snapshots=not no_snapshots,
                snapshot_every=snapshot_every,
                progress=progress.update,
            )
    if fmt is DataFormat.json:
        sys.stdout.write(display.state_json(state) + "\n")
    elif fmt is DataFormat.table:
        display.print_state(out, sys.stdout, state)
    else:
        print_rows(display.STATE_FIELDS, display.state_values(state), fmt, sys.stdout, out)


def _reexecute(
    run_id: str, trust: bool, allow_code_change: bool, device: str | None, fmt: DataFormat
) -> None:
    try:
        from kasmina.demo import PROGRAM
        from kasmina.replay.reexecution import Program, reexecute, started_of
    except ImportError as exc:
        raise KasminaError(
            f"replay --verify needs torch and scikit-learn ({exc.name} is missing): "
            "pip install 'kasmina[demo]'"
        ) from None
    from kasmina.programs import RecordedProgram
    from kasmina.replay import display

    with _open() as ledger:
        run_id = ledger.resolve_run(run_id)
        program: Program = PROGRAM
        if started_of(ledger, run_id).entry_point is not None:  # started by `kasmina run`
            program = RecordedProgram(allow_code_change, source=ledger, device=device)
        report = reexecute(ledger, run_id, program, trust=trust, console=err)
    if fmt is DataFormat.json:
        sys.stdout.write(json.dumps(display.reexecution_dict(report), ensure_ascii=False) + "\n")
    elif fmt is DataFormat.jsonl:
        write_json(display.reexecution_lines(report), sys.stdout, lines=True)
    elif fmt is DataFormat.csv:
        write_csv(display.DIVERGENCE_FIELDS, display.reexecution_rows(report), sys.stdout)
    else:
        display.print_reexecution(out, report)
    if not report.ok:
        raise typer.Exit(1)


@app.command()
def schema() -> None:
    """Print the JSON Schema of every event payload."""
    from kasmina.events import json_schemas

    sys.stdout.write(json.dumps(json_schemas(), indent=2, sort_keys=True) + "\n")


@app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def run(
    context: typer.Context,
    target: Annotated[
        str | None,
        typer.Argument(
            help="path/to/file.py:function or package.module:function (with --resume: "
            "the run's own; with --fork: the parent's unless given)."
        ),
    ] = None,
    config: Annotated[
        str | None,
        typer.Option(
            help="The program's config: a JSON object or a .json file (with --fork: "
            "keys that replace the parent's)."
        ),
    ] = None,
    seed: Annotated[
        int | None, typer.Option(help="The run's seed (ctx.seed; default 0, a fork's parent's).")
    ] = None,
    name: Annotated[str | None, typer.Option(help="The run's name.")] = None,
    run_id: Annotated[
        str | None, typer.Option("--run-id", help="Name the run (default: a new UUID).")
    ] = None,
    device: Annotated[
        str | None, typer.Option(help="ctx.device, e.g. cpu or cuda (default: cpu).")
    ] = None,
    resume: Annotated[
        str | None,
        typer.Option(
            metavar="RUN",
            help=f"Go on with this unfinished run from its last checkpoint. {_RUN_HELP}",
        ),
    ] = None,
    fork: Annotated[
        str | None,
        typer.Option(
            metavar="RUN@EPOCH",
            help=f"Start a new run from RUN's checkpoint at EPOCH (a what-if). {_RUN_HELP}",
        ),
    ] = None,
    allow_code_change: Annotated[
        bool, typer.Option(help="With --resume: go on even if the program's code has changed.")
    ] = False,
    deterministic: Annotated[
        bool | None,
        typer.Option(
            "--deterministic/--no-deterministic",
            help="PyTorch's determinism rules (default on; recorded; a resumed run keeps its own).",
        ),
    ] = None,
) -> None:
    """Run your training program, recording what it is so the run can be proved later.

    Arguments after `--` reach the program as ctx.argv. `--resume RUN` runs
    RUN's own program, config and seed again, and the program's
    ctx.restore(...) puts it back at the run's last checkpoint. `--fork
    RUN@EPOCH` starts a new run whose ctx.restore(...) puts back RUN's
    checkpoint at EPOCH; its own events follow.
    """
    from kasmina.programs import (
        ProgramFailed,
        fork_program,
        read_config,
        resume_program,
        run_program,
    )

    if resume is None and fork is None and target is None:
        raise KasminaError("kasmina run needs a TARGET (path/to/file.py:function) or --resume RUN")
    if resume is not None and fork is not None:
        raise KasminaError("--resume goes on with a run and --fork starts a new one: give one")
    if resume is not None and (
        target
        or config is not None
        or context.args
        or run_id
        or name
        or seed is not None
        or deterministic is not None
    ):
        raise KasminaError(
            "--resume goes on with the run's own program, config, arguments, name, seed, id and "
            "determinism: leave out TARGET, --config, --name, --seed, --run-id, "
            "--[no-]deterministic and arguments after --"
        )
    with _open(create=resume is None and fork is None) as ledger:
        try:
            if resume is not None:
                rid = resume_program(
                    ledger,
                    resume,
                    allow_code_change=allow_code_change,
                    device=device,
                    console=err,
                    progress=err,
                ).run.run_id
            elif fork is not None:
                rid = fork_program(
                    ledger,
                    fork,
                    target=target,
                    config=read_config(config),
                    seed=seed,
                    name=name,
                    run_id=run_id,
                    device=device,
                    argv=list(context.args) if context.args else None,
                    deterministic=deterministic,
                    progress=err,
                ).run.run_id
            else:
                assert target is not None
                rid = run_program(
                    ledger,
                    target,
                    config=read_config(config),
                    seed=seed or 0,
                    name=name,
                    run_id=run_id,
                    device=device or "cpu",
                    argv=list(context.args),
                    deterministic=deterministic is not False,
                    progress=err,
                )
        except ProgramFailed as exc:
            import traceback

            cause = exc.__cause__ or exc
            traceback.print_exception(type(cause), cause, cause.__traceback__, file=sys.stderr)
            err.print(_error_line(exc), markup=False, highlight=False)
            raise typer.Exit(1) from None
    out.print(rid, highlight=False, markup=False)


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
    with _open(create=True) as ledger:
        run_demo(
            ledger,
            epochs=epochs,
            slots=slots,
            seed=seed,
            console=out,
            run_id=run_id,
            progress=err,
        )


def _error_line(exc: BaseException) -> str:
    """The one line an error prints: no password of the URL, no raw control characters."""
    from kasmina.ledger.errors import scrub

    return f"error: {visible(scrub(str(exc), state.db))}"


def _usage_line(exc: ClickException) -> str:
    """A usage error as one line, with where to look, instead of click's usage block."""
    ctx = getattr(exc, "ctx", None)
    hint = f" (try '{ctx.command_path} --help')" if ctx is not None else ""
    return f"error: {visible(' '.join(exc.format_message().split()))}{hint}"


def _bare_flags(command: Any) -> None:
    """Help lists a flag with no type after it (Typer writes ``<bool>``): it takes no value.

    The help option is made, and kept, on first use: made here, with the
    names every command's help takes.
    """
    context = command.context_class(command, help_option_names=_HELP_NAMES)
    for param in [*command.params, command.get_help_option(context)]:
        if getattr(param, "is_flag", False):
            param.metavar = ""
    for sub in getattr(command, "commands", {}).values():
        _bare_flags(sub)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point: kasmina errors and bad usage become one line on stderr and exit code 2.

    Click's own handling (standalone mode) would print a usage block, boxed
    on a terminal, for ``--at-position 1e20``: a script reading stderr gets
    one line for every kind of bad input instead. Help is printed as usual.
    """
    command = typer.main.get_command(app)
    _bare_flags(command)
    args = list(argv) if argv is not None else None
    try:
        code = command.main(args=args, prog_name="kasmina", standalone_mode=False)
    except ClickException as exc:
        if type(exc).__name__ != "NoArgsIsHelpError":  # that one has printed the help already
            err.print(_usage_line(exc), markup=False, highlight=False)
        return exc.exit_code
    except SystemExit as exc:
        code = exc.code
        return code if isinstance(code, int) else (0 if code is None else 1)
    except KasminaError as exc:
        err.print(_error_line(exc), markup=False, highlight=False)
        return 2
    except OSError as exc:
        err.print(_error_line(exc), markup=False, highlight=False)
        return 2
    except KeyboardInterrupt:
        err.print("interrupted", highlight=False)
        return 130
    return code if isinstance(code, int) else 0


if __name__ == "__main__":
    raise SystemExit(main())
