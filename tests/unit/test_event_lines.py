"""The JSON-lines input of `kasmina append`: what a line may hold, exactly at the limits."""

from __future__ import annotations

import json
import uuid

import pytest

from kasmina.errors import PayloadInvalid
from kasmina.event_lines import INT32_MAX, MAX_DEPTH, event_from_line, json_object

LINE = {
    "event_type": "SeedGerminated",
    "stream_id": "slot/a",
    "payload": {"slot_id": "a", "blueprint_id": "conv_small", "params": 10},
}


def test_every_envelope_key_is_carried_into_the_event() -> None:
    given = uuid.uuid4()
    event = event_from_line(
        {**LINE, "epoch": 3, "seed_id": "s1", "event_id": str(given), "version": 2},
        run_id="r",
        where="line 1",
    )
    assert (event.run_id, event.stream_id, event.epoch, event.seed_id, event.version) == (
        "r",
        "slot/a",
        3,
        "s1",
        2,
    )
    assert event.event_id == str(given)


@pytest.mark.parametrize(
    "spelling", [str.upper, lambda s: "{" + s + "}", lambda s: s.replace("-", "")]
)
def test_an_event_id_is_stored_in_one_spelling(spelling: object) -> None:
    given = str(uuid.uuid4())
    written = spelling(given)  # type: ignore[operator]
    event = event_from_line({**LINE, "event_id": written}, run_id="r", where="line 1")
    assert event.event_id == given


@pytest.mark.parametrize(("key", "least"), [("epoch", 0), ("version", 1)])
def test_counters_are_accepted_up_to_the_column_range_and_no_further(key: str, least: int) -> None:
    for good in (least, INT32_MAX):
        assert getattr(event_from_line({**LINE, key: good}, run_id="r", where="x"), key) == good
    for bad in (least - 1, INT32_MAX + 1, 1.0, "1", True):
        with pytest.raises(PayloadInvalid, match=key):
            event_from_line({**LINE, key: bad}, run_id="r", where="x")


def test_nesting_is_refused_just_past_the_limit() -> None:
    def nested(depth: int) -> str:
        return json.dumps({"a": json.loads("[" * (depth - 1) + "]" * (depth - 1))})

    assert json_object(nested(MAX_DEPTH), "x")
    with pytest.raises(PayloadInvalid, match=f"deeper than {MAX_DEPTH}"):
        json_object(nested(MAX_DEPTH + 1), "x")


@pytest.mark.parametrize("missing", ["event_type", "stream_id", "payload"])
def test_a_missing_required_key_is_named(missing: str) -> None:
    line = {k: v for k, v in LINE.items() if k != missing}
    with pytest.raises(PayloadInvalid, match=f"line 7: {missing} .* missing"):
        event_from_line(line, run_id="r", where="line 7")
