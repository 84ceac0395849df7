"""Canonical JSON: the one text form that payloads are stored and hashed in.

The hash chain must verify on every database, and PostgreSQL's JSONB does not
keep the text it was given: it reorders keys, drops the sign of ``-0.0`` and
writes a float such as ``1e300`` back as a 301-digit integer. So the canonical
form is chosen to be a fixed point of that round trip:

* keys sorted, no spaces, floats as ``repr`` (Python's shortest round-trip);
* non-finite floats and ``-0.0`` become the strings ``"NaN"``, ``"Infinity"``,
  ``"-Infinity"`` and ``"-0.0"`` — explicit, never ``null``;
* an integral float too large for ``repr`` to print without an exponent
  becomes the integer of exactly the same value, which is what JSONB returns;
* strings may not contain NUL, which PostgreSQL cannot store.

Parsing the stored value back and encoding it again therefore gives the same
text on SQLite and on PostgreSQL, and typed payload fields read the special
strings back as floats.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections.abc import Mapping
from json.encoder import c_make_encoder, encode_basestring  # type: ignore[attr-defined]
from json.scanner import make_scanner
from typing import TypeAlias, cast

import orjson

from kasmina.errors import PayloadInvalid

#: A JSON value as kasmina stores it.
Json: TypeAlias = "None | bool | int | float | str | list[Json] | dict[str, Json]"

GENESIS_HASH = "0" * 64

SPECIAL_FLOATS: Mapping[str, float] = {
    "NaN": math.nan,
    "Infinity": math.inf,
    "-Infinity": -math.inf,
    "-0.0": -0.0,
}

#: The C string quoter the encoder itself uses (ensure_ascii=False): fast per field.
_quote = encode_basestring

_encoder = json.JSONEncoder(
    ensure_ascii=False, separators=(",", ":"), sort_keys=True, allow_nan=False
)
#: The C encoder built once: `JSONEncoder.encode` builds a new one per call,
#: which costs more than encoding a small payload. No circular-reference
#: markers: canonical values are trees by construction.
_c_encode = (
    c_make_encoder(None, _encoder.default, encode_basestring, None, ":", ",", True, False, False)
    if c_make_encoder is not None
    else None
)


def _encode(value: Json) -> str:
    if _c_encode is None:
        return _encoder.encode(value)
    if isinstance(value, str):
        return encode_basestring(value)
    return "".join(_c_encode(value, 0))


def canonical_float(value: float) -> float | int | str:
    if value == value and value != 0.0 and -1e16 < value < 1e16:
        return value  # the common case: finite, non-zero, printed without an exponent
    if value != value:
        return "NaN"
    if value in (math.inf, -math.inf):
        return "Infinity" if value > 0 else "-Infinity"
    if value == 0.0:
        return "-0.0" if math.copysign(1.0, value) < 0 else value
    if value.is_integer():
        return int(value)
    return value


def json_float(value: float) -> float | str:
    """A float as plain JSON output can carry it: non-finite ones as the markers above.

    For output (exports, ``--format json``) rather than hashing: unlike
    `canonical_float` it keeps ``-0.0`` and large floats as numbers, and only
    spells NaN and the infinities, which JSON has no number for.
    """
    if value != value:
        return "NaN"
    if value in (math.inf, -math.inf):
        return "Infinity" if value > 0 else "-Infinity"
    return value


def canonical_value(value: object) -> Json:
    """Map a Python value to its canonical JSON value, refusing what JSON cannot hold."""
    kind = type(value)
    if kind is str:
        if "\x00" in value:  # type: ignore[operator]
            raise PayloadInvalid("strings may not contain NUL characters")
        return value  # type: ignore[return-value]
    if kind is float:
        return canonical_float(value)  # type: ignore[arg-type]
    if kind is int or kind is bool or value is None:
        return value  # type: ignore[return-value]
    if kind is dict:
        out: dict[str, Json] = {}
        for key, item in value.items():  # type: ignore[attr-defined]
            if type(key) is not str:
                raise PayloadInvalid(f"JSON object keys must be strings, got {key!r}")
            if "\x00" in key:
                raise PayloadInvalid("strings may not contain NUL characters")
            item_kind = type(item)
            if item_kind is float:
                out[key] = canonical_float(item)
            elif item_kind is int or item_kind is bool or item is None:
                out[key] = item
            elif item_kind is str:
                if "\x00" in item:
                    raise PayloadInvalid("strings may not contain NUL characters")
                out[key] = item
            else:
                out[key] = canonical_value(item)
        return out
    if kind is list or kind is tuple:
        return [canonical_value(item) for item in value]  # type: ignore[attr-defined]
    return _canonical_subclass(value)


def _canonical_subclass(value: object) -> Json:
    """The slow path, for subclasses of the JSON types (IntEnum, StrEnum, Mapping...)."""
    if isinstance(value, bool):
        return bool(value)
    if isinstance(value, str):
        return canonical_value(str(value))
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        return canonical_float(float(value))
    if isinstance(value, Mapping):
        return canonical_value(dict(value))
    if isinstance(value, list | tuple):
        return [canonical_value(item) for item in value]
    raise PayloadInvalid(f"value of type {type(value).__name__} is not JSON")


def canonical_json(value: object) -> str:
    """The canonical text of a value (see the module docstring)."""
    return _encode(canonical_value(value))


def canonical_object(values: Mapping[str, object]) -> str:
    """`canonical_json` of a dict with string keys, fast when every value is a plain scalar.

    The common payload is a dozen finite floats, short strings and flags: for
    those the canonical value is the value itself, so one scan proves it and
    the C encoder writes the text without the copy `canonical_value` makes.
    Anything else (NaN, -0.0, huge floats, NUL, nested values, subclasses)
    takes the general path.
    """
    if _c_encode is not None and type(values) is dict:
        for key, value in values.items():
            kind = type(value)
            if type(key) is not str or "\x00" in key:
                break
            if kind is float:
                if not -1e16 < value < 1e16 or (value == 0.0 and math.copysign(1.0, value) < 0):
                    break  # NaN fails the range test too
            elif kind is str:
                if "\x00" in value:
                    break
            elif not (kind is int or kind is bool or value is None):
                break
        else:
            return "".join(_c_encode(values, 0))
    return _encode(canonical_value(values))


def canonical_string_keyed(values: dict[str, object]) -> str:
    """`canonical_json` of a dict whose every key, at any depth, is a string.

    A validated payload's fields are such a dict. The C encoder writes the
    text first and the text shows whether the general path is needed after
    all: it refuses NaN and the infinities, and ``-0.0``, a float printed with
    an exponent (which is 1e16 or more) and an escaped NUL each leave a mark
    in it. A mark inside a string only costs the general path. Checking the
    text is cheaper than checking each value, which `canonical_object` must
    do because it cannot assume the keys.
    """
    if _c_encode is None:
        return canonical_object(values)
    try:
        text = "".join(_c_encode(values, 0))
    except ValueError:
        return canonical_object(values)
    if "e+" in text or "\\u0000" in text or ("-0.0" in text and _NEGATIVE_ZERO.search(text)):
        return canonical_object(values)
    return text


_NEGATIVE_ZERO = re.compile(r"-0\.0(?=[,\]}])")

_scan = make_scanner(json.JSONDecoder())  # type: ignore[arg-type]


#: Every digit as ``0`` and every other byte as a space, to find a long run of digits in C.
_DIGITS = bytes(0x30 if 0x30 <= byte <= 0x39 else 0x20 for byte in range(256))
#: orjson reads an integer beyond 64 bits as a float; the shortest that can be one.
_LONG_NUMBER = b"0" * 19


def loads(text: str | bytes) -> Json:
    """Parse stored JSON: orjson, else `json.loads` without its per-call Python layers.

    A read decodes one payload per event. orjson parses one in about half
    the time of the standard library's C scanner, which itself spends as long
    again in its wrappers (two regex matches, three calls). What orjson
    would not read exactly (a run of 19 digits: it makes an integer beyond
    64 bits a float) or refuses (a lone surrogate, a NaN literal) goes to
    the standard library, which reads it as it always did, or says what is
    wrong.
    """
    try:
        raw = text if isinstance(text, bytes) else text.encode()
        if _LONG_NUMBER not in raw.translate(_DIGITS):
            return cast(Json, orjson.loads(raw))
    except (orjson.JSONDecodeError, UnicodeEncodeError):
        pass
    if isinstance(text, bytes):
        text = text.decode()
    try:
        value, end = _scan(text, 0)
    except StopIteration as exc:
        raise json.JSONDecodeError("Expecting value", text, exc.value) from None
    except RecursionError:  # orjson refused it too: nested past 1,024 levels
        raise json.JSONDecodeError("nested too deep to read", text, 0) from None
    if end != len(text):
        return cast(Json, json.loads(text))  # trailing text: let json say what is wrong
    return cast(Json, value)


def dumps_canonical(value: Json) -> str:
    """Encode a value that is already canonical (as read back from a database)."""
    return _encode(value)


def envelope_text(
    *,
    event_id: str,
    run_id: str,
    stream_id: str,
    version: int,
    event_type: str,
    schema_version: int,
    epoch: int | None,
    seed_id: str | None,
    payload_text: str,
    recorded_at: str,
    prev_hash: str,
    rank: int | None = None,
) -> str:
    """Canonical JSON of every hashed column, built without re-encoding the payload.

    Equal to ``canonical_json`` of the same columns as a dict (a test holds it
    to that); written out by hand because it runs once per appended event.
    ``rank`` is left out when it is None, so events written by one process
    hash exactly as they did before the column existed.
    """
    return quoted_envelope(
        _quote(event_id),
        _quote(run_id),
        _quote(stream_id),
        int(version),
        _quote(event_type),
        int(schema_version),
        "null" if epoch is None else str(int(epoch)),
        "null" if seed_id is None else _quote(seed_id),
        payload_text,
        _quote(recorded_at),
        _quote(prev_hash),
        None if rank is None else int(rank),
    )


def quoted_envelope(
    event_id: str,
    run_id: str,
    stream_id: str,
    version: int,
    event_type: str,
    schema_version: int,
    epoch: str,
    seed_id: str,
    payload_text: str,
    recorded_at: str,
    prev_hash: str,
    rank: int | None = None,
) -> str:
    """`envelope_text` from values already encoded as JSON (strings quoted, None as null).

    The one place the envelope's layout is written; verification calls it
    directly with quoted strings it caches per stream, type and seed.
    """
    ranked = "" if rank is None else f',"rank":{rank}'
    return (
        f'{{"epoch":{epoch},"event_id":{event_id},"event_type":{event_type}'
        f',"payload":{payload_text},"prev_hash":{prev_hash}{ranked},"recorded_at":{recorded_at}'
        f',"run_id":{run_id},"schema_version":{schema_version},"seed_id":{seed_id}'
        f',"stream_id":{stream_id},"version":{version}}}'
    )


def quote(text: str) -> str:
    """A JSON string literal, as the canonical encoder writes it."""
    return _quote(text)


def chain_hash(prev_hash: str, text: str) -> str:
    """SHA-256 over the previous hash and the canonical envelope text."""
    return hashlib.sha256((prev_hash + text).encode("utf-8")).hexdigest()


__all__ = [
    "GENESIS_HASH",
    "SPECIAL_FLOATS",
    "Json",
    "canonical_float",
    "canonical_json",
    "canonical_object",
    "canonical_string_keyed",
    "canonical_value",
    "chain_hash",
    "dumps_canonical",
    "envelope_text",
    "loads",
    "quote",
    "quoted_envelope",
]
