from __future__ import annotations

import json
import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kasmina.canonical import canonical_json, canonical_value, envelope_text
from kasmina.errors import PayloadInvalid

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=5), inner, max_size=4)
    ),
    max_leaves=20,
)


@given(json_values)
def test_canonical_text_is_a_fixed_point_of_parsing(value: object) -> None:
    try:
        text = canonical_json(value)
    except PayloadInvalid:
        return  # NUL in a string: refused, never stored
    assert canonical_json(json.loads(text)) == text


def test_sorted_keys_no_spaces_floats_as_repr() -> None:
    assert canonical_json({"b": 0.1, "a": [1, 2.5e-7]}) == '{"a":[1,2.5e-07],"b":0.1}'


def test_special_floats_are_explicit() -> None:
    assert canonical_value([math.nan, math.inf, -math.inf, -0.0]) == [
        "NaN",
        "Infinity",
        "-Infinity",
        "-0.0",
    ]
    assert canonical_value(1e300) == int(1e300)
    assert canonical_value(123.0) == 123.0


def test_refuses_what_json_cannot_hold() -> None:
    with pytest.raises(PayloadInvalid):
        canonical_json({1: "x"})
    with pytest.raises(PayloadInvalid):
        canonical_json({"x": object()})
    with pytest.raises(PayloadInvalid):
        canonical_json("a\x00b")


@given(
    st.integers(min_value=1, max_value=10**6),
    st.one_of(st.none(), st.text(st.characters(blacklist_characters="\x00"), max_size=8)),
    st.one_of(st.none(), st.integers(-5, 10**6)),
    st.one_of(st.none(), st.integers(0, 4096)),
)
def test_envelope_text_equals_canonical_json_of_the_columns(
    version: int, seed_id: str | None, epoch: int | None, rank: int | None
) -> None:
    columns = dict(
        event_id="e-1",
        run_id="r\u00e9",
        stream_id='slot/"x"',
        version=version,
        event_type="T",
        schema_version=2,
        epoch=epoch,
        seed_id=seed_id,
        recorded_at="2026-01-01T00:00:00.000001+00:00",
        prev_hash="0" * 64,
    )
    payload = {"alpha": 0.5, "z": [1, "two"]}
    hashed = {**columns, "payload": payload} | ({} if rank is None else {"rank": rank})
    expected = canonical_json(hashed)
    text = envelope_text(**columns, payload_text=canonical_json(payload), rank=rank)  # type: ignore[arg-type]
    assert text == expected


def _outcome(fn: object, value: object) -> str:
    try:
        return fn(value)  # type: ignore[operator, no-any-return]
    except PayloadInvalid as exc:
        return f"refused: {exc}"


@given(
    st.dictionaries(st.text(max_size=5), json_values, max_size=8)
    | st.dictionaries(st.text(max_size=5), st.floats() | st.none() | st.booleans(), max_size=12)
)
def test_canonical_object_is_canonical_json_of_a_dict(value: dict[str, object]) -> None:
    from kasmina.canonical import canonical_object

    assert _outcome(canonical_object, value) == _outcome(canonical_json, value)


def test_canonical_object_takes_the_general_path_for_what_needs_it() -> None:
    from enum import IntEnum

    from kasmina.canonical import canonical_object

    class Small(IntEnum):
        ONE = 1

    for odd in (math.nan, -0.0, 1e16, -1e300, math.inf, Small.ONE, [1.5, -0.0], {"k": math.nan}):
        assert canonical_object({"v": odd}) == canonical_json({"v": odd})
    assert canonical_object({"v": 0.0, "w": 2.5}) == '{"v":0.0,"w":2.5}'
    with pytest.raises(PayloadInvalid):
        canonical_object({"v": "a\x00b"})
    with pytest.raises(PayloadInvalid):
        canonical_object({"a\x00": 1})
    with pytest.raises(PayloadInvalid):
        canonical_object({1: 1})  # type: ignore[dict-item]


@given(json_values)
def test_loads_reads_what_json_reads(value: object) -> None:
    from kasmina.canonical import loads

    try:
        text = canonical_json(value)
    except PayloadInvalid:
        return
    assert loads(text) == json.loads(text)


def test_loads_reads_exactly_what_orjson_would_not() -> None:
    """Integers beyond 64 bits stay integers (orjson would make them floats); a lone
    surrogate and a NaN literal read as `json.loads` reads them."""
    from kasmina.canonical import loads

    odd = [
        "[123456789012345678901234567890]",
        '{"n":-9999999999999999999,"m":18446744073709551616}',
        "[9223372036854775807, -9223372036854775808, 0.1234567890123456789]",
        '{"x":"\\ud800"}',
        "[NaN, Infinity]",
        '{"a":1,"a":2}',
    ]
    for text in odd:
        got, want = loads(text), json.loads(text)
        assert repr(got) == repr(want)
        assert repr(loads(text.encode())) == repr(want)


def test_loads_refuses_what_json_refuses() -> None:
    from kasmina.canonical import loads

    for bad in ("", "{", '{"a":1} x', "nul", '{"a":}'):
        with pytest.raises(json.JSONDecodeError):
            loads(bad)


_marks = st.sampled_from(["-0.0", "-0.0,", "1e+16", "a\x00b", "\\u0000", "x-0.0]", "e+"])


@given(
    st.dictionaries(st.text(max_size=5), json_values | _marks, max_size=8)
    | st.dictionaries(
        st.text(max_size=5), st.floats() | _marks | st.lists(st.floats()), max_size=12
    )
)
def test_canonical_string_keyed_is_canonical_json_of_a_dict(value: dict[str, object]) -> None:
    from kasmina.canonical import canonical_string_keyed

    assert _outcome(canonical_string_keyed, value) == _outcome(canonical_json, value)


def test_canonical_string_keyed_takes_the_general_path_for_each_mark() -> None:
    from kasmina.canonical import canonical_string_keyed

    for odd in (math.nan, math.inf, -0.0, 1e16, -1e300, [2.0, -0.0], {"k": -0.0}, "-0.0,"):
        assert canonical_string_keyed({"v": odd}) == canonical_json({"v": odd})
    assert canonical_string_keyed({"v": -0.05, "w": 1e-07}) == '{"v":-0.05,"w":1e-07}'
    with pytest.raises(PayloadInvalid):
        canonical_string_keyed({"v": ["a\x00b"]})
    with pytest.raises(PayloadInvalid):
        canonical_string_keyed({"v": {"a\x00": 1}})
