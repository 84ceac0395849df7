"""Canonical form 2 is RFC 8785: held to an independent implementation of it."""

from __future__ import annotations

import json
import math
import re
import struct

import pytest
import rfc8785
from hypothesis import given
from hypothesis import strategies as st

from kasmina.errors import PayloadInvalid
from kasmina.events import RunStarted, load_payload
from kasmina.jcs import EXACT_INT, envelope, jcs_text, jcs_value, stored_jcs_text

#: What RFC 8785 can carry: finite doubles, safe integers, Unicode text (no NUL, which
#: PostgreSQL cannot store, and no lone surrogates, which are not Unicode).
texts = st.text(
    alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), max_size=6
)
jcs_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-EXACT_INT, EXACT_INT)
    | st.floats(allow_nan=False, allow_infinity=False).filter(
        lambda f: math.copysign(1.0, f) > 0 or f != 0.0
    )
    | texts,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(texts, inner, max_size=4),
    max_leaves=20,
)


@given(jcs_values)
def test_the_text_is_what_an_independent_rfc_8785_library_writes(value: object) -> None:
    assert jcs_text(value) == rfc8785.dumps(value).decode()


@given(st.integers(0, 2**64 - 1))
def test_every_double_is_written_as_ecmascript_writes_it(bits: int) -> None:
    value = struct.unpack("<d", struct.pack("<Q", bits))[0]
    if not math.isfinite(value) or value == 0.0:
        return
    assert jcs_text(value) == rfc8785.dumps(value).decode()


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (3.0, "3"),
        (1e16, "10000000000000000"),
        (1e20, "100000000000000000000"),
        (2.7890840981819507e20, "278908409818195070000"),
        (1e21, "1e+21"),
        (1e-5, "0.00001"),
        (7.7052314e-06, "0.0000077052314"),
        (1e-7, "1e-7"),
        (5e-324, "5e-324"),
    ],
)
def test_numbers_where_orjson_and_ecmascript_differ(value: float, text: str) -> None:
    assert jcs_text(value) == text == rfc8785.dumps(value).decode()


def test_keys_sort_by_utf16_code_units_not_code_points() -> None:
    value = {"\U0001f600": 1, "\ue000": 2, "a": {"\U0001f600": 3, "\uffff": 4}}
    assert jcs_text(value) == rfc8785.dumps(value).decode()
    assert jcs_text(value).index("\U0001f600") < jcs_text(value).index("\ue000")


@pytest.mark.parametrize(
    ("payload", "text"),
    [
        ({"alpha": 1.0, "m": {"a": 0.0, "b": 0.5}}, '{"alpha":1,"m":{"a":0,"b":0.5}}'),
        ({"alpha": -0.0, "loss": math.nan}, '{"alpha":"-0.0","loss":"NaN"}'),
        ({"grad": 1.5e-7, "big": 1e20}, '{"big":100000000000000000000,"grad":1.5e-7}'),
        ({"n": 2**53 - 1, "s": "x"}, '{"n":9007199254740991,"s":"x"}'),
        ({"passed": ["b", "a"], "failed": []}, '{"failed":[],"passed":["b","a"]}'),
        ({"passed": ["a\x00"]}, None),
    ],
)
def test_a_payload_of_plain_values_is_written_as_the_general_path_writes_it(
    payload: dict[str, object], text: str | None
) -> None:
    before = repr(payload)
    if text is None:
        with pytest.raises(PayloadInvalid, match="NUL"):
            jcs_text(payload)
        return
    assert jcs_text(payload) == text
    assert repr(payload) == before  # 1.0 is written as 1 from a copy, not in place


def test_what_json_has_no_number_for_is_spelt_as_in_format_1() -> None:
    assert jcs_value([math.nan, math.inf, -math.inf, -0.0, 0.0, 2.0]) == [
        "NaN",
        "Infinity",
        "-Infinity",
        "-0.0",
        0,
        2,
    ]


@pytest.mark.parametrize(
    ("value", "complaint"),
    [
        (2**53, re.escape("beyond ±(2^53 - 1)")),
        ({"seed": -(2**63)}, re.escape("beyond ±(2^53 - 1)")),
        ("a\x00b", "NUL"),
        ({"\x00": 1}, "NUL"),
        ("\ud800", "canonical JSON"),
        ({"\ud800\U0001f600": 1}, "canonical JSON"),
        ({1: 2}, "keys must be strings"),
        (object(), "is not JSON"),
    ],
)
def test_what_rfc_8785_cannot_hold_exactly_is_refused(value: object, complaint: str) -> None:
    with pytest.raises(PayloadInvalid, match=complaint):
        jcs_text(value)


@pytest.mark.parametrize("value", [1e300, 1e20, 2.7890840981819507e20, 9007199254740992.0, -1e17])
def test_a_double_read_back_as_a_long_integer_is_written_as_the_double(value: float) -> None:
    """PostgreSQL's JSONB gives 1e300 back as a 301-digit integer; its text must not change."""
    written = jcs_text(value)
    assert stored_jcs_text(int(json.loads(written))) == written
    assert stored_jcs_text(json.loads(written)) == written


def test_the_envelope_is_the_rfc_8785_text_of_the_row() -> None:
    payload = {"b": [1.5, None], "a": "x\u2028"}
    columns = {
        "event_id": 'e"1',
        "run_id": "r",
        "stream_id": "slot/r0c0",
        "version": 3,
        "event_type": "SeedStageChanged",
        "schema_version": 2,
        "epoch": None,
        "seed_id": "s\n1",
        "recorded_at": "2026-12-06T06:00:00.000001+00:00",
        "prev_hash": "a" * 64,
        "rank": 1,
    }
    text = envelope(**columns, payload_text=jcs_text(payload), run_prev_hash="b" * 64)
    whole = {**columns, "payload": payload, "format": 2, "run_prev_hash": "b" * 64}
    assert text == rfc8785.dumps(whole).decode()
    assert envelope(**{**columns, "rank": None}, payload_text="{}", run_prev_hash="0" * 64) == (
        rfc8785.dumps(
            {**columns, "rank": None, "payload": {}, "format": 2, "run_prev_hash": "0" * 64}
        ).decode()  # fmt: skip
    )


def _started(config: dict[str, object]) -> RunStarted:
    return RunStarted.model_validate(
        {"name": "r", "seed": 1, "kasmina_version": "0", "python_version": "3", "config": config}
    )


def test_a_config_keeps_an_integer_too_wide_for_a_double_as_its_text() -> None:
    started = _started({"seed64": 2**63 - 1, "nested": [{"n": -(2**60)}], "small": 7})
    assert started.config == {
        "seed64": str(2**63 - 1),
        "nested": [{"n": str(-(2**60))}],
        "small": 7,
    }
    assert json.loads(started.jcs_text())["config"]["seed64"] == "9223372036854775807"


def test_a_config_double_read_back_as_a_long_integer_is_a_double_again() -> None:
    stored = json.loads(_started({"big": 1e20, "huge": 1e300}).jcs_text())
    stored["config"] = {"big": 10**20, "huge": 10**300}  # as JSONB returns them
    read = load_payload("RunStarted", RunStarted.schema_version, stored, stored=True)
    assert isinstance(read, RunStarted)
    assert read.config == {"big": 1e20, "huge": 1e300}
    given = load_payload("RunStarted", RunStarted.schema_version, stored)  # new input
    assert isinstance(given, RunStarted)
    assert given.config == {"big": str(10**20), "huge": str(10**300)}
