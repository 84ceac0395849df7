"""Anchors: the heads of a run or of the whole ledger, written to a file kept elsewhere.

What the database alone cannot prove, an anchor proves against a copy taken
earlier: that every event it covered is still there, unchanged, and that the
ledger has only grown since. Each stream's chain commits to every event
before its head, so the heads (each stream's last version and hash) cover a
run's whole history; the last run start covers the ledger's chain of runs.
A tail cut after the anchor is a head the ledger no longer holds; a run cut,
extended and sealed again is a head whose hash changed.

An anchor is JSON. Signed (with ``KASMINA_SIGNING_KEY``), it carries an
Ed25519 signature over the RFC 8785 text of everything else in it, so it
cannot be edited to match a forged ledger either; keep it, or its public
key, where the database's administrators cannot write.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from kasmina.errors import SigningError
from kasmina.events import RUN_STREAM
from kasmina.jcs import jcs_text
from kasmina.ledger.heads import STREAM_HEADS, STREAM_HEADS_0013, event_at
from kasmina.ledger.store import hash_text
from kasmina.ledger.verify import Fault, FaultKind, RunStartChain, run_formats

if TYPE_CHECKING:
    from kasmina.ledger.core import Ledger
    from kasmina.signing import SigningKey

ANCHOR_VERSION = 1
#: Faults of the anchor itself rather than of one run.
LEDGER = "*"

_ANY = "SELECT 1 FROM events WHERE run_id = ? LIMIT 1"


class AnchoredRun(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    format: int
    events: int
    #: stream id -> [version, hash] of its last event.
    heads: dict[str, tuple[int, str]]


class RunStarts(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    count: int
    last: str | None


class AnchorSignature(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    algorithm: str
    public_key: str
    value: str


class Anchor(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    kasmina_anchor: int = ANCHOR_VERSION
    created_at: str
    #: The run anchored, or None for the whole ledger.
    run_id: str | None
    runs: dict[str, AnchoredRun]
    #: The whole ledger only: how many runs had started, and the last start's hash.
    run_starts: RunStarts | None = None
    signature: AnchorSignature | None = Field(default=None)

    def signed_text(self) -> str:
        """What the signature covers: RFC 8785 text of the anchor without its signature."""
        return jcs_text(self.model_dump(mode="json", exclude={"signature"}))


def make_anchor(ledger: Ledger, run_id: str | None, key: SigningKey | None) -> Anchor:
    """The heads of `run_id` (or of every run), signed when a key is given.

    Refused when the ledger does not verify: an anchor vouches for what it
    covers, and a fault in it would be vouched for too.
    """
    report = ledger.verify(run_id)
    if not report.ok:
        raise SigningError(
            f"cannot anchor: verify finds {len(report.faults)} fault(s); "
            f"the first is {report.faults[0]}"
        )
    store = ledger.store
    formats = run_formats(store)
    runs = {}
    for check in report.runs:
        rows = store.fetch(STREAM_HEADS if ledger.lean else STREAM_HEADS_0013, (check.run_id,))
        heads = {
            str(stream): (int(str(version)), hash_text(digest)) for stream, version, digest in rows
        }
        runs[check.run_id] = AnchoredRun(
            format=formats.get(check.run_id, 1), events=check.events, heads=heads
        )
    starts = None
    if run_id is None:
        hashes = RunStartChain(store, formats).hashes
        starts = RunStarts(count=len(hashes), last=hashes[-1] if hashes else None)
    anchor = Anchor(
        created_at=datetime.now(UTC).isoformat(timespec="microseconds"),
        run_id=run_id,
        runs=runs,
        run_starts=starts,
    )
    if key is None:
        return anchor
    signature = AnchorSignature(
        algorithm="Ed25519",
        public_key=key.public_hex,
        value=key.sign(anchor.signed_text().encode()),
    )
    return anchor.model_copy(update={"signature": signature})


def anchor_json(anchor: Anchor) -> str:
    return json.dumps(anchor.model_dump(mode="json"), indent=2, sort_keys=True) + "\n"


def read_anchor(text: str, source: str) -> Anchor:
    try:
        return Anchor.model_validate_json(text)
    except ValidationError as exc:
        problem = exc.errors()[0]
        where = ".".join(str(part) for part in problem["loc"]) or "the file"
        raise SigningError(
            f"{source} is not a kasmina anchor ({where}: {problem['msg']})"
        ) from None


def check_anchor(ledger: Ledger, anchor: Anchor, trusted: str | None) -> list[Fault]:
    """Whether the ledger still holds everything `anchor` covered (it may have grown since)."""
    faults = list(_signature_faults(anchor, trusted))
    if faults and faults[0].kind == "bad_anchor_signature":
        return faults  # an anchor that was altered vouches for nothing
    store = ledger.store
    formats = run_formats(store)
    for run_id, anchored in sorted(anchor.runs.items()):
        if not store.fetch(_ANY, (run_id,)):
            faults.append(
                Fault(
                    run_id,
                    RUN_STREAM,
                    None,
                    None,
                    "anchor_cut",
                    f"the anchor covers {anchored.events} events of this run; the ledger "
                    "holds none: the run was deleted",
                )  # fmt: skip
            )
            continue
        form = formats.get(run_id, 1)
        if form != anchored.format:
            faults.append(
                Fault(
                    run_id,
                    RUN_STREAM,
                    None,
                    None,
                    "anchor_mismatch",
                    f"the anchor has the run in format {anchored.format}, the ledger "
                    f"in format {form}: rewritten",
                )  # fmt: skip
            )
        for stream, (version, digest) in sorted(anchored.heads.items()):
            row = event_at(store, run_id, stream, version, lean=ledger.lean)
            if row is None:
                faults.append(
                    Fault(
                        run_id,
                        stream,
                        None,
                        version,
                        "anchor_cut",
                        f"the anchor covers this stream up to version {version} "
                        f"({digest[:12]}…), which the ledger no longer holds: "
                        "its tail was cut",
                    )  # fmt: skip
                )
            elif (stored := hash_text(row[0])) != digest:
                faults.append(
                    Fault(
                        run_id,
                        stream,
                        None,
                        version,
                        "anchor_mismatch",
                        f"version {version} has hash {stored[:12]}…, the anchor "
                        f"recorded {digest[:12]}…: rewritten after the anchor",
                    )  # fmt: skip
                )
    if anchor.run_starts is not None and anchor.run_starts.last is not None:
        hashes = RunStartChain(store, formats).hashes
        count, last = anchor.run_starts.count, anchor.run_starts.last
        if len(hashes) < count or hashes[count - 1] != last:
            faults.append(
                Fault(
                    LEDGER,
                    RUN_STREAM,
                    None,
                    None,
                    "anchor_cut",
                    f"the anchor covers {count} run starts ending at {last[:12]}…; "
                    "the ledger's chain of run starts no longer holds them: a run was "
                    "deleted or moved",
                )  # fmt: skip
            )
    return faults


_ANCHOR_FAULTS: dict[str, FaultKind] = {
    "unsigned": "unsigned_anchor",
    "bad": "bad_anchor_signature",
    "untrusted": "untrusted_signature",
}


def _signature_faults(anchor: Anchor, trusted: str | None) -> Iterable[Fault]:
    from kasmina.signing import signature_problem

    signature = anchor.signature
    signed = None if signature is None else (signature.public_key, signature.value)
    if signature is not None and signature.algorithm != "Ed25519":
        signed = (signature.public_key, "")  # no other algorithm is ever written
    problem = signature_problem(
        "the anchor", signed, lambda: anchor.signed_text().encode(), trusted
    )
    if problem is not None:
        yield Fault(LEDGER, "-", None, None, _ANCHOR_FAULTS[problem[0]], problem[1])
