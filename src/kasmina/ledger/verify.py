"""Verification: recompute every hash, walk every chain, check every seal.

A run is read once, in position order, keeping only the last version and
hash of each stream, so memory grows with the number of streams, not events.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, cast

from kasmina.canonical import GENESIS_HASH, chain_hash, envelope_text, quote, quoted_envelope
from kasmina.ledger.store import Row

if TYPE_CHECKING:
    from kasmina.ledger.store import Store

FaultKind = Literal[
    "hash_mismatch",
    "broken_link",
    "version_gap",
    "out_of_order",
    "seal_mismatch",
    "seal_missing_stream",
    "seal_unknown_stream",
    "after_seal",
    "bad_seal",
]


@dataclass(frozen=True, slots=True)
class Fault:
    run_id: str
    stream_id: str
    position: int | None
    version: int | None
    kind: FaultKind
    detail: str

    def __str__(self) -> str:
        where = f"run {self.run_id} stream {self.stream_id}"
        if self.position is not None:
            where += f" position {self.position} version {self.version}"
        return f"{self.kind}: {where}: {self.detail}"


@dataclass(frozen=True, slots=True)
class RunCheck:
    run_id: str
    events: int
    streams: int
    sealed: bool


@dataclass(frozen=True, slots=True)
class VerifyReport:
    runs: list[RunCheck] = field(default_factory=list)
    faults: list[Fault] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.faults

    @property
    def events(self) -> int:
        return sum(r.events for r in self.runs)


RowSource = Callable[..., Iterator[Row]]


def verify_runs(store: Store, run_ids: Iterable[str], rows: RowSource) -> VerifyReport:
    report = VerifyReport()
    for run_id in run_ids:
        checker = ChainChecker(store, run_id)
        for row in rows(run_id):
            checker.check(row)
        report.runs.append(checker.result())
        report.faults.extend(checker.faults)
    return report


class ChainChecker:
    """Checks one run's rows, fed in position order; the one implementation of `verify`.

    It keeps only the last version and hash of each stream, so memory grows
    with the number of streams, not events. Replay feeds it the rows it folds
    and resumes it from a snapshot through `heads`.
    """

    __slots__ = (
        "_payload_text",
        "_recorded_at_text",
        "_quoted",
        "count",
        "faults",
        "heads",
        "run_id",
        "sealed",
        "store",
    )

    def __init__(
        self,
        store: Store,
        run_id: str,
        *,
        heads: dict[str, tuple[int, str]] | None = None,
        sealed: bool = False,
        count: int = 0,
    ) -> None:
        self.store = store
        self.run_id = run_id
        self.heads: dict[str, tuple[int, str]] = dict(heads or {})
        self.sealed = sealed
        self.count = count
        self.faults: list[Fault] = []
        self._payload_text = store.payload_text
        self._recorded_at_text = store.recorded_at_text
        #: JSON literals of the strings that repeat (run, streams, types, seeds).
        self._quoted: dict[str | None, str] = {None: "null"}

    def _fault(
        self, stream: str, position: int, version: int, kind: FaultKind, detail: str
    ) -> None:
        self.faults.append(Fault(self.run_id, stream, position, version, kind, detail))

    def check(self, row: Row) -> bool:
        """Check one row (14 columns, the ledger's order); True when it added no fault.

        The common case (the next version of its stream, linked, well typed,
        not a seal) takes a lean path; anything else, and any row whose hash
        does not match, goes through `_check_fully`, which names each fault.
        """
        (_, event_id, run_id, stream, version, event_type, schema_version, epoch,
         seed_id, payload, recorded_at, prev_hash, stored_hash,
         rank) = cast(tuple[Any, ...], row)  # fmt: skip
        head = self.heads.get(stream)
        last_version, last_hash = head if head is not None else (0, GENESIS_HASH)
        if (
            self.sealed
            or type(version) is not int
            or version != last_version + 1
            or prev_hash != last_hash
            or event_type == "RunFinished"
            or type(schema_version) is not int
            or not (epoch is None or type(epoch) is int)
            or not (rank is None or type(rank) is int)
        ):
            return self._check_fully(row)
        quoted = self._quoted
        text = quoted_envelope(
            quote(event_id),
            quoted.get(run_id) or self._quote(run_id),
            quoted.get(stream) or self._quote(stream),
            version,
            quoted.get(event_type) or self._quote(event_type),
            schema_version,
            "null" if epoch is None else str(epoch),
            quoted.get(seed_id) or self._quote(seed_id),
            self._payload_text(payload),
            quote(self._recorded_at_text(recorded_at)),
            f'"{prev_hash}"',
            rank,
        )
        if chain_hash(prev_hash, text) != stored_hash:
            return self._check_fully(row)
        self.count += 1
        self.heads[stream] = (version, stored_hash)
        return True

    def _quote(self, text: str) -> str:
        literal = self._quoted[text] = quote(text)
        return literal

    def _check_fully(self, row: Row) -> bool:
        found = len(self.faults)
        self.count += 1
        position = int(row[0])  # type: ignore[call-overload]
        stream = str(row[3])
        version = int(row[4])  # type: ignore[call-overload]
        event_type = str(row[5])
        prev_hash = str(row[11])
        stored_hash = str(row[12])
        if self.sealed:
            self._fault(
                stream,
                position,
                version,
                "after_seal",
                f"{event_type} recorded after the run's RunFinished seal",
            )
        last_version, last_hash = self.heads.get(stream, (0, GENESIS_HASH))
        if version <= last_version:
            self._fault(
                stream, position, version, "out_of_order", f"version {version} after {last_version}"
            )
        elif version != last_version + 1:
            self._fault(
                stream,
                position,
                version,
                "version_gap",
                f"versions {last_version + 1}..{version - 1} are missing",
            )
        if prev_hash != last_hash:
            self._fault(
                stream,
                position,
                version,
                "broken_link",
                "prev_hash does not match the previous event's hash",
            )
        store = self.store
        text = envelope_text(
            event_id=str(row[1]),
            run_id=str(row[2]),
            stream_id=stream,
            version=version,
            event_type=event_type,
            schema_version=int(row[6]),  # type: ignore[call-overload]
            epoch=None if row[7] is None else int(row[7]),  # type: ignore[call-overload]
            seed_id=None if row[8] is None else str(row[8]),
            payload_text=store.payload_text(row[9]),
            recorded_at=store.recorded_at_text(row[10]),
            prev_hash=prev_hash,
            rank=None if row[13] is None else int(row[13]),  # type: ignore[call-overload]
        )
        if chain_hash(prev_hash, text) != stored_hash:
            self._fault(
                stream,
                position,
                version,
                "hash_mismatch",
                "the row's content does not match its hash",
            )
        if event_type == "RunFinished":
            self.faults.extend(
                _check_seal(self.run_id, stream, position, version, row, store, self.heads)
            )
            self.sealed = True
        self.heads[stream] = (version, stored_hash)
        return len(self.faults) == found

    def result(self) -> RunCheck:
        return RunCheck(self.run_id, self.count, len(self.heads), self.sealed)


def _check_seal(
    run_id: str,
    stream: str,
    position: int,
    version: int,
    row: Row,
    store: Store,
    heads: dict[str, tuple[int, str]],
) -> list[Fault]:
    payload = store.payload_value(row[9])
    seal = payload.get("seal") if isinstance(payload, dict) else None
    if not isinstance(seal, dict):
        return [Fault(run_id, stream, position, version, "bad_seal", "RunFinished has no seal")]
    faults: list[Fault] = []
    for sealed_stream, sealed_hash in sorted(seal.items()):
        head = heads.get(sealed_stream)
        if head is None:
            faults.append(
                Fault(
                    run_id,
                    sealed_stream,
                    None,
                    None,
                    "seal_missing_stream",
                    "the seal names a stream with no events (deleted?)",
                )
            )
        elif head[1] != sealed_hash:
            faults.append(
                Fault(
                    run_id,
                    sealed_stream,
                    None,
                    None,
                    "seal_mismatch",
                    f"sealed head {str(sealed_hash)[:12]}… but the stream ends at "
                    f"version {head[0]} ({head[1][:12]}…): events truncated or altered",
                )
            )
    for live_stream in sorted(set(heads) - set(seal)):
        faults.append(
            Fault(
                run_id,
                live_stream,
                None,
                None,
                "seal_unknown_stream",
                "stream has events before the seal but is not in it",
            )
        )
    return faults


def report_json(report: VerifyReport) -> str:
    return json.dumps(
        {
            "ok": report.ok,
            "events": report.events,
            "runs": [
                {"run_id": r.run_id, "events": r.events, "streams": r.streams, "sealed": r.sealed}
                for r in report.runs
            ],
            "faults": [
                {
                    "run_id": f.run_id,
                    "stream_id": f.stream_id,
                    "position": f.position,
                    "version": f.version,
                    "kind": f.kind,
                    "detail": f.detail,
                }
                for f in report.faults
            ],
        },
        indent=2,
    )
