from __future__ import annotations

import math

import pytest

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

REQUIRED = {"RunStarted", "EpochCompleted", "SeedGerminated", "SeedStageChanged",
            "SeedGateEvaluated", "AlphaTargetSet", "SeedFossilized", "SeedPruned",
            "CacheEvicted", "MemoryReleased", "EventsDropped", "SeedTelemetrySampled",
            "RunFinished"}


def test_every_required_event_type_is_registered() -> None:
    assert set(EVENT_TYPES) == REQUIRED


def test_only_telemetry_samples_are_droppable() -> None:
    assert {n for n, c in EVENT_TYPES.items() if c.droppable} == {"SeedTelemetrySampled"}


def test_extra_fields_are_refused_with_a_one_line_message() -> None:
    with pytest.raises(PayloadInvalid) as info:
        load_payload("CacheEvicted", 1, {"cache": "k", "evicted": 0, "reason": "ttl",
                                         "size_before": 1, "size_after": 1, "oops": 1})
    message = str(info.value)
    assert "\n" not in message and "oops" in message and "evicted" in message


def test_unknown_type() -> None:
    with pytest.raises(UnknownEventType):
        event_from_dict("Nope", {}, run_id="r", stream_id="run")


def test_special_floats_decode_from_their_strings() -> None:
    payload = load_payload("EpochCompleted", 1, {"val_loss": "NaN", "train_loss": "-Infinity",
                                                  "val_accuracy": "-0.0"})
    assert isinstance(payload, EpochCompleted)
    assert payload.val_loss is not None and math.isnan(payload.val_loss)
    assert payload.train_loss == -math.inf
    assert payload.val_accuracy == 0.0 and math.copysign(1, payload.val_accuracy) < 0
    with pytest.raises(PayloadInvalid):
        load_payload("EpochCompleted", 1, {"val_loss": "1.5"})


def test_stages_are_stored_by_name() -> None:
    change = SeedStageChanged(slot_id="a", from_stage=SeedStage.DORMANT, to_stage=2,
                              trigger="command", alpha=0.0)
    dumped = change.model_dump()
    assert (dumped["from_stage"], dumped["to_stage"]) == ("DORMANT", "GERMINATED")
    with pytest.raises(PayloadInvalid, match="retired"):
        load_payload("SeedStageChanged", 2, {**dumped, "to_stage": 5})


def test_v1_stage_change_upcasts_to_v2() -> None:
    old = {"slot_id": "r0c0", "from_stage": 4, "to_stage": 6, "alpha": 1.0}
    new = load_payload("SeedStageChanged", 1, old)
    assert isinstance(new, SeedStageChanged)
    assert (new.from_stage, new.to_stage, new.trigger) == (
        SeedStage.BLENDING, SeedStage.HOLDING, "command")


def test_newer_schema_than_code_is_refused() -> None:
    with pytest.raises(PayloadInvalid, match="newer"):
        load_payload("SeedStageChanged", 3, {})


def test_envelope_assigns_ids_and_checks_versions() -> None:
    event = make_event(EpochCompleted(), run_id="r", stream_id="run", epoch=3)
    assert len(event.event_id) == 36 and event.version is None
    assert event.event_type == "EpochCompleted" and event.schema_version == 1
    with pytest.raises(PayloadInvalid):
        make_event(EpochCompleted(), run_id="r", stream_id="run", version=0)


def test_json_schemas_cover_every_type() -> None:
    schemas = json_schemas()
    assert set(schemas) == REQUIRED
    assert schemas["SeedStageChanged"]["additionalProperties"] is False


def test_event_ids_are_random_version_4_uuids() -> None:
    import uuid

    from kasmina.events import new_event_id

    ids = {new_event_id() for _ in range(1000)}
    assert len(ids) == 1000
    for value in list(ids)[:50]:
        parsed = uuid.UUID(value)
        assert (parsed.version, parsed.variant, str(parsed)) == (4, uuid.RFC_4122, value)


def test_envelope_refuses_nul_in_ids() -> None:
    with pytest.raises(PayloadInvalid, match="NUL"):
        make_event(EpochCompleted(), run_id="r", stream_id="run", seed_id="a\x00b")
