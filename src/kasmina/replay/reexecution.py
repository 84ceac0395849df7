"""Re-execution: train a recorded run again and prove it gives the same events.

The run's `RunStarted` says how it was made (config, seed, threads, dataset
digest, host); every policy decision is taken from the recorded
`PolicyDecided` events rather than from the policy (`RecordedPolicy`), so what
is tested is everything else: training, gates, auto-advance, alpha ramps,
memory governance, and the parameter digests the run recorded. The new events
go to a scratch SQLite ledger under the same run id and are compared stream by
stream, ignoring only what differs by construction (event ids, positions,
timestamps, hashes, and so the seal's hashes).
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from itertools import zip_longest
from pathlib import Path
from typing import Any, Protocol

from rich.console import Console

from kasmina.canonical import canonical_value
from kasmina.errors import KasminaError, NotReexecutable, UnverifiedRun
from kasmina.events import (
    CheckpointSaved,
    EpochCompleted,
    PolicyDecided,
    RunFinished,
    RunResumed,
    RunStarted,
    SeedFossilized,
    StoredEvent,
)
from kasmina.ledger import Ledger
from kasmina.ledger.attempts import Attempts
from kasmina.policy import Policy, RecordedPolicy
from kasmina.progress import Progress

#: RunStarted fields that describe the machine, not the run; differences are reported, not failed.
ENVIRONMENT_FIELDS = ("kasmina_version", "python_version", "torch_version", "platform")


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


def recorded_decisions(ledger: Ledger, run_id: str) -> RecordedPolicy:
    """A policy that re-applies the run's `PolicyDecided` decisions, epoch by epoch."""
    attempts = ledger.attempts(run_id)
    decisions = [
        (e.epoch, e.payload)
        for e in ledger.read(run_id)
        if isinstance(e.payload, PolicyDecided)
        and e.epoch is not None
        and not attempts.superseded(e.position)
    ]
    name = decisions[0][1].policy if decisions else "recorded"
    return RecordedPolicy(decisions, name)


def started_of(ledger: Ledger, run_id: str) -> RunStarted:
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


def live_events(
    ledger: Ledger, run_id: str, stream_id: str, attempts: Attempts | None = None
) -> Iterator[StoredEvent]:
    """A stream's events as the run's story has them: without a resumed run's abandoned
    attempts, and without the `RunResumed` bookkeeping that marks them."""
    if attempts is None:
        attempts = ledger.attempts(run_id)
    for e in ledger.read(run_id, stream_id=stream_id):
        if not (isinstance(e.payload, RunResumed) or attempts.superseded(e.position)):
            yield e


def compare(
    recorded: Ledger,
    replayed: Ledger,
    run_id: str,
    report: Reexecution,
    progress: Callable[[int], None] | None = None,
) -> None:
    """Compare every stream of the run in both ledgers; note the first divergence of each.
    `progress` is told the events compared so far."""
    ours, theirs = recorded.attempts(run_id), replayed.attempts(run_id)
    for stream in sorted(_streams(recorded, run_id) | _streams(replayed, run_id)):
        pairs: Iterator[tuple[StoredEvent | None, StoredEvent | None]] = zip_longest(
            live_events(recorded, run_id, stream, ours),
            live_events(replayed, run_id, stream, theirs),
        )
        for version, (a, b) in enumerate(pairs, start=1):
            na = _normalised(a) if a is not None else {}
            nb = _normalised(b) if b is not None else {}
            if na != nb:
                keys = sorted(k for k in set(na) | set(nb) if na.get(k) != nb.get(k))
                if not _same_checkpoint(recorded, replayed, a, b, keys, report):
                    report.divergences.append(Divergence(stream, version, a, b, tuple(keys)))
                    break
            assert a is not None
            report.compared += 1
            report.digests += _digests(a)
            if progress is not None:
                progress(report.compared)


_CHECKPOINT_FILE = frozenset({"payload.digest", "payload.bytes", "payload.path"})


def _same_checkpoint(
    recorded: Ledger,
    replayed: Ledger,
    a: StoredEvent | None,
    b: StoredEvent | None,
    keys: Sequence[str],
    report: Reexecution,
) -> bool:
    """Whether two `CheckpointSaved` that differ only in their file hold the same state
    apart from the policy's own, which re-execution cannot have (see `state_differences`)."""
    if a is None or b is None or not set(keys) <= _CHECKPOINT_FILE:
        return False
    pa, pb = a.payload, b.payload
    if not (isinstance(pa, CheckpointSaved) and isinstance(pb, CheckpointSaved)):
        return False
    from kasmina.checkpoints import state_differences

    try:
        ours = recorded.require_artifacts().get(pa.digest)
        found = state_differences(ours, replayed.require_artifacts().get(pb.digest))
    except KasminaError:
        return False
    if found:
        return False
    note = "checkpoints hold the same state apart from the policy's own, which re-execution "
    note += "replaces with the recorded decisions"
    if note not in report.notes:
        report.notes.append(note)
    return True


class Program(Protocol):
    """The program that wrote a run, as re-execution reaches it (never by importing it).

    `refusal` says why this program cannot rebuild the run on this machine
    (another host network, another dataset), or None; `rerun` trains the run
    again into `scratch` under `run_id`, asking `policy` for every decision.
    """

    def refusal(self, run_id: str, started: RunStarted) -> str | None: ...

    @property
    def notes(self) -> Sequence[str]:
        """What the re-run should report beside its comparison (a code change allowed)."""
        ...

    def rerun(
        self,
        scratch: Ledger,
        started: RunStarted,
        policy: Policy,
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
    """Train the recorded run again on CPU, decisions from the log, and compare the events.

    `console` (the command's stderr) is the re-run's, for its notes and the
    epochs it trains, and shows how far the comparison has gone.
    """
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
    seal = next(
        (
            e.payload
            for e in ledger.read(run_id, stream_id="run")
            if isinstance(e.payload, RunFinished)
        ),
        None,
    )
    if seal is None:
        raise NotReexecutable(f"run {run_id} has no RunFinished: it is unfinished or truncated")
    if seal.status != "completed":
        # Checked before the program loads (its module runs as it is imported). Another
        # status is a crash closed by `kasmina runs close`, a `with run:` an exception left,
        # or the program's own word that it failed: no whole run for a second one to match.
        raise NotReexecutable(
            f"run {run_id} was sealed as {seal.status}, not completed: only a completed "
            "run is re-executed"
        )
    started = started_of(ledger, run_id)
    refusal = program.refusal(run_id, started)
    if refusal is not None:
        raise NotReexecutable(refusal)
    policy = recorded_decisions(ledger, run_id)
    report = Reexecution(run_id)
    report.notes.extend(_environment_notes(started, ledger))
    with tempfile.TemporaryDirectory(prefix="kasmina-reexecute-") as tmp:
        scratch_url = f"sqlite:///{Path(tmp) / 'replayed.db'}"
        with Ledger.open(scratch_url, artifacts=Path(tmp) / "artifacts") as scratch:
            program.rerun(scratch, started, policy, run_id=run_id, console=console)
            # The program's notes (a code change, the machine's differences) go first.
            report.notes[:0] = program.notes
            with Progress("comparing", None, console) as compared:
                compare(ledger, scratch, run_id, report, compared.update)
    if policy.left:
        report.notes.append(f"{policy.left} recorded decisions were never asked for")
    return report


def _environment_notes(started: RunStarted, ledger: Ledger) -> list[str]:
    from kasmina.versions import package_version

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
    "Program",
    "Reexecution",
    "compare",
    "live_events",
    "recorded_decisions",
    "reexecute",
    "started_of",
]
