"""What a report shows, read from the ledger's SQL views and nothing else.

The views are the public, backend-neutral face of the log (SQLite and
PostgreSQL give the same rows), so the report cannot drift from what a user
gets from `kasmina sql`. Values are normalised here — PostgreSQL's booleans,
`Decimal` sums and timestamps — so the renderers see one set of Python types.
Dense telemetry is thinned while it streams in, so a long run never sits in
memory whole.

A fork's own log starts after its fork epoch; its story before that is its
ancestors' (`run_lineage`). Each ancestor's rows are read from the same views,
cut at the epoch the line of runs leaves it, and the stage each slot was in
there is carried on into the next run until that run's first move in the slot.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Collection, Iterator, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from decimal import Decimal

from kasmina.errors import LedgerError, ReportError
from kasmina.ledger import Ledger
from kasmina.ledger.sqljson import PayloadSql, sql_literal
from kasmina.ledger.store import Row
from kasmina.report.thinning import Curve, Thinner

#: Buckets per curve over the whole run; each keeps its lowest and highest point.
CURVE_BUCKETS = 200
#: Views added by later migrations; an older database still gets a report without them.
OPTIONAL_VIEWS = ("seed_endings", "epoch_metrics", "metrics")
#: `EpochCompleted`'s own metrics, as `epoch_metrics` names them: one value per epoch.
RUN_COLUMNS = ("val_accuracy", "train_accuracy", "val_loss", "train_loss", "host_grad_norm")
#: Each sample's own metrics, as `seed_timeline` names them: one value per slot and epoch.
SLOT_COLUMNS = ("accuracy", "accuracy_delta", "counterfactual")
#: A sample's metrics no view has a column for, read from its payload when charted.
SAMPLE_FIELDS = ("grad_norm", "grad_health")
RUN = "run"


@dataclass(frozen=True, slots=True)
class Summary:
    run_id: str
    name: str | None
    seed: int | None
    status: str
    events: int
    epochs: int
    seeds: int
    fossilized: int
    pruned: int
    evicted: int
    final_val_accuracy: float | None
    started_at: datetime | None
    finished_at: datetime | None


@dataclass(slots=True)
class MetricSummary:
    """One free-named metric of the run or of one slot, over every epoch that recorded it."""

    slot_id: str | None
    name: str
    count: int = 0
    #: The lowest and highest value other than NaN; None while there is none.
    low: float | None = None
    high: float | None = None
    last: float | None = None
    last_epoch: int | None = None

    def add(self, epoch: int | None, value: float | None) -> None:
        self.count += 1
        self.last, self.last_epoch = value, epoch
        if value is not None and not math.isnan(value):
            self.low = value if self.low is None else min(self.low, value)
            self.high = value if self.high is None else max(self.high, value)


@dataclass(frozen=True, slots=True)
class Interval:
    slot_id: str
    seed_id: str | None
    stage: str
    start: int
    end: int | None


@dataclass(frozen=True, slots=True)
class Verdict:
    slot_id: str
    seed_id: str | None
    epoch: int
    gate: str
    target_stage: str | None
    passed: bool
    checks_failed: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Eviction:
    cache: str
    reason: str
    evicted: int
    epoch: int


@dataclass(frozen=True, slots=True)
class Ending:
    outcome: str
    reason: str | None
    initiator: str | None
    improvement: float | None
    counterfactual: float | None
    params_added: int | None


@dataclass(frozen=True, slots=True)
class Outcome:
    seed_id: str
    slot_id: str
    blueprint_id: str | None
    germinated_epoch: int | None
    final_stage: str
    ended_epoch: int | None
    ending: Ending | None


@dataclass(frozen=True, slots=True)
class Ancestor:
    """One run the reported run descends from, and its part of the story.

    ``epoch`` is where the line of runs leaves it (the fork epoch); its rows
    stop there. A stage still open at that epoch ends at ``epoch + 1``, the
    fork's first epoch; ``carried`` are the stages it went on with from its
    own parent (empty for the oldest).
    """

    run_id: str
    depth: int
    epoch: int
    intervals: list[Interval] = field(default_factory=list)
    carried: list[Interval] = field(default_factory=list)
    verdicts: list[Verdict] = field(default_factory=list)
    alpha: list[Curve] = field(default_factory=list)
    #: The reported run's charted metrics, up to the fork epoch.
    charts: dict[str, list[Curve]] = field(default_factory=dict)


@dataclass(slots=True)
class Readings:
    """One run's curves and metric summaries, from one pass over each telemetry view.

    Every metric is thinned as it streams past, so choosing what to chart costs no
    second read; ``recorded`` names every metric the run has, charted or not, with
    ``"run"`` for one value per epoch and ``"slot"`` for one per slot and epoch.
    """

    alpha: list[Curve]
    charts: dict[str, list[Curve]]
    recorded: dict[str, str]
    summaries: list[MetricSummary]


@dataclass(slots=True)
class RunData:
    summary: Summary
    slots: list[str]
    intervals: list[Interval]
    verdicts: list[Verdict]
    evictions: list[Eviction]
    outcomes: list[Outcome]
    alpha: list[Curve]
    #: Each charted metric's curves, keyed (owner, metric): owner "run" or a slot id.
    charts: dict[str, list[Curve]]
    bucket_epochs: int
    has_endings: bool
    unplaced_evictions: int = 0
    missing_views: list[str] = field(default_factory=list)
    #: The run's free-named metrics, run-level first, then per slot, by name.
    metrics: list[MetricSummary] = field(default_factory=list)
    #: A fork's ancestors from its parent (depth 1) back to the first run; empty otherwise.
    lineage: list[Ancestor] = field(default_factory=list)
    #: A fork's stages carried on from its parent: each slot's stage at the fork epoch,
    #: from the fork's first epoch to the fork's first move in that slot.
    carried: list[Interval] = field(default_factory=list)
    #: Every metric the run recorded, charted or not: "run" or "slot" by name.
    recorded: dict[str, str] = field(default_factory=dict)

    @property
    def span(self) -> int:
        """Epochs on the x axis: at least one, so an empty run still has a scale."""
        forked = self.lineage[0].epoch + 1 if self.lineage else 0
        return max(self.summary.epochs, forked, 1)


#: The reads `read_run` reports to its ``step`` callback, one call after each.
READ_STEPS = 7


def read_run(
    ledger: Ledger,
    run_id: str,
    metrics: Sequence[str] | None = None,
    step: Callable[[], None] = lambda: None,
) -> RunData:
    """Everything one report needs; `RunNotFound` for an unknown run.

    ``metrics`` names the metrics to chart, in order; by default every metric the
    run records once per epoch (`EpochCompleted`'s and its free-named ones). A name
    the run never recorded is simply not charted: `chart_names` checks names.
    """
    ledger.require_run(run_id)
    try:
        return _read_run(ledger, run_id, metrics, step)
    except (TypeError, ValueError, OverflowError) as exc:
        raise ReportError(
            f"run {run_id} holds a value of the wrong kind ({exc}): only a row made by hand "
            "does; `kasmina verify` names it"
        ) from None


def _read_run(
    ledger: Ledger, run_id: str, metrics: Sequence[str] | None, step: Callable[[], None]
) -> RunData:
    where = f"WHERE run_id = {sql_literal(run_id)}"
    views = ledger.views()
    summary = _summary(ledger, run_id, where)
    forks = _forks(ledger, run_id) if "run_lineage" in views else []
    span = max(summary.epochs, forks[0][2] + 1 if forks else 0, 1)
    bucket = max(1, math.ceil(span / CURVE_BUCKETS))
    step()
    intervals = _intervals(ledger, where)
    step()
    verdicts = _verdicts(ledger, where)
    step()
    evictions: list[Eviction] = []
    unplaced = 0
    for r in _rows(
        ledger, f"SELECT cache, reason, evicted, epoch FROM gc_evictions {where} ORDER BY position"
    ):
        if r[3] is None:
            unplaced += 1
            continue
        evictions.append(Eviction(_str(r[0]), _str(r[1]), _int(r[2]), _int(r[3])))
    step()
    has_endings = "seed_endings" in views
    outcomes = _outcomes(ledger, where, has_endings)
    step()
    readings = _readings(ledger, where, bucket, metrics, views)
    step()
    chosen = list(readings.charts)
    lineage, carried = _lineage(ledger, forks, intervals, bucket, chosen, views)
    step()
    slots = {i.slot_id for i in intervals} | {v.slot_id for v in verdicts}
    slots |= {o.slot_id for o in outcomes} | {c.key[0] for c in readings.alpha}
    for a in lineage:
        slots |= {i.slot_id for i in a.intervals} | {v.slot_id for v in a.verdicts}
        slots |= {c.key[0] for c in a.alpha}
    return RunData(
        summary=summary,
        slots=sorted(slots, key=natural_key),
        intervals=intervals,
        verdicts=verdicts,
        evictions=evictions,
        outcomes=outcomes,
        alpha=readings.alpha,
        charts=readings.charts,
        bucket_epochs=bucket,
        has_endings=has_endings,
        unplaced_evictions=unplaced,
        missing_views=[v for v in OPTIONAL_VIEWS if v not in views],
        metrics=readings.summaries,
        lineage=lineage,
        carried=carried,
        recorded=readings.recorded,
    )


def _intervals(ledger: Ledger, where: str) -> list[Interval]:
    return [
        Interval(_str(r[0]), _opt_str(r[1]), _str(r[2]), _int(r[3]), _opt_int(r[4]))
        for r in _rows(
            ledger,
            "SELECT slot_id, seed_id, stage, from_epoch, to_epoch FROM stage_intervals "
            f"{where} ORDER BY slot_id, from_epoch",
        )
    ]


def _verdicts(ledger: Ledger, where: str) -> list[Verdict]:
    return [
        Verdict(
            _str(r[0]),
            _opt_str(r[1]),
            _int(r[2]),
            _str(r[3]),
            _opt_str(r[4]),
            bool(r[5]),
            tuple(c for c in (_opt_str(r[6]) or "").split(",") if c),
        )
        for r in _rows(
            ledger,
            "SELECT slot_id, seed_id, epoch, gate, target_stage, passed, checks_failed "
            f"FROM gate_evaluations {where} AND epoch IS NOT NULL ORDER BY position",
        )
    ]


def _readings(
    ledger: Ledger,
    where: str,
    bucket: int,
    chosen: Sequence[str] | None,
    views: Collection[str],
    *,
    summaries: bool = True,
) -> Readings:
    """Alpha, every chosen metric's curves and the free-named metrics' summaries.

    A per-slot metric is thinned only when chosen by name; a per-epoch one always,
    since the default charts them all and they are few.
    """
    wanted = None if chosen is None else set(chosen)
    alpha, curves = Thinner(bucket), Thinner(bucket)
    recorded: dict[str, str] = {}
    if "epoch_metrics" in views:
        columns = ", ".join(RUN_COLUMNS)
        for r in _rows(
            ledger, f"SELECT epoch, {columns} FROM epoch_metrics {where} AND epoch IS NOT NULL"
        ):
            for name, value in zip(RUN_COLUMNS, r[1:], strict=True):
                if value is not None:
                    recorded.setdefault(name, RUN)
                    curves.add((RUN, name), _int(r[0]), _float(value))
    columns = ", ".join(SLOT_COLUMNS)
    charted = {n for n in SLOT_COLUMNS if wanted is not None and n in wanted}
    unseen = set(SLOT_COLUMNS)  # once each is seen and none is charted, a row is only alpha
    for r in _rows(
        ledger,
        f"SELECT slot_id, seed_id, epoch, alpha, {columns} FROM seed_timeline {where} "
        "AND epoch IS NOT NULL",
    ):
        slot, epoch = _str(r[0]), _int(r[2])
        if r[3] is not None:
            alpha.add((slot, _str(r[1])), epoch, _float(r[3]))
        if not (unseen or charted):
            continue
        for name, value in zip(SLOT_COLUMNS, r[4:], strict=True):
            if value is not None:
                if name in unseen:
                    unseen.discard(name)
                    recorded.setdefault(name, "slot")
                if name in charted:
                    curves.add((slot, name), epoch, _float(value))
    fields = [n for n in SAMPLE_FIELDS if wanted is not None and n in wanted]
    if fields:
        _sample_fields(ledger, where, fields, views, curves, recorded)
    found: dict[tuple[str | None, str], MetricSummary] = {}
    if "metrics" in views:
        for r in _rows(
            ledger, f"SELECT slot_id, name, epoch, value FROM metrics {where} ORDER BY position"
        ):
            owner, name, at = _opt_str(r[0]), _str(r[1]), _opt_int(r[2])
            value = None if r[3] is None else _float(r[3])
            if summaries:
                summary = found.get((owner, name))
                if summary is None:
                    summary = found[(owner, name)] = MetricSummary(owner, name)
                summary.add(at, value)
            recorded.setdefault(name, RUN if owner is None else "slot")
            if at is None or value is None:
                continue
            if (wanted is None and owner is None) or (wanted is not None and name in wanted):
                curves.add((owner or RUN, name), at, value)
    by_name: dict[str, list[Curve]] = {}
    for curve in curves.curves():
        by_name.setdefault(curve.key[1], []).append(curve)
    if chosen is None:
        free = sorted(n for n, kind in recorded.items() if kind == RUN and n not in RUN_COLUMNS)
        chosen = [n for n in RUN_COLUMNS if n in recorded] + free
    charts = {
        name: sorted(by_name.get(name, []), key=lambda c: natural_key(c.key[0])) for name in chosen
    }
    listed = sorted(
        found.values(),
        key=lambda m: (m.slot_id is not None, natural_key(m.slot_id or ""), m.name),
    )
    return Readings(alpha.curves(), charts, recorded, listed)


def _sample_fields(
    ledger: Ledger,
    where: str,
    fields: Sequence[str],
    views: Collection[str],
    curves: Thinner,
    recorded: dict[str, str],
) -> None:
    """Per-slot metrics from the samples' payloads, over the live events as every view reads.

    The raw JSON value is taken, not a SQL cast, so a NaN or infinity stored as
    text reads as itself rather than as SQLite's 0.
    """
    j = PayloadSql(ledger.dialect)
    source = "live_events" if "live_events" in views else "events"
    picked = ", ".join(j.field(name) for name in fields)
    for r in _rows(
        ledger,
        f"SELECT {j.field('slot_id')}, epoch, {picked} FROM {source} {where} "
        "AND event_type = 'SeedTelemetrySampled' AND epoch IS NOT NULL",
    ):
        for name, value in zip(fields, r[2:], strict=True):
            if value is not None:
                recorded.setdefault(name, "slot")
                curves.add((_str(r[0]), name), _int(r[1]), _float(value))


def chart_names(recorded: dict[str, str], chosen: Sequence[str]) -> list[str]:
    """``chosen`` without repeats; `ReportError` naming any the run(s) never recorded."""
    missing = [name for name in dict.fromkeys(chosen) if name not in recorded]
    if missing:
        have = ", ".join(sorted(recorded)) or "none"
        raise ReportError(
            f"no metric named {', '.join(repr(m) for m in missing)} was recorded (recorded: {have})"
        )
    return list(dict.fromkeys(chosen))


def _forks(ledger: Ledger, run_id: str) -> list[tuple[str, int, int]]:
    """(ancestor, depth, epoch) from the parent back, as `run_lineage` lists them."""
    return [
        (_str(r[0]), _int(r[1]), _int(r[2]))
        for r in _rows(
            ledger,
            "SELECT ancestor_run_id, depth, epoch FROM run_lineage "
            f"WHERE run_id = {sql_literal(run_id)} ORDER BY depth",
        )
    ]


def _lineage(
    ledger: Ledger,
    forks: list[tuple[str, int, int]],
    own: list[Interval],
    bucket: int,
    chosen: Sequence[str],
    views: Collection[str],
) -> tuple[list[Ancestor], list[Interval]]:
    """Each ancestor's rows up to where the line leaves it, oldest first in the walk;
    and the stages the reported run carries on from its parent."""
    ancestors: list[Ancestor] = []
    open_at: dict[str, Interval] = {}
    since: int | None = None
    for run, depth, epoch in reversed(forks):
        where = f"WHERE run_id = {sql_literal(run)} AND epoch <= {epoch}"
        mine = _intervals(ledger, f"WHERE run_id = {sql_literal(run)} AND from_epoch <= {epoch}")
        carried, open_carried = _cut(_carry(open_at, since, mine), epoch)
        intervals, open_at = _cut(mine, epoch)
        readings = _readings(ledger, where, bucket, chosen, views, summaries=False)
        ancestors.append(
            Ancestor(
                run_id=run,
                depth=depth,
                epoch=epoch,
                intervals=intervals,
                carried=carried,
                verdicts=_verdicts(ledger, where),
                alpha=readings.alpha,
                charts=readings.charts,
            )
        )
        open_at = open_carried | open_at
        since = epoch
    ancestors.reverse()
    return ancestors, _carry(open_at, since, own)


def _carry(open_at: dict[str, Interval], since: int | None, own: list[Interval]) -> list[Interval]:
    """The stage each slot was in at the fork epoch ``since``, from the fork's first epoch
    until the fork's first move in that slot (still open if it never moves there)."""
    if since is None:
        return []
    first: dict[str, int] = {}
    for i in own:
        first[i.slot_id] = min(first.get(i.slot_id, i.start), i.start)
    carried = []
    for slot, interval in open_at.items():
        end = first.get(slot)
        if end is None or end > since + 1:
            carried.append(replace(interval, start=since + 1, end=end))
    return carried


def _cut(intervals: list[Interval], epoch: int) -> tuple[list[Interval], dict[str, Interval]]:
    """Intervals up to ``epoch``, a stage still open there ending at ``epoch + 1``; and
    each slot's stage at ``epoch``."""
    kept: list[Interval] = []
    open_at: dict[str, Interval] = {}
    for i in intervals:
        if i.start > epoch:
            continue
        if i.end is None or i.end > epoch:
            open_at[i.slot_id] = i
            i = replace(i, end=epoch + 1)
        kept.append(i)
    return kept, open_at


def natural_key(text: str) -> tuple[tuple[int, int | str], ...]:
    """Sort key that puts r0c2 before r0c10."""
    return tuple(
        (0, int(part)) if part.isdigit() else (1, part) for part in re.split(r"(\d+)", text) if part
    )


def _summary(ledger: Ledger, run_id: str, where: str) -> Summary:
    found = list(
        _rows(
            ledger,
            "SELECT name, seed, status, events, epochs, seeds, fossilized, pruned, evicted, "
            f"final_val_accuracy, started_at, finished_at FROM run_summary {where}",
        )
    )
    if not found:
        raise LedgerError(f"run {run_id!r} has no row in the run_summary view")
    r = found[0]
    return Summary(
        run_id=run_id,
        name=_opt_str(r[0]),
        seed=_opt_int(r[1]),
        status=_str(r[2]),
        events=_int(r[3]),
        epochs=_opt_int(r[4]) or 0,
        seeds=_int(r[5]),
        fossilized=_int(r[6]),
        pruned=_int(r[7]),
        evicted=_int(r[8]),
        final_val_accuracy=None if r[9] is None else _float(r[9]),
        started_at=_time(r[10]),
        finished_at=_time(r[11]),
    )


def _outcomes(ledger: Ledger, where: str, has_endings: bool) -> list[Outcome]:
    endings: dict[tuple[str, str], Ending] = {}
    if has_endings:
        for r in _rows(
            ledger,
            "SELECT slot_id, seed_id, outcome, reason, initiator, improvement, counterfactual, "
            f"params_added FROM seed_endings {where} ORDER BY position",
        ):
            endings[(_str(r[0]), _str(r[1]))] = Ending(
                outcome=_str(r[2]),
                reason=_opt_str(r[3]),
                initiator=_opt_str(r[4]),
                improvement=None if r[5] is None else _float(r[5]),
                counterfactual=None if r[6] is None else _float(r[6]),
                params_added=_opt_int(r[7]),
            )
    return [
        Outcome(
            seed_id=_str(r[0]),
            slot_id=_str(r[1]),
            blueprint_id=_opt_str(r[2]),
            germinated_epoch=_opt_int(r[3]),
            final_stage=_str(r[4]),
            ended_epoch=_opt_int(r[5]),
            ending=endings.get((_str(r[1]), _str(r[0]))),
        )
        for r in _rows(
            ledger,
            "SELECT seed_id, slot_id, blueprint_id, germinated_epoch, final_stage, ended_epoch "
            f"FROM seed_outcomes {where} ORDER BY germinated_epoch, slot_id, seed_id",
        )
    ]


def _rows(ledger: Ledger, query: str) -> Iterator[Row]:
    _, rows = ledger.sql(query)
    return rows


def _str(value: object) -> str:
    return "" if value is None else str(value)


def _opt_str(value: object) -> str | None:
    return None if value is None else str(value)


def _int(value: object) -> int:
    if isinstance(value, bool | int):
        return int(value)
    if isinstance(value, float | Decimal | str):
        return int(value)
    return 0


def _opt_int(value: object) -> int | None:
    return None if value is None else _int(value)


def _float(value: object) -> float:
    """A number from the views; NaN for anything that is not one (a hand-edited row)."""
    if isinstance(value, int | float | Decimal):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return math.nan
    return math.nan


def _time(value: object) -> datetime | None:
    if isinstance(value, datetime):
        return value
    if isinstance(value, str):
        try:
            return datetime.fromisoformat(value)
        except ValueError:
            return None
    return None


__all__ = [
    "Ancestor",
    "MetricSummary",
    "Ending",
    "Eviction",
    "Interval",
    "Outcome",
    "RUN_COLUMNS",
    "Readings",
    "RunData",
    "SAMPLE_FIELDS",
    "SLOT_COLUMNS",
    "Summary",
    "Verdict",
    "chart_names",
    "natural_key",
    "read_run",
]
