"""Canonical form 2: RFC 8785 (JSON Canonicalization Scheme), what format-2 runs store and hash.

Format 1 (`kasmina.canonical`) is kasmina's own text: sorted keys, floats as
Python's ``repr``. An auditor can only rebuild it with kasmina's rules. JCS
is a published standard with libraries in many languages, so a format-2 hash
can be checked with one of them and ``hashlib``:
``sha256(JCS(row)).hexdigest()`` (see `envelope`).

A value is mapped before encoding, and the mapped value is the payload:

* NaN, the infinities and ``-0.0`` become the strings ``"NaN"``,
  ``"Infinity"``, ``"-Infinity"`` and ``"-0.0"``, as in format 1, because JCS
  has no number for them (and writes ``-0.0`` as ``0``);
* an integer beyond ±(2^53 - 1) is refused, because JCS numbers are IEEE doubles
  and it would not come back exact (`RunStarted.config`, which is free-form,
  stores such integers as strings before they get here).

JCS writes numbers as ECMAScript does: an integral double below 10^21 as an
integer (``3.0`` as ``3``), others in the shortest form that round-trips.
orjson writes non-integral doubles that way already, so integral ones are
made integers first and orjson does the rest in C. Keys are sorted by UTF-16
code units; that differs from orjson's code-point order only when a key
holds a character above U+FFFF and another one from U+E000 to U+FFFF, which
takes a slower path here.

The mapping is a fixed point of PostgreSQL's JSONB round trip: JSONB drops
the difference between ``3`` and ``3.0`` and rewrites ``1e300`` as a long
integer, and JCS writes the double of either one way. On reading, an integer
beyond that can only have been such a double, and is encoded as one.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping
from json.encoder import encode_basestring
from typing import cast

import orjson

from kasmina.canonical import Json, quote
from kasmina.errors import PayloadInvalid

#: ECMAScript's Number.MAX_SAFE_INTEGER: the largest magnitude JCS libraries accept as an integer.
EXACT_INT = 2**53 - 1
#: Below this an integral double is written as an integer; at or above it, in exponent form.
_INTEGER_FORM = 1e21
_SORTED = orjson.OPT_SORT_KEYS


class _Slow(Exception):
    """orjson would not write this value as JCS: a key that needs UTF-16 ordering, an
    integral double from 2^53 to 10^21, or a double below 1e-5."""


#: Below this magnitude orjson writes a double with an exponent; JCS does below 1e-6.
_ORJSON_DECIMAL = 1e-5


def _float(value: float, fast: bool = True) -> Json:
    if value != value:
        return "NaN"
    if value in (math.inf, -math.inf):
        return "Infinity" if value > 0 else "-Infinity"
    if value == 0.0:
        return "-0.0" if math.copysign(1.0, value) < 0 else 0
    if value.is_integer():
        if -EXACT_INT <= value <= EXACT_INT:
            return int(value)
        if fast and -_INTEGER_FORM < value < _INTEGER_FORM:
            raise _Slow  # JCS writes its shortest digits padded with zeros
    elif fast and -_ORJSON_DECIMAL < value < _ORJSON_DECIMAL:
        raise _Slow  # orjson turns to exponents below 1e-5, JCS below 1e-6
    return value


def _int(value: int, stored: bool, fast: bool = True) -> Json:
    if -EXACT_INT <= value <= EXACT_INT:
        return value
    if stored:
        try:
            return _float(float(value), fast)
        except OverflowError:  # beyond any double: no event kasmina hashed held it
            raise ValueError(f"a stored number of {len(str(abs(value)))} digits") from None
    raise PayloadInvalid(
        f"integer {value} is beyond ±(2^53 - 1), which canonical JSON (RFC 8785) cannot hold "
        "exactly; record it as a string"
    )


def _text(value: str) -> str:
    if "\x00" in value:
        raise PayloadInvalid("strings may not contain NUL characters")
    return value


def _any_key(key: object) -> str:
    if type(key) is not str:
        if not isinstance(key, str):
            raise PayloadInvalid(f"JSON object keys must be strings, got {key!r}")
        key = str(key)
    return _text(key)


def _key(key: object) -> str:
    """A key for orjson's sort, which is JCS's only below U+E000."""
    text = _any_key(key)
    if text and max(text) >= "\ue000":
        raise _Slow
    return text


def _map(value: object, stored: bool, fast: bool = True) -> Json:
    """The JCS value of `value`; `fast` raises `_Slow` where orjson would not write JCS."""
    kind = type(value)
    if kind is str:
        return _text(cast(str, value))
    if kind is float:
        return _float(cast(float, value), fast)
    if kind is int:
        return _int(cast(int, value), stored, fast)
    if kind is bool or value is None:
        return cast(Json, value)
    if kind is dict:
        items = cast(dict[object, object], value).items()
        key = _key if fast else _any_key
        return {key(k): _map(v, stored, fast) for k, v in items}
    if kind is list or kind is tuple:
        return [_map(item, stored, fast) for item in cast(list[object], value)]
    return _subclass(value, stored, fast)


def _subclass(value: object, stored: bool, fast: bool) -> Json:
    """The slow path, for subclasses of the JSON types (IntEnum, StrEnum, Mapping...)."""
    if isinstance(value, bool):
        return bool(value)
    if isinstance(value, str):
        return _text(str(value))
    if isinstance(value, int):
        return _int(int(value), stored, fast)
    if isinstance(value, float):
        return _float(float(value), fast)
    if isinstance(value, Mapping):
        return _map(dict(value), stored, fast)
    if isinstance(value, list | tuple):
        return [_map(item, stored, fast) for item in value]
    raise PayloadInvalid(f"value of type {type(value).__name__} is not JSON")


def _number(value: float) -> str:
    """A finite double as ECMAScript's Number.prototype.toString writes it (RFC 8785 §3.2.2.3).

    ``repr`` gives the same shortest digits; only where they go differs.
    """
    if value.is_integer() and -EXACT_INT <= value <= EXACT_INT:
        return str(int(value))
    sign = "-" if value < 0 else ""
    mantissa, _, exponent = repr(abs(value)).partition("e")
    whole, _, fraction = mantissa.partition(".")
    digits = (whole + fraction).lstrip("0")
    power = int(exponent or 0) - len(fraction)  # value = int(digits) * 10**power
    stripped = digits.rstrip("0")
    power += len(digits) - len(stripped)
    digits, k = stripped, len(stripped)
    n = k + power
    if k <= n <= 21:
        return sign + digits + "0" * (n - k)
    if 0 < n <= 21:
        return sign + digits[:n] + "." + digits[n:]
    if -6 < n <= 0:
        return sign + "0." + "0" * -n + digits
    rest = "." + digits[1:] if k > 1 else ""
    return f"{sign}{digits[0]}{rest}e{'+' if n > 1 else '-'}{abs(n - 1)}"


def _utf16(key: str) -> bytes:
    return key.encode("utf-16-be", "surrogatepass")


def _write(value: Json, out: list[str]) -> None:
    """JCS by hand, for what `_Slow` names; orjson writes everything else."""
    if isinstance(value, dict):
        out.append("{")
        for index, key in enumerate(sorted(value, key=_utf16)):
            out.append(("," if index else "") + encode_basestring(key) + ":")
            _write(value[key], out)
        out.append("}")
    elif isinstance(value, list):
        out.append("[")
        for index, item in enumerate(value):
            if index:
                out.append(",")
            _write(item, out)
        out.append("]")
    elif isinstance(value, float):
        out.append(_number(value))
    elif isinstance(value, str):
        out.append(encode_basestring(value))
    else:
        out.append(orjson.dumps(value).decode())  # int, bool, None


def _plain(values: dict[str, object]) -> dict[str, object]:
    """A payload of plain values as orjson writes it to JCS, copied only where it must change.

    The common payload is a dict of short keys, text, safe integers, flags,
    non-integral doubles and lists of names, perhaps with a dict of metrics:
    all written by orjson as they are. One pass checks that; integral doubles (an alpha of 1.0) are
    swapped for integers in a copy. Anything else raises `_Slow` for `_map`,
    which handles every case (and `TypeError`, for a key that is not text).
    """
    keys = "".join(values)
    if "\x00" in keys or not (keys.isascii() or max(keys) < "\ue000"):
        raise _Slow
    out = values
    for key, value in values.items():
        kind = type(value)
        if kind is str:
            if "\x00" in value:  # type: ignore[operator]
                raise _Slow
            continue
        if kind is float:
            number = cast(float, value)
            if not _ORJSON_DECIMAL <= abs(number) < _INTEGER_FORM:  # NaN fails this too
                if number != 0.0 or math.copysign(1.0, number) < 0:
                    raise _Slow
            elif not number.is_integer():
                continue
            elif not -EXACT_INT <= number <= EXACT_INT:
                raise _Slow
            replaced: object = int(number)
        elif kind is int:
            if not -EXACT_INT <= cast(int, value) <= EXACT_INT:
                raise _Slow
            continue
        elif kind is dict:
            replaced = _plain(cast(dict[str, object], value))
            if replaced is value:
                continue
        elif kind is bool or value is None:
            continue
        elif kind is list and all(type(item) is str for item in cast(list[object], value)):
            if any("\x00" in item for item in cast(list[str], value)):
                raise _Slow
            continue  # names, such as the checks a gate passed
        else:
            raise _Slow
        if out is values:
            out = dict(values)
        out[key] = replaced
    return out


def _encode(value: object, stored: bool) -> str:
    try:
        if type(value) is dict and not stored:
            try:
                plain = _plain(cast(dict[str, object], value))
            except (_Slow, TypeError):
                pass
            else:
                return orjson.dumps(plain, option=_SORTED).decode()
        return orjson.dumps(_map(value, stored), option=_SORTED).decode()
    except _Slow:
        pass
    except orjson.JSONEncodeError as exc:  # a lone surrogate: not Unicode text
        raise PayloadInvalid(f"cannot be written as canonical JSON: {exc}") from None
    out: list[str] = []
    _write(_map(value, stored, False), out)
    text = "".join(out)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise PayloadInvalid(f"cannot be written as canonical JSON: {exc.reason}") from None
    return text


def jcs_value(value: object) -> Json:
    """The value a payload becomes in format 2 (the special floats spelt, integral floats whole)."""
    try:
        return _map(value, False)
    except _Slow:
        return _map(value, False, False)


def jcs_text(value: object) -> str:
    """The RFC 8785 text of a value about to be recorded; refuses what JCS cannot hold exactly."""
    return _encode(value, False)


def stored_jcs_text(value: Json) -> str:
    """The RFC 8785 text of a payload read back from a database (JSONB may have rewritten it)."""
    return _encode(value, True)


def envelope(
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
    run_prev_hash: str,
    rank: int | None,
) -> str:
    """The JCS text a format-2 event's hash is taken over: its columns and both links.

    It is JCS of the object made of every `events` column but ``position``
    and ``hash`` (``payload`` as its JSON value, ``recorded_at`` as the
    hashed text), plus ``"format": 2`` and ``run_prev_hash``, the hash of
    the run's event before it by position (for a run's first event, the
    previous run's first event: the ledger's chain of run starts, which a run's ``RunStarted`` also
    stores as its ``prev_hash``). Written
    out by hand in JCS key order because it runs once per event; a test
    holds it to an independent JCS library.
    """
    return quoted_envelope(
        quote(event_id),
        quote(run_id),
        quote(stream_id),
        version,
        quote(event_type),
        schema_version,
        "null" if epoch is None else str(int(epoch)),
        "null" if seed_id is None else quote(seed_id),
        payload_text,
        quote(recorded_at),
        prev_hash,
        run_prev_hash,
        rank,
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
    run_prev_hash: str,
    rank: int | None,
) -> str:
    """`envelope` from strings already quoted (the hashes bare: hex needs no escaping)."""
    return (
        f'{{"epoch":{epoch},"event_id":{event_id},"event_type":{event_type},"format":2'
        f',"payload":{payload_text},"prev_hash":"{prev_hash}"'
        f',"rank":{"null" if rank is None else int(rank)},"recorded_at":{recorded_at}'
        f',"run_id":{run_id},"run_prev_hash":"{run_prev_hash}"'
        f',"schema_version":{int(schema_version)},"seed_id":{seed_id}'
        f',"stream_id":{stream_id},"version":{int(version)}}}'
    )


def event_hash(text: str) -> str:
    """SHA-256 of a format-2 envelope's UTF-8 bytes: the links are inside it."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


__all__ = [
    "EXACT_INT",
    "envelope",
    "event_hash",
    "jcs_text",
    "jcs_value",
    "quoted_envelope",
    "stored_jcs_text",
]
