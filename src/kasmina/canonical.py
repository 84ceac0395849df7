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
from collections.abc import Mapping
from typing import TypeAlias

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

_encode = json.JSONEncoder(
    ensure_ascii=False, separators=(",", ":"), sort_keys=True, allow_nan=False
).encode


def canonical_float(value: float) -> float | int | str:
    if value != value:
        return "NaN"
    if value in (math.inf, -math.inf):
        return "Infinity" if value > 0 else "-Infinity"
    if value == 0.0 and math.copysign(1.0, value) < 0:
        return "-0.0"
    if value.is_integer() and abs(value) >= 1e16:
        return int(value)
    return value


def canonical_value(value: object) -> Json:
    """Map a Python value to its canonical JSON value, refusing what JSON cannot hold."""
    if value is None or value is True or value is False:
        return value
    if isinstance(value, str):
        if "\x00" in value:
            raise PayloadInvalid("strings may not contain NUL characters")
        return value
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        return canonical_float(value)
    if isinstance(value, Mapping):
        out: dict[str, Json] = {}
        for key, item in value.items():
            if not isinstance(key, str):
                raise PayloadInvalid(f"JSON object keys must be strings, got {key!r}")
            out[canonical_value(key)] = canonical_value(item)  # type: ignore[index]
        return out
    if isinstance(value, list | tuple):
        return [canonical_value(item) for item in value]
    raise PayloadInvalid(f"value of type {type(value).__name__} is not JSON")


def canonical_json(value: object) -> str:
    """The canonical text of a value (see the module docstring)."""
    return _encode(canonical_value(value))


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
) -> str:
    """Canonical JSON of every hashed column, built without re-encoding the payload.

    Equal to ``canonical_json`` of the same columns as a dict (a test holds it
    to that); written out by hand because it runs once per appended event.
    """
    return (
        f'{{"epoch":{"null" if epoch is None else int(epoch)}'
        f',"event_id":{_encode(event_id)}'
        f',"event_type":{_encode(event_type)}'
        f',"payload":{payload_text}'
        f',"prev_hash":{_encode(prev_hash)}'
        f',"recorded_at":{_encode(recorded_at)}'
        f',"run_id":{_encode(run_id)}'
        f',"schema_version":{int(schema_version)}'
        f',"seed_id":{"null" if seed_id is None else _encode(seed_id)}'
        f',"stream_id":{_encode(stream_id)}'
        f',"version":{int(version)}}}'
    )


def chain_hash(prev_hash: str, text: str) -> str:
    """SHA-256 over the previous hash and the canonical envelope text."""
    return hashlib.sha256((prev_hash + text).encode("utf-8")).hexdigest()


__all__ = [
    "GENESIS_HASH",
    "SPECIAL_FLOATS",
    "Json",
    "canonical_float",
    "canonical_json",
    "canonical_value",
    "chain_hash",
    "dumps_canonical",
    "envelope_text",
]
