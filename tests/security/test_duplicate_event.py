"""An event id reused with other content is refused; a true retry stays a no-op.

Skipping an event whose id is stored already is what makes a retried batch
safe, but it must never drop a different event that happens to carry a used
id: that would report success and lose the event. Run on both databases.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
from helpers import sample

from kasmina import DuplicateEvent
from kasmina.errors import PayloadInvalid, RunClosed
from kasmina.events import (
    EpochCompleted,
    NewEvent,
    RunFinished,
    RunStarted,
    SeedTelemetrySampled,
    make_event,
    slot_stream,
)
from kasmina.ledger import Ledger
from kasmina.stages import SeedStage
from security.attacks import fingerprint

RUN = "dup"


@pytest.fixture
def stored(ledger: Ledger) -> NewEvent:
    """One event stored in an open run: the one every case tries to reuse the id of."""
    ledger.start_run(name="dup", seed=1, run_id=RUN)
    event = sample(RUN, n=1, epoch=4)
    ledger.append([event])
    return event


def _telemetry(accuracy: float) -> SeedTelemetrySampled:
    return SeedTelemetrySampled(
        slot_id="r0c0", stage=SeedStage.TRAINING, alpha=0.25, accuracy=accuracy, epochs_in_stage=1
    )


#: (the field the refusal names, the change): each hashed field that the caller controls.
CHANGES: list[tuple[str, Callable[[NewEvent], NewEvent]]] = [
    ("payload", lambda e: e._replace(payload=_telemetry(50.002))),
    ("payload", lambda e: e._replace(payload=_telemetry(50.001 + 2**-40))),
    ("event type", lambda e: e._replace(payload=EpochCompleted())),
    ("epoch", lambda e: e._replace(epoch=5)),
    ("epoch", lambda e: e._replace(epoch=None)),
    ("stream", lambda e: e._replace(stream_id=slot_stream("r9c9"))),
    ("seed id", lambda e: e._replace(seed_id="someone-else")),
    ("seed id", lambda e: e._replace(seed_id=None)),
    ("rank", lambda e: e._replace(rank=3)),
    ("version", lambda e: e._replace(version=2)),
]


@pytest.mark.parametrize(
    ("field", "change"), CHANGES, ids=[f"{name}-{n}" for n, (name, _) in enumerate(CHANGES)]
)
def test_an_id_stored_with_other_content_is_refused_and_nothing_of_the_batch_is_appended(
    ledger: Ledger,
    db_url: str,
    stored: NewEvent,
    field: str,
    change: Callable[[NewEvent], NewEvent],
) -> None:
    before = fingerprint(db_url)
    changed = change(stored)
    assert changed != stored
    with pytest.raises(DuplicateEvent) as caught:
        ledger.append([sample(RUN, n=10), changed, sample(RUN, n=11)])
    message = str(caught.value)
    assert caught.value.event_id == stored.event_id
    assert stored.event_id in message and field in message, message
    assert "\n" not in message
    assert fingerprint(db_url) == before


def test_an_id_of_another_run_is_refused(ledger: Ledger, db_url: str, stored: NewEvent) -> None:
    ledger.start_run(name="other", seed=1, run_id="other")
    before = fingerprint(db_url)
    with pytest.raises(DuplicateEvent, match="run"):
        ledger.append([stored._replace(run_id="other")])
    assert fingerprint(db_url) == before


def test_an_exact_retry_is_skipped(ledger: Ledger, db_url: str, stored: NewEvent) -> None:
    before = fingerprint(db_url)
    result = ledger.append([stored])
    assert (result.appended, result.skipped) == (0, 1)
    assert fingerprint(db_url) == before


def test_a_retry_with_awkward_floats_is_still_exact(ledger: Ledger, db_url: str) -> None:
    """PostgreSQL's jsonb rewrites 1e300 and -0.0; the comparison is of canonical texts."""
    ledger.start_run(name="dup", seed=1, run_id=RUN)
    payload = SeedTelemetrySampled(
        slot_id="r0c0",
        stage=SeedStage.TRAINING,
        alpha=-0.0,
        accuracy=1e300,
        counterfactual=5e-324,
        grad_norm=float("nan"),
        grad_health=float("inf"),
    )
    event = make_event(payload, run_id=RUN, stream_id=slot_stream("r0c0"), epoch=0)
    ledger.append([event])
    before = fingerprint(db_url)
    assert ledger.append([event]).skipped == 1
    assert fingerprint(db_url) == before


def test_a_retry_that_leaves_the_version_to_the_ledger_matches_any_version(
    ledger: Ledger, stored: NewEvent
) -> None:
    """The caller did not fix a version, so the one the ledger gave is not a difference."""
    fixed = stored._replace(version=1)
    assert ledger.append([fixed]).skipped == 1
    assert ledger.append([stored]).skipped == 1


def test_a_partly_stored_retry_with_one_changed_event_appends_nothing(
    ledger: Ledger, db_url: str, stored: NewEvent
) -> None:
    rest = [sample(RUN, n=n) for n in range(3)]
    ledger.append(rest)
    before = fingerprint(db_url)
    with pytest.raises(DuplicateEvent):
        ledger.append([stored, *rest[:2], rest[2]._replace(epoch=9), sample(RUN, n=7)])
    assert fingerprint(db_url) == before


@pytest.mark.parametrize("same_content", [True, False])
def test_one_id_twice_in_one_batch_is_refused(
    ledger: Ledger, db_url: str, stored: NewEvent, same_content: bool
) -> None:
    before = fingerprint(db_url)
    first = sample(RUN, n=20)
    second = first if same_content else first._replace(epoch=7)
    with pytest.raises(DuplicateEvent, match="more than once") as caught:
        ledger.append([sample(RUN, n=21), first, second])
    assert caught.value.event_id == first.event_id
    assert fingerprint(db_url) == before


@pytest.mark.parametrize("stream", ["slot/r0c0", "memory/kernels"])
def test_a_seal_or_a_start_outside_the_run_stream_is_refused(
    ledger: Ledger, db_url: str, stored: NewEvent, stream: str
) -> None:
    before = fingerprint(db_url)
    forged = [
        RunFinished(status="completed", seal={}),
        RunStarted(name="x", seed=1, kasmina_version="0", python_version="3"),
    ]
    for payload in forged:
        with pytest.raises(PayloadInvalid, match=type(payload).__name__):
            ledger.append([make_event(payload, run_id=RUN, stream_id=stream)])
    assert fingerprint(db_url) == before


def test_finish_retried_after_a_lost_reply_returns_the_stored_seal(
    ledger: Ledger, db_url: str, stored: NewEvent
) -> None:
    digest = ledger.finish_run(RUN, "completed")
    before = fingerprint(db_url)
    assert ledger.finish_run(RUN, "completed") == digest
    with Ledger.open(db_url) as other:  # another process's retry, with nothing remembered
        assert other.finish_run(RUN, "completed") == digest
    assert fingerprint(db_url) == before
    [seal] = [e for e in ledger.read(RUN) if e.event_type == "RunFinished"]
    assert seal.hash == digest


def test_finish_with_another_status_is_still_refused(
    ledger: Ledger, db_url: str, stored: NewEvent
) -> None:
    ledger.finish_run(RUN, "completed")
    before = fingerprint(db_url)
    with pytest.raises(RunClosed):
        ledger.finish_run(RUN, "failed")
    with pytest.raises(RunClosed):
        ledger.append([sample(RUN, n=30)])
    assert fingerprint(db_url) == before
