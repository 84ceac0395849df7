from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kasmina.errors import PayloadInvalid, UnknownEventType
from kasmina.events import (
    EVENT_TYPES,
    EpochCompleted,
    SeedStageChanged,
    event_from_dict,
    json_schemas,
    load_payload,
    make_event,
)
from kasmina.stages import SeedStage

REQUIRED = {
    "RunStarted",
    "EpochCompleted",
    "SeedGerminated",
    "SeedStageChanged",
    "SeedGateEvaluated",
    "AlphaTargetSet",
    "SeedFossilized",
    "SeedPruned",
    "CacheEvicted",
    "MemoryReleased",
    "EventsDropped",
    "SeedTelemetrySampled",
    "PolicyDecided",
    "CheckpointSaved",
    "RunResumed",
    "RunFinished",
}


def test_every_required_event_type_is_registered() -> None:
    assert set(EVENT_TYPES) == REQUIRED


def test_only_telemetry_samples_are_droppable() -> None:
    assert {n for n, c in EVENT_TYPES.items() if c.droppable} == {"SeedTelemetrySampled"}


def test_extra_fields_are_refused_with_a_one_line_message() -> None:
    with pytest.raises(PayloadInvalid) as info:
        load_payload(
            "CacheEvicted",
            1,
            {
                "cache": "k",
                "evicted": 0,
                "reason": "ttl",
                "size_before": 1,
                "size_after": 1,
                "oops": 1,
            },
        )
    message = str(info.value)
    assert "\n" not in message and "oops" in message and "evicted" in message


def test_unknown_type() -> None:
    with pytest.raises(UnknownEventType):
        event_from_dict("Nope", {}, run_id="r", stream_id="run")


def test_special_floats_decode_from_their_strings() -> None:
    payload = load_payload(
        "EpochCompleted", 1, {"val_loss": "NaN", "train_loss": "-Infinity", "val_accuracy": "-0.0"}
    )
    assert isinstance(payload, EpochCompleted)
    assert payload.val_loss is not None and math.isnan(payload.val_loss)
    assert payload.train_loss == -math.inf
    assert payload.val_accuracy == 0.0 and math.copysign(1, payload.val_accuracy) < 0
    with pytest.raises(PayloadInvalid):
        load_payload("EpochCompleted", 1, {"val_loss": "1.5"})


def test_stages_are_stored_by_name() -> None:
    change = SeedStageChanged(
        slot_id="a", from_stage=SeedStage.DORMANT, to_stage=2, trigger="command", alpha=0.0
    )
    dumped = change.model_dump()
    assert (dumped["from_stage"], dumped["to_stage"]) == ("DORMANT", "GERMINATED")
    with pytest.raises(PayloadInvalid, match="retired"):
        load_payload("SeedStageChanged", 2, {**dumped, "to_stage": 5})


def test_v1_stage_change_upcasts_to_v2() -> None:
    old = {"slot_id": "r0c0", "from_stage": 4, "to_stage": 6, "alpha": 1.0}
    new = load_payload("SeedStageChanged", 1, old)
    assert isinstance(new, SeedStageChanged)
    assert (new.from_stage, new.to_stage, new.trigger) == (
        SeedStage.BLENDING,
        SeedStage.HOLDING,
        "command",
    )


def test_newer_schema_than_code_is_refused() -> None:
    with pytest.raises(PayloadInvalid, match="newer"):
        load_payload("SeedStageChanged", SeedStageChanged.schema_version + 1, {})


def test_envelope_assigns_ids_and_checks_versions() -> None:
    event = make_event(EpochCompleted(), run_id="r", stream_id="run", epoch=3)
    assert len(event.event_id) == 36 and event.version is None
    assert event.event_type == "EpochCompleted"
    assert event.schema_version == EpochCompleted.schema_version == 2
    with pytest.raises(PayloadInvalid):
        make_event(EpochCompleted(), run_id="r", stream_id="run", version=0)


def test_json_schemas_cover_every_type() -> None:
    schemas = json_schemas()
    assert set(schemas) == REQUIRED
    assert schemas["SeedStageChanged"]["additionalProperties"] is False


def test_event_ids_are_time_ordered_version_7_uuids() -> None:
    import time
    import uuid

    from kasmina.events import new_event_id

    before = time.time_ns() // 1_000_000
    made = [new_event_id() for _ in range(10_000)]
    after = time.time_ns() // 1_000_000
    assert len(set(made)) == len(made)
    assert made == sorted(made)  # one thread's ids sort in the order it made them
    for value in made[:50] + made[-50:]:
        parsed = uuid.UUID(value)
        assert (parsed.version, parsed.variant, str(parsed)) == (7, uuid.RFC_4122, value)
        assert before <= parsed.int >> 80 <= after + 1  # the top 48 bits: Unix milliseconds


def test_event_ids_differ_across_threads_and_forks() -> None:
    import os
    import threading

    from kasmina.events import new_event_id

    new_event_id()  # fill this thread's entropy buffer before forking
    seen: list[str] = []
    threads = [
        threading.Thread(target=lambda: seen.extend(new_event_id() for _ in range(500)))
        for _ in range(4)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.write(write, "".join(new_event_id() for _ in range(10)).encode())
        os._exit(0)
    os.close(write)
    os.waitpid(pid, 0)
    with os.fdopen(read) as pipe:
        text = pipe.read()
    child = [text[i : i + 36] for i in range(0, len(text), 36)]
    parent = [new_event_id() for _ in range(10)]
    assert len(child) == 10
    everything = seen + child + parent
    assert len(set(everything)) == len(everything)
    assert {c[19:] for c in child}.isdisjoint(p[19:] for p in parent)  # random tails differ


def test_envelope_refuses_nul_in_ids() -> None:
    with pytest.raises(PayloadInvalid, match="NUL"):
        make_event(EpochCompleted(), run_id="r", stream_id="run", seed_id="a\x00b")


def test_canonical_text_is_the_canonical_dump_for_every_recorded_type(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from kasmina.canonical import canonical_json
    from kasmina.ledger import Ledger
    from kasmina.replay.synthetic import synthetic_run

    with Ledger.open(f"sqlite:///{tmp_path / 'k.db'}") as ledger:
        run_id = synthetic_run(ledger, epochs=40, slots=4, seed=3)
        stored = list(ledger.read(run_id))
    assert len({e.event_type for e in stored}) >= 8
    for event in stored:
        assert event.payload.canonical_text() == canonical_json(event.payload.model_dump())


@given(st.floats(), st.floats(), st.sampled_from(list(SeedStage)), st.text(max_size=6))
def test_canonical_text_of_odd_values_is_the_canonical_dump(
    alpha: float, accuracy: float, stage: SeedStage, slot_id: str
) -> None:
    from kasmina.canonical import canonical_json
    from kasmina.events import SeedStageChanged, SeedTelemetrySampled

    for payload in (
        SeedTelemetrySampled(slot_id=slot_id, stage=stage, alpha=alpha, accuracy=accuracy),
        SeedStageChanged(
            slot_id="s", from_stage=stage, to_stage=stage, trigger="gate", alpha=alpha
        ),
    ):
        try:
            expected = canonical_json(payload.model_dump())
        except Exception as exc:  # NUL in the slot id: both refuse alike
            with pytest.raises(type(exc)):
                payload.canonical_text()
            continue
        assert payload.canonical_text() == expected
