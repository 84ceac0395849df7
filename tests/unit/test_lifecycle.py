"""The lifecycle machine: derived from the table, one emission site, atomic moves."""

from __future__ import annotations

import ast
from collections.abc import Sequence
from pathlib import Path

import pytest
from transitions import MachineError

from kasmina.errors import InvalidTransition
from kasmina.events import Payload, SeedStageChanged
from kasmina.lifecycle import LIFECYCLE, Lifecycle, MoveContext, Staged, trigger_name
from kasmina.stages import TRANSITIONS, SeedStage, edges

SRC = Path(__file__).resolve().parents[2] / "src" / "kasmina"


class Sink:
    def __init__(self, fail: bool = False) -> None:
        self.fail = fail
        self.batches: list[tuple[str, list[Payload]]] = []

    def emit_many(
        self,
        payloads: Sequence[Payload],
        *,
        stream_id: str,
        epoch: int | None = None,
        seed_id: str | None = None,
    ) -> None:
        if self.fail:
            raise OSError("disk full")
        self.batches.append((stream_id, list(payloads)))


def test_machine_is_built_from_the_table() -> None:
    machine = LIFECYCLE.machine
    assert set(machine.states) == {s.name for s in SeedStage}
    found = {
        (src, t.dest)
        for name, event in machine.events.items()
        for src, ts in event.transitions.items()
        for t in ts
    }
    assert found == {(a.name, b.name) for a, b in edges()}
    assert all(name.startswith("to_") for name in machine.events)  # no auto transitions


@pytest.mark.parametrize("source", list(SeedStage), ids=lambda s: s.name)
def test_every_table_edge_moves_and_every_other_pair_is_refused(source: SeedStage) -> None:
    machine = Lifecycle()
    for target in SeedStage:
        model = Staged("x")
        machine.join(model, source)
        sink = Sink()
        if target in TRANSITIONS[source]:
            change = machine.move(
                model, target, trigger="command", context=MoveContext(), emitter=sink
            )
            assert model.stage is target
            assert sink.batches == [("slot/x", [change])]
        else:
            with pytest.raises(InvalidTransition) as info:
                machine.move(model, target, trigger="command", context=MoveContext(), emitter=sink)
            assert (info.value.from_stage, info.value.to_stage, info.value.slot_id) == (
                source.name,
                target.name,
                "x",
            )
            assert model.stage is source and sink.batches == []


@pytest.mark.parametrize("source", list(SeedStage), ids=lambda s: s.name)
def test_the_machine_itself_refuses_every_pair_outside_the_table(source: SeedStage) -> None:
    """Fired directly, past `move`'s own table check: the machine must hold the rule too."""
    machine = Lifecycle()
    for target in SeedStage:
        model = Staged("x")
        machine.join(model, source)
        sink = Sink()
        event = machine.machine.events.get(trigger_name(target))
        kwargs = {"batch": ("moved",), "emitter": sink, "context": MoveContext()}
        if target in TRANSITIONS[source]:
            assert event is not None and event.trigger(model, **kwargs) is True
            assert model.stage is target and sink.batches == [("slot/x", ["moved"])]
            continue
        if event is not None:  # a target no edge reaches has no trigger at all
            with pytest.raises(MachineError, match=f"from state {source.name}"):
                event.trigger(model, **kwargs)
        assert model.stage is source and sink.batches == []


def test_a_failed_record_leaves_the_stage_and_skips_side_effects() -> None:
    model = Staged("x")
    LIFECYCLE.join(model)
    effects: list[str] = []
    with pytest.raises(OSError):
        LIFECYCLE.move(
            model,
            SeedStage.GERMINATED,
            trigger="command",
            context=MoveContext(),
            emitter=Sink(fail=True),
            on_moved=lambda: effects.append("ran"),
        )
    assert model.stage is SeedStage.DORMANT and effects == []
    LIFECYCLE.leave(model)


def test_before_and_after_events_travel_in_the_same_batch() -> None:
    from kasmina.events import EpochCompleted

    model = Staged("y")
    LIFECYCLE.join(model)
    sink = Sink()
    first, last = EpochCompleted(), EpochCompleted(val_loss=1.0)
    change = LIFECYCLE.move(
        model,
        SeedStage.GERMINATED,
        trigger="command",
        context=MoveContext(alpha=0.0),
        emitter=sink,
        before=[first],
        after=[last],
    )
    assert sink.batches == [("slot/y", [first, change, last])]
    LIFECYCLE.leave(model)


def test_joining_is_idempotent_and_leaving_forgets() -> None:
    model = Staged("z")
    LIFECYCLE.join(model)
    LIFECYCLE.join(model)
    count = sum(1 for m in LIFECYCLE.machine.models if m is model)
    assert count == 1
    LIFECYCLE.leave(model)
    assert all(m is not model for m in LIFECYCLE.machine.models)


def test_trigger_names() -> None:
    assert trigger_name(SeedStage.FOSSILIZED) == "to_fossilized"


def test_seed_stage_changed_is_built_in_exactly_one_place() -> None:
    """The old code base built this payload by hand in seven places; never again."""
    sites: list[str] = []
    for path in SRC.rglob("*.py"):
        tree = ast.parse(path.read_text(), filename=str(path))
        for node in ast.walk(tree):
            if not isinstance(node, ast.Call):
                continue
            func = node.func
            name = (
                func.id
                if isinstance(func, ast.Name)
                else (
                    func.value.id
                    if isinstance(func, ast.Attribute) and isinstance(func.value, ast.Name)
                    else None
                )
            )
            if name == "SeedStageChanged":
                sites.append(f"{path.relative_to(SRC)}:{node.lineno}")
            if (
                isinstance(func, ast.Name)
                and func.id in ("event_from_dict", "load_payload")
                and node.args
                and isinstance(node.args[0], ast.Constant)
                and node.args[0].value == "SeedStageChanged"
            ):
                sites.append(f"{path.relative_to(SRC)}:{node.lineno}")
    assert len(sites) == 1 and sites[0].startswith("lifecycle.py:"), sites
    assert SeedStageChanged.__name__ in (SRC / "lifecycle.py").read_text()
