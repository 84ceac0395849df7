"""How `kasmina replay` shows a folded state and a re-execution report (rich tables).

Ids and payload strings come from the database, so they reach the terminal
through `kasmina.terminal` (controls escaped, never read as markup).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import IO, TYPE_CHECKING

from rich.console import Console
from rich.table import Table
from rich.text import Text

from kasmina.layouts import print_table
from kasmina.run_state import ReplayState
from kasmina.slot_state import SlotState
from kasmina.terminal import cell, visible

if TYPE_CHECKING:
    from kasmina.events import StoredEvent
    from kasmina.replay.reexecution import Reexecution


def _ramp(s: SlotState) -> str:
    c = s.controller
    if c.mode == "HOLD":
        return "hold"
    steps = f"{c.steps_done}/{c.steps_total}"
    return f"{c.mode.lower()} to {c.alpha_target:g} ({steps}, {c.curve.lower()})"


#: What the `gates` column's G2+3 means (docs/gates.md says what each gate checks).
GATES_LEGEND = (
    "gates: G2+ the last verdict of G2 passed, G2- it failed; "
    "a number after it counts the attempts (G2+3: three, the last passed)"
)


def _gates(s: SlotState) -> str:
    return " ".join(
        f"{g.gate}{'+' if g.last_passed else '-'}{g.attempts if g.attempts > 1 else ''}"
        for g in s.gates
    )


STATE_COLUMNS = (
    "slot", "stage", "seed", "blueprint", "alpha", "ramp", "in stage", "total", "gates", "outcome",
)  # fmt: skip
#: On a narrow terminal these go first, in this order: never the slot, stage or seed.
STATE_DROPPABLE = (5, 8, 7, 6, 4, 9, 3)


#: The columns of ``replay --format jsonl|csv``: a slot a row, as the table shows it.
STATE_FIELDS = (
    "slot_id", "stage", "seed_id", "blueprint_id", "alpha", "ramp", "epochs_in_stage",
    "epochs_total", "gates", "outcome",
)  # fmt: skip


def state_values(state: ReplayState) -> list[tuple[object, ...]]:
    """Each slot's `STATE_FIELDS`, typed (None where a slot has no seed)."""
    return [
        (
            s.slot_id,
            s.stage.name,
            s.seed_id,
            s.blueprint_id,
            s.alpha,
            _ramp(s),
            s.epochs_in_stage,
            s.epochs_total,
            _gates(s),
            s.outcome,
        )
        for s in state.values()
    ]


def state_rows(state: ReplayState) -> list[list[str]]:
    """`state_values` as the table's cells, safe for a terminal."""
    return [
        [
            visible("" if v is None else f"{v:.3f}" if isinstance(v, float) else str(v))
            for v in values
        ]
        for values in state_values(state)
    ]


def _title(state: ReplayState) -> str:
    run = state.run
    epoch = "-" if run.epoch is None else str(run.epoch)
    return (
        f"run {run.run_id} ({run.status}) at epoch {epoch}, position {run.position}: "
        f"{run.events} events folded"
    )


def print_state(console: Console, dest: IO[str], state: ReplayState) -> None:
    """The folded state as `print_table` lays it out: no stage, id or seed is ever cut."""
    console.print(visible(_title(state)), markup=False, highlight=False)
    print_table(STATE_COLUMNS, state_rows(state), console, dest, droppable=STATE_DROPPABLE)
    console.print(GATES_LEGEND, markup=False, highlight=False)
    run = state.run
    caches = ", ".join(
        f"{name} {c.evicted} evicted in {c.passes} passes" for name, c in run.caches.items()
    )
    console.print(
        f"memory: {visible(caches) or 'no evictions'}; {run.blocks_released} blocks released; "
        f"{run.samples_dropped} samples dropped",
        markup=False,
    )


def state_json(state: ReplayState) -> str:
    return json.dumps(state.to_json(), indent=2, sort_keys=True, ensure_ascii=False)


def _side(e: StoredEvent | None, fields: tuple[str, ...]) -> str:
    """The event, and only its fields that differ (a payload field is ``payload.NAME``)."""
    if e is None:
        return "(no event: the stream ends here)"
    lines = [f"{e.event_type} (position {e.position}, epoch {e.epoch})"]
    for name in fields:
        text = json.dumps(_value(e, name), sort_keys=True, ensure_ascii=False)
        lines.append(f"{name.removeprefix('payload.')} = {text}")
    return "\n".join(lines)


#: `replay --verify --format csv`: one row per field of a diverging event.
DIVERGENCE_FIELDS = (
    "stream_id",
    "version",
    "field",
    "recorded_position",
    "recorded",
    "replayed_position",
    "replayed",
)


def _value(e: StoredEvent | None, name: str) -> object:
    if e is None:
        return None
    if name.startswith("payload."):
        return e.payload.model_dump(mode="json").get(name.removeprefix("payload."))
    envelope = {"event_type": e.event_type, "epoch": e.epoch, "seed_id": e.seed_id}
    return envelope.get(name, e.schema_version)


def _event(e: StoredEvent | None, fields: tuple[str, ...]) -> dict[str, object] | None:
    if e is None:
        return None
    values = {name.removeprefix("payload."): _value(e, name) for name in fields}
    return {"position": e.position, "event_type": e.event_type, "epoch": e.epoch, "values": values}


def reexecution_dict(report: Reexecution) -> dict[str, object]:
    """The report as data: `--format json` prints it whole, jsonl a line per part."""
    return {
        "run_id": report.run_id,
        "ok": report.ok,
        "compared": report.compared,
        "digests": report.digests,
        "notes": list(report.notes),
        "divergences": [
            {
                "stream_id": d.stream_id,
                "version": d.version,
                "fields": [f.removeprefix("payload.") for f in d.fields],
                "recorded": _event(d.recorded, d.fields),
                "replayed": _event(d.replayed, d.fields),
            }
            for d in report.divergences
        ],
    }


def reexecution_lines(report: Reexecution) -> Iterator[str]:
    """jsonl: the run's line (``"record": "run"``), then one per divergence."""
    whole = reexecution_dict(report)
    divergences = whole.pop("divergences")
    assert isinstance(divergences, list)
    yield json.dumps({"record": "run", **whole}, ensure_ascii=False)
    for d in divergences:
        yield json.dumps({"record": "divergence", "run_id": report.run_id, **d}, ensure_ascii=False)


def reexecution_rows(report: Reexecution) -> Iterator[tuple[object, ...]]:
    """csv: one row per differing field, values as JSON text; none for a run that reproduces."""
    for d in report.divergences:
        for name in d.fields:
            yield (
                d.stream_id,
                d.version,
                name.removeprefix("payload."),
                None if d.recorded is None else d.recorded.position,
                json.dumps(_value(d.recorded, name), sort_keys=True, ensure_ascii=False),
                None if d.replayed is None else d.replayed.position,
                json.dumps(_value(d.replayed, name), sort_keys=True, ensure_ascii=False),
            )


def print_reexecution(console: Console, report: Reexecution) -> None:
    for note in report.notes:
        console.print(f"note: {visible(note)}", markup=False)
    if report.ok:
        console.print(
            f"replay --verify: run {visible(report.run_id)} reproduces: {report.compared} events "
            f"compared, {report.digests} parameter digests equal, 0 divergences",
            markup=False,
        )
        return
    table = Table("stream", "version", "differs in", "recorded", "replayed", show_lines=True)
    for d in report.divergences:
        table.add_row(
            cell(d.stream_id),
            cell(d.version),
            cell(", ".join(f.removeprefix("payload.") for f in d.fields)),
            Text("\n").join(cell(line) for line in _side(d.recorded, d.fields).splitlines()),
            Text("\n").join(cell(line) for line in _side(d.replayed, d.fields).splitlines()),
        )
    console.print(table)
    first = min(
        report.divergences,
        key=lambda d: d.recorded.position if d.recorded is not None else float("inf"),
    )
    where = f"position {first.recorded.position} " if first.recorded is not None else ""
    kind = first.recorded.event_type if first.recorded is not None else "end of stream"
    console.print(
        f"replay --verify: run {visible(report.run_id)} DIVERGES in {len(report.divergences)} "
        f"stream(s); first diverging event: {where}{visible(kind)} in {visible(first.stream_id)} "
        f"(version {first.version}); {report.compared} events matched up to the divergences",
        markup=False,
    )


__all__ = [
    "DIVERGENCE_FIELDS",
    "print_reexecution",
    "print_state",
    "reexecution_dict",
    "reexecution_lines",
    "reexecution_rows",
    "state_json",
    "state_rows",
    "state_values",
]
