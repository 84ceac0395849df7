"""Re-execution: train a recorded run again and prove it gives the same events.

The run's `RunStarted` says how it was made (config, seed, threads, dataset
digest, host); every policy decision (germinate, advance, prune, alpha
targets) is taken from the recorded log rather than from the policy, so what
is tested is everything else: training, gates, auto-advance, alpha ramps,
memory governance, and the parameter digests the run recorded. The new events
go to a scratch SQLite ledger under the same run id and are compared stream by
stream, ignoring only what differs by construction (event ids, positions,
timestamps, hashes, and so the seal's hashes).
"""

from __future__ import annotations

import tempfile
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from itertools import zip_longest
from pathlib import Path
from typing import Any, Protocol

from rich.console import Console

from kasmina.alpha import AlphaCurve
from kasmina.canonical import canonical_value
from kasmina.errors import KasminaError, NotReexecutable, UnverifiedRun
from kasmina.events import (
    AlphaTargetSet,
    EpochCompleted,
    Initiator,
    RunFinished,
    RunStarted,
    SeedFossilized,
    SeedGateEvaluated,
    SeedGerminated,
    SeedPruned,
    StoredEvent,
)
from kasmina.ledger import Ledger
from kasmina.runtime.slot import SeedSlot

#: RunStarted fields that describe the machine, not the run; differences are reported, not failed.
ENVIRONMENT_FIELDS = ("kasmina_version", "python_version", "torch_version", "platform")

Decision = tuple[str, Any]


@dataclass(frozen=True)
class Divergence:
    """The first event where one stream of the two runs differs."""

    stream_id: str
    version: int
    recorded: StoredEvent | None
    replayed: StoredEvent | None
    fields: tuple[str, ...]


@dataclass
class Reexecution:
    run_id: str
    compared: int = 0
    digests: int = 0
    divergences: list[Divergence] = field(default_factory=list)
    #: Environment differences and decisions the re-run could not apply.
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.divergences


class LoggedDecisions:
    """A policy that replays the recorded commands of each slot at each epoch."""

    def __init__(self, decisions: dict[tuple[str, int], list[Decision]]) -> None:
        self.decisions = decisions
        self.failures: list[str] = []

    def act(self, slot: SeedSlot, epoch: int, contribution: float | None) -> None:
        for kind, args in self.decisions.pop((slot.slot_id, epoch), []):
            try:
                _apply(slot, kind, args)
            except KasminaError as exc:
                self.failures.append(
                    f"epoch {epoch}, slot {slot.slot_id}: recorded {kind} could not be "
                    f"applied ({exc})"
                )
                return


def _apply(slot: SeedSlot, kind: str, args: Any) -> None:
    if kind == "germinate":
        p: SeedGerminated = args[0]
        slot.germinate(
            p.blueprint_id,
            args[1],
            init_seed=p.init_seed,
            alpha_target=p.alpha_target,
            tempo=p.blend_tempo_epochs,
            curve=AlphaCurve[p.alpha_curve],
        )
    elif kind == "advance":
        slot.advance_stage(args.target_stage)
    elif kind == "prune":
        slot.prune(args.reason, args.initiator)
    elif kind == "schedule_prune":
        a: AlphaTargetSet = args
        slot.schedule_prune(
            a.steps,
            curve=AlphaCurve[a.curve],
            steepness=a.steepness,
            reason=a.reason or "scheduled_prune",
            initiator=a.initiator,
        )
    else:
        t: AlphaTargetSet = args
        initiator: Initiator = t.initiator
        slot.set_alpha_target(
            t.target, t.steps, curve=AlphaCurve[t.curve], steepness=t.steepness, initiator=initiator
        )


def recorded_decisions(ledger: Ledger, run_id: str) -> dict[tuple[str, int], list[Decision]]:
    """Every command a policy gave, by (slot, epoch), in the order it was given."""
    out: dict[tuple[str, int], list[Decision]] = defaultdict(list)
    for e in ledger.read(run_id):
        p = e.payload
        if e.epoch is None or not e.stream_id.startswith("slot/"):
            continue
        key = (e.stream_id[len("slot/") :], e.epoch)
        if isinstance(p, SeedGerminated):
            out[key].append(("germinate", (p, e.seed_id)))
        elif isinstance(p, SeedGateEvaluated) and p.trigger == "command":
            out[key].append(("advance", p))
        elif isinstance(p, SeedPruned) and not p.scheduled:
            out[key].append(("prune", p))
        elif isinstance(p, AlphaTargetSet) and p.initiator != "auto":
            out[key].append(("schedule_prune" if p.prune_ramp else "set_alpha_target", p))
    return out


def _started(ledger: Ledger, run_id: str) -> RunStarted:
    first = next(ledger.read(run_id, stream_id="run"), None)
    if first is None or not isinstance(first.payload, RunStarted):
        raise NotReexecutable(f"run {run_id} does not begin with RunStarted")
    return first.payload


def _normalised(e: StoredEvent) -> dict[str, Any]:
    data = e.payload.model_dump()
    if isinstance(e.payload, RunStarted):
        for name in ENVIRONMENT_FIELDS:
            data.pop(name)
    elif isinstance(e.payload, RunFinished):
        data["seal"] = sorted(data["seal"])
    return {
        "event_type": e.event_type,
        "schema_version": e.schema_version,
        "epoch": e.epoch,
        "seed_id": e.seed_id,
        **{f"payload.{k}": canonical_value(v) for k, v in data.items()},
    }


def _digests(e: StoredEvent) -> int:
    p = e.payload
    if isinstance(p, EpochCompleted):
        return len(p.param_digests)
    return int(isinstance(p, SeedFossilized) and p.param_digest is not None)


def _streams(ledger: Ledger, run_id: str) -> set[str]:
    rows = ledger.store.fetch(
        ledger.store.sql("SELECT DISTINCT stream_id FROM events WHERE run_id = ?"), (run_id,)
    )
    return {str(r[0]) for r in rows}


def compare(recorded: Ledger, replayed: Ledger, run_id: str, report: Reexecution) -> None:
    """Compare every stream of the run in both ledgers; note the first divergence of each."""
    for stream in sorted(_streams(recorded, run_id) | _streams(replayed, run_id)):
        pairs: Iterator[tuple[StoredEvent | None, StoredEvent | None]] = zip_longest(
            recorded.read(run_id, stream_id=stream), replayed.read(run_id, stream_id=stream)
        )
        for version, (a, b) in enumerate(pairs, start=1):
            na = _normalised(a) if a is not None else {}
            nb = _normalised(b) if b is not None else {}
            if na != nb:
                keys = sorted(k for k in set(na) | set(nb) if na.get(k) != nb.get(k))
                report.divergences.append(Divergence(stream, version, a, b, tuple(keys)))
                break
            assert a is not None
            report.compared += 1
            report.digests += _digests(a)


class Program(Protocol):
    """The program that wrote a run, as re-execution reaches it (never by importing it).

    `refusal` says why this program cannot rebuild the run on this machine
    (another host network, another dataset), or None; `rerun` trains the run
    again into `scratch` under `run_id`, asking `policy` for every decision.
    """

    def refusal(self, run_id: str, started: RunStarted) -> str | None: ...

    def rerun(
        self,
        scratch: Ledger,
        started: RunStarted,
        policy: LoggedDecisions,
        *,
        run_id: str,
        console: Console | None,
    ) -> None: ...


def reexecute(
    ledger: Ledger,
    run_id: str,
    program: Program,
    *,
    trust: bool = False,
    console: Console | None = None,
) -> Reexecution:
    """Train the recorded run again on CPU, decisions from the log, and compare the events."""
    ledger.require_run(run_id)
    if not trust:
        verdict = ledger.verify(run_id)
        if not verdict.ok:
            fault = verdict.faults[0]
            raise UnverifiedRun(
                f"{fault.kind} in stream {fault.stream_id}: {fault.detail}; the run's hash "
                "chain does not verify (pass --trust to re-execute it anyway)",
                fault.position,
            )
    started = _started(ledger, run_id)
    refusal = program.refusal(run_id, started)
    if refusal is not None:
        raise NotReexecutable(refusal)
    if not any(isinstance(e.payload, RunFinished) for e in ledger.read(run_id, stream_id="run")):
        raise NotReexecutable(f"run {run_id} has no RunFinished: it is unfinished or truncated")
    decisions = recorded_decisions(ledger, run_id)
    policy = LoggedDecisions(decisions)
    report = Reexecution(run_id)
    report.notes.extend(_environment_notes(started, ledger))
    with tempfile.TemporaryDirectory(prefix="kasmina-reexecute-") as tmp:
        with Ledger.open(f"sqlite:///{Path(tmp) / 'replayed.db'}") as scratch:
            program.rerun(scratch, started, policy, run_id=run_id, console=console)
            compare(ledger, scratch, run_id, report)
    report.notes.extend(policy.failures)
    return report


def _environment_notes(started: RunStarted, ledger: Ledger) -> list[str]:
    from kasmina.ledger.core import package_version

    here = {
        "kasmina_version": package_version("kasmina") or "unknown",
        "torch_version": package_version("torch"),
    }
    notes = []
    for name, value in here.items():
        recorded = getattr(started, name)
        if recorded != value:
            notes.append(f"recorded with {name} {recorded}, re-executed with {value}")
    return notes


__all__ = [
    "ENVIRONMENT_FIELDS",
    "Divergence",
    "LoggedDecisions",
    "Program",
    "Reexecution",
    "compare",
    "recorded_decisions",
    "reexecute",
]
