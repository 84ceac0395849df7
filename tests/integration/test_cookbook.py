"""Every recipe in docs/sql.md, on SQLite and PostgreSQL, against answers worked out in Python.

The recipes are read out of the page itself, so the page cannot rot. Each one
must give rows for the demo run (a recipe that answers nothing proves
nothing), the same rows on both databases, and the rows its oracle below
computes from the events, the replay fold, or the code's transition table.
"""

from __future__ import annotations

import itertools
import json
import re
import uuid
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable
from decimal import Decimal
from pathlib import Path
from statistics import mean
from typing import Any

import pytest
import rawdb
from conftest import DEMO_RUN
from helpers import copy_run

from kasmina.events import StoredEvent
from kasmina.ledger import Ledger
from kasmina.recipes import example
from kasmina.stages import SeedStage, is_legal

PAGE = Path(__file__).resolve().parents[2] / "docs" / "sql.md"
RECIPE = re.compile(r"```sql\n-- recipe: ([a-z-]+)\n(.*?)```", re.S)
RECIPES = dict(RECIPE.findall(PAGE.read_text()))
#: What the recipes that take parameters are asked: the page's own `-- e.g.` lines.
PARAMS = {name: example(name) for name in RECIPES if example(name)}
Row = tuple[Any, ...]


def _plain(value: object) -> object:
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, Decimal):
        value = float(value)
    if isinstance(value, float):
        return round(value, 6)
    return getattr(value, "name", value)


def _normal(rows: Iterable[Iterable[object]]) -> list[Row]:
    return sorted((tuple(_plain(v) for v in row) for row in rows), key=repr)


class Run:
    """The demo run's events, with the derived facts several oracles share."""

    def __init__(self, events: list[StoredEvent]) -> None:
        self.events = events
        self.moves = self.of("SeedStageChanged")
        self.blueprint = {e.seed_id: e.payload.blueprint_id for e in self.of("SeedGerminated")}
        self.intervals: list[tuple[str, str | None, str, int, int | None]] = []
        by_slot: dict[str, list[StoredEvent]] = defaultdict(list)
        for move in self.moves:
            by_slot[move.payload.slot_id].append(move)
        for slot, moves in by_slot.items():
            for move, after in zip(moves, [*moves[1:], None], strict=True):
                self.intervals.append(
                    (
                        slot,
                        move.seed_id,
                        move.payload.to_stage.name,
                        _epoch(move),
                        None if after is None else _epoch(after),
                    )
                )

    def of(self, event_type: str) -> list[StoredEvent]:
        return [e for e in self.events if e.event_type == event_type]

    def closed(self, stage: str | None = None) -> list[tuple[str, str | None, str, int, int]]:
        return [
            (slot, seed, s, a, b)
            for slot, seed, s, a, b in self.intervals
            if b is not None and (stage is None or s == stage)
        ]

    def final_stage(self, seed_id: str | None) -> str:
        ends = [
            m.payload.to_stage.name
            for m in self.moves
            if m.seed_id == seed_id
            and m.payload.to_stage.name not in ("EMBARGOED", "RESETTING", "DORMANT")
        ]
        return ends[-1]

    def ended_epoch(self, seed_id: str | None) -> int | None:
        ends = [
            _epoch(e)
            for e in self.of("SeedFossilized") + self.of("SeedPruned")
            if e.seed_id == seed_id
        ]
        return min(ends) if ends else None

    def endings(self) -> list[StoredEvent]:
        return sorted(self.of("SeedFossilized") + self.of("SeedPruned"), key=lambda e: e.position)


def _epoch(event: StoredEvent) -> int:
    assert event.epoch is not None
    return event.epoch


def run_overview(run: Run) -> list[Row]:
    epochs = [e for e in run.events if e.epoch is not None]
    return [
        (
            DEMO_RUN,
            run.of("RunStarted")[0].payload.name,
            run.of("RunFinished")[0].payload.status,
            max(_epoch(e) for e in epochs) + 1,
            len(run.of("SeedGerminated")),
            len(run.of("SeedFossilized")),
            len(run.of("SeedPruned")),
            sum(e.payload.evicted for e in run.of("CacheEvicted")),
            run.of("EpochCompleted")[-1].payload.val_accuracy,
        )
    ]


def seed_moves(run: Run) -> list[Row]:
    return [
        (
            DEMO_RUN,
            m.epoch,
            m.payload.from_stage,
            m.payload.to_stage,
            m.payload.trigger,
            m.payload.alpha,
            m.payload.accuracy_delta,
        )
        for m in run.moves
        if m.seed_id == PARAMS["seed-moves"]["seed"]
    ]


def epochs_in_stage(run: Run) -> list[Row]:
    total: Counter[tuple[str | None, str]] = Counter()
    for _, seed, stage, a, b in run.closed():
        if stage != "DORMANT":
            total[seed, stage] += b - a
    return [(DEMO_RUN, seed, stage, n) for (seed, stage), n in total.items()]


def _blends_in(run: Run) -> set[tuple[str | None, int]]:
    """(seed, epoch) of each move into BLENDING from TRAINING; a fade-out comes from HOLDING."""
    return {
        (m.seed_id, _epoch(m))
        for m in run.moves
        if m.payload.from_stage.name == "TRAINING" and m.payload.to_stage.name == "BLENDING"
    }


def blending_per_blueprint(run: Run) -> list[Row]:
    spans: dict[str, list[int]] = defaultdict(list)
    blends_in = _blends_in(run)
    for _, seed, _, a, b in run.closed("BLENDING"):
        if (seed, a) in blends_in:
            spans[run.blueprint[seed]].append(b - a)
    return [(bp, len(s), mean(s), min(s), max(s)) for bp, s in spans.items()]


def prune_reasons(run: Run) -> list[Row]:
    rows = []
    for e in run.of("SeedPruned"):
        (move,) = [
            m for m in run.moves if m.seed_id == e.seed_id and m.payload.to_stage.name == "PRUNED"
        ]
        p = e.payload
        rows.append(
            (
                DEMO_RUN,
                e.seed_id,
                p.blueprint_id,
                move.payload.from_stage,
                e.epoch,
                p.reason,
                p.initiator,
                p.auto_pruned,
                p.scheduled,
                move.payload.alpha,
                p.epochs_total,
            )
        )
    return rows


def pruned_soon_after_blending(run: Run) -> list[Row]:
    return [
        (DEMO_RUN, b.seed_id, b.epoch, p.epoch)
        for b in run.moves
        if (b.seed_id, _epoch(b)) in _blends_in(run)
        for p in run.moves
        if p.seed_id == b.seed_id
        and p.payload.to_stage.name == "PRUNED"
        and _epoch(p) - _epoch(b) <= 3
    ]


def blueprint_success(run: Run) -> list[Row]:
    final: dict[str, list[str]] = defaultdict(list)
    for seed, bp in run.blueprint.items():
        final[bp].append(run.final_stage(seed))
    rows = []
    for bp, stages in final.items():
        fossils, prunes = stages.count("FOSSILIZED"), stages.count("PRUNED")
        rate = fossils / (fossils + prunes) if fossils + prunes else None
        rows.append((bp, len(stages), fossils, prunes, rate))
    return rows


def counterfactual_vs_blending(run: Run) -> list[Row]:
    rows = []
    for e in run.endings():
        p = e.payload
        gap = (
            None
            if p.counterfactual is None or p.blending_delta is None
            else p.counterfactual - p.blending_delta
        )
        outcome = "FOSSILIZED" if e.event_type == "SeedFossilized" else "PRUNED"
        rows.append(
            (DEMO_RUN, e.seed_id, p.blueprint_id, outcome, p.counterfactual, p.blending_delta, gap)
        )
    return rows


def failing_checks(run: Run) -> list[Row]:
    failures: dict[tuple[str, str], list[str | None]] = defaultdict(list)
    for e in run.of("SeedGateEvaluated"):
        for check in e.payload.checks_failed:
            failures[e.payload.gate, check].append(e.seed_id)
    return [(gate, check, len(seeds), len(set(seeds))) for (gate, check), seeds in failures.items()]


def gate_attempts(run: Run) -> list[Row]:
    verdicts: dict[tuple[str | None, str], list[bool]] = defaultdict(list)
    for e in run.of("SeedGateEvaluated"):
        verdicts[e.seed_id, e.payload.target_stage.name].append(e.payload.passed)
    return [
        (DEMO_RUN, seed, stage, len(v), sum(v))
        for (seed, stage), v in verdicts.items()
        if len(v) > 1
    ]


def alpha_curve(run: Run) -> list[Row]:
    return [
        (DEMO_RUN, e.epoch, e.payload.stage, e.payload.alpha, e.payload.alpha_target)
        for e in run.of("SeedTelemetrySampled")
        if e.seed_id == PARAMS["alpha-curve"]["seed"]
        and e.payload.stage.name in ("BLENDING", "HOLDING")
    ]


def weak_gradients(run: Run) -> list[Row]:
    return [
        (
            DEMO_RUN,
            m.seed_id,
            m.epoch,
            m.payload.to_stage,
            m.payload.grad_ratio,
            m.payload.has_vanishing,
            m.payload.has_exploding,
        )
        for m in run.moves
        if m.payload.to_stage.name in ("BLENDING", "HOLDING")
        and (m.payload.has_vanishing or m.payload.has_exploding or m.payload.grad_ratio < 0.5)
    ]


def slots_at_epoch(run: Run) -> list[Row]:
    at = int(PARAMS["slots-at-epoch"]["epoch"])
    return [
        (DEMO_RUN, slot, stage, None if stage == "DORMANT" else seed, a)
        for slot, seed, stage, a, b in run.intervals
        if a <= at and (b is None or b > at)
    ]


def lifespan(run: Run) -> list[Row]:
    spans: dict[str, list[int]] = defaultdict(list)
    for e in run.of("SeedGerminated"):
        ended = run.ended_epoch(e.seed_id)
        if ended is not None:
            spans[run.final_stage(e.seed_id)].append(ended - _epoch(e))
    return [(stage, len(s), mean(s), max(s)) for stage, s in spans.items()]


def rates_per_window(run: Run) -> list[Row]:
    counts: dict[int, Counter[str]] = defaultdict(Counter)
    for m in run.moves:
        counts[_epoch(m) // 10 * 10][m.payload.to_stage.name] += 1
    return [(DEMO_RUN, w, c["GERMINATED"], c["PRUNED"], c["FOSSILIZED"]) for w, c in counts.items()]


def growth(run: Run) -> list[Row]:
    fossils = run.of("SeedFossilized")
    return [(DEMO_RUN, len(fossils), sum(e.payload.params_added for e in fossils))]


def evictions_per_epoch(run: Run) -> list[Row]:
    groups: dict[tuple[int, str, str], list[int]] = defaultdict(list)
    for e in run.of("CacheEvicted"):
        groups[_epoch(e), e.payload.cache, e.payload.reason].append(e.payload.evicted)
    return [
        (DEMO_RUN, epoch, cache, reason, len(n), sum(n))
        for (epoch, cache, reason), n in groups.items()
    ]


def accuracy_around_fossilization(run: Run) -> list[Row]:
    accuracy = {e.epoch: e.payload.val_accuracy for e in run.of("EpochCompleted")}
    return [
        (DEMO_RUN, e.seed_id, e.epoch, accuracy[_epoch(e) - 1], accuracy[_epoch(e) + 1])
        for e in run.of("SeedFossilized")
    ]


def own_metric(run: Run) -> list[Row]:
    """The live seeds of each epoch, read from the EpochCompleted payloads, not the view."""
    name = PARAMS["own-metric"]["metric"]
    return [
        (DEMO_RUN, e.epoch, e.payload.metrics[name])
        for e in run.of("EpochCompleted")
        if name in e.payload.metrics
    ]


def illegal_moves(run: Run) -> list[Row]:
    """Every recorded move checked against the code's table, not the view's copy of it."""
    return [(sum(not is_legal(m.payload.from_stage, m.payload.to_stage) for m in run.moves),)]


def decision_effects(run: Run) -> list[Row]:
    """Every event naming a decision, matched to that decision in Python."""
    decided = {e.payload.decision_id: e.payload for e in run.of("PolicyDecided")}
    return [
        (DEMO_RUN, d.decision_id, d.action, d.accepted, e.event_type, e.epoch)
        for e in run.events
        if e.event_type != "PolicyDecided"
        and (d := decided.get(getattr(e.payload, "decision_id", None) or "")) is not None
    ]


ORACLES: dict[str, Callable[[Run], list[Row]]] = {
    name.replace("_", "-"): fn
    for name, fn in list(globals().items())
    if callable(fn) and name.replace("_", "-") in RECIPES
}


@pytest.fixture(scope="module")
def run(demo_ledgers: dict[str, Ledger]) -> Run:
    return Run(list(demo_ledgers["sqlite"].read(DEMO_RUN)))


def test_the_cookbook_has_a_dozen_recipes_each_with_an_oracle() -> None:
    assert len(RECIPES) >= 12
    assert set(ORACLES) == set(RECIPES)
    assert set(PARAMS) == {"seed-moves", "alpha-curve", "slots-at-epoch", "own-metric"}


@pytest.mark.parametrize("name", sorted(RECIPES))
def test_recipe_gives_the_oracle_rows_on_both_databases(
    demo_ledgers: dict[str, Ledger], run: Run, name: str
) -> None:
    expected = _normal(ORACLES[name](run))
    assert expected, f"{name} answers nothing for the demo run"
    for backend, ledger in demo_ledgers.items():
        _, rows = ledger.sql(RECIPES[name], params=PARAMS.get(name))
        assert _normal(rows) == expected, backend


def test_slots_at_epoch_agrees_with_the_replay_fold(demo_ledgers: dict[str, Ledger]) -> None:
    ledger = demo_ledgers["postgres"]
    at = PARAMS["slots-at-epoch"]
    state = ledger.replay(DEMO_RUN, until_epoch=int(at["epoch"]))
    _, rows = ledger.sql(RECIPES["slots-at-epoch"], params=at)
    assert [(slot, stage, seed) for _, slot, stage, seed, _ in rows] == [
        (slot.slot_id, slot.stage.name, slot.seed_id) for slot in state.values()
    ]


#: Stage changes a writer around kasmina adds: two outside the table, one inside it.
FORGED = [
    (SeedStage.DORMANT, SeedStage.FOSSILIZED),
    (SeedStage.TRAINING, SeedStage.BLENDING),
    (SeedStage.PRUNED, SeedStage.BLENDING),
]
COLUMNS = (
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
)


def _forge_moves(url: str, run_id: str, pairs: list[tuple[SeedStage, SeedStage]]) -> None:
    """INSERT stage changes straight into the table (the hash is junk: `verify` would see it)."""
    names = ", ".join(COLUMNS)
    (first,) = rawdb.run(
        url,
        f"SELECT {names} FROM events WHERE run_id = ? AND "
        "event_type = 'SeedStageChanged' ORDER BY position LIMIT 1",
        (run_id,),
    )
    row = dict(zip(COLUMNS, first, strict=True))
    stored = row["payload"]  # JSONB comes back parsed, SQLite's JSON text does not
    payload = stored if isinstance(stored, dict) else json.loads(str(stored))
    ((top,),) = rawdb.run(
        url,
        "SELECT MAX(version) FROM events WHERE run_id = ? AND stream_id = ?",
        (run_id, row["stream_id"]),
    )
    rawdb.writable_events(url)
    for n, (a, b) in enumerate(pairs, start=1):
        version = int(top) + n  # type: ignore[call-overload]
        forged = {
            **row,
            "event_id": str(uuid.uuid4()),
            "version": version,
            "payload": json.dumps({**payload, "from_stage": a.name, "to_stage": b.name}),
            "hash": "0" * 64,
        }
        rawdb.run(
            url,
            f"INSERT INTO events ({names}) VALUES ({', '.join('?' * len(forged))})",
            list(forged.values()),
        )


def test_illegal_moves_counts_the_moves_written_around_kasmina(
    demo_ledgers: dict[str, Ledger], db_url: str
) -> None:
    """On the demo the count is 0, which a recipe that counts nothing also gives."""
    with Ledger.open(db_url) as ledger:
        copy_run(demo_ledgers["sqlite"], ledger, DEMO_RUN, DEMO_RUN)
        _forge_moves(db_url, DEMO_RUN, FORGED)
        forged = Run(list(ledger.read(DEMO_RUN)))
        expected = illegal_moves(forged)
        assert expected == [(sum(not is_legal(a, b) for a, b in FORGED),)] != [(0,)]
        _, rows = ledger.sql(RECIPES["illegal-moves"])
        assert _normal(rows) == _normal(expected)


def test_a_fade_out_is_not_counted_as_blending_in(db_url: str) -> None:
    """`Prune(slot, steps=N)` takes a held seed back through BLENDING: recipes 4 and 6 counted
    that second BLENDING as a blend (two "seeds" for one, and a prune "soon after blending")."""
    from kasmina.events import SeedGerminated, SeedPruned, SeedStageChanged, slot_stream

    with Ledger.open(db_url) as ledger:
        run = ledger.start_run("fade", seed=0, run_id="fade")
        stream = slot_stream("a")
        path = ["DORMANT", "GERMINATED", "TRAINING", "BLENDING", "HOLDING", "BLENDING", "PRUNED"]
        epochs = [0, 1, 3, 6, 8, 10]
        run.recorder.emit(
            SeedGerminated(slot_id="a", blueprint_id="mlp", params=10), stream_id=stream,
            epoch=0, seed_id="s",
        )  # fmt: skip
        for (a, b), epoch in zip(itertools.pairwise(path), epochs, strict=True):
            move = SeedStageChanged(
                slot_id="a", from_stage=SeedStage[a], to_stage=SeedStage[b], trigger="command",
                alpha=0.5,
            )  # fmt: skip
            run.recorder.emit(move, stream_id=stream, epoch=epoch, seed_id="s")
        run.recorder.emit(
            SeedPruned(slot_id="a", reason="faded", scheduled=True), stream_id=stream,
            epoch=10, seed_id="s",
        )  # fmt: skip
        run.finish()
        _, blends = ledger.sql(RECIPES["blending-per-blueprint"])
        assert _normal(blends) == [("mlp", 1, 3.0, 3, 3)]  # BLENDING from epoch 3 to 6
        _, soon = ledger.sql(RECIPES["pruned-soon-after-blending"])
        assert list(soon) == []
