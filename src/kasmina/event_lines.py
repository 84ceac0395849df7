"""JSON lines of events, the input of `kasmina append`, checked before anything is written.

An envelope field of the wrong kind (``"epoch": "7"``, ``"seed_id": 42``) or
an unknown key would otherwise be stored as NULL or dropped without a word: a
hole in the audit trail that nobody chose. Each is refused instead, naming the
line and the field, and so is text that is not UTF-8 or JSON nested deeper
than any payload needs. The whole file is read and checked before the batch
is appended, so a bad line anywhere appends nothing.
"""

from __future__ import annotations

import json
import sys
import uuid
from collections.abc import Iterator, Mapping
from typing import BinaryIO

from kasmina.canonical import Json
from kasmina.errors import EventError, KasminaError, PayloadInvalid
from kasmina.events import NewEvent, event_from_dict

#: Every key an event's line may have; payload fields go inside ``payload``.
ENVELOPE_KEYS = ("event_type", "stream_id", "payload", "epoch", "seed_id", "event_id", "version")
#: Epochs and versions are 32-bit integer columns on PostgreSQL.
INT32_MAX = 2**31 - 1
#: Deeper than any payload needs, and far inside what every later step can nest.
MAX_DEPTH = 64
#: Recorded by the ledger itself, each with what the run's state needs.
_LEDGER_ONLY = {
    "RunStarted": "Ledger.start_run begins a run",
    "RunFinished": "finishing the run seals it",
}


def read_events(file: str, run_id: str) -> Iterator[NewEvent]:
    """The events of a JSON-lines file (``-``: standard input), blank lines skipped."""
    try:
        handle: BinaryIO = sys.stdin.buffer if file == "-" else open(file, "rb")  # noqa: SIM115
    except OSError as exc:
        raise KasminaError(f"cannot read --file {file}: {exc.strerror or exc}") from None
    with handle:
        for number, raw in enumerate(handle, 1):
            where = f"line {number}"
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise PayloadInvalid(
                    f"{where} is not valid UTF-8 (byte 0x{raw[exc.start]:02x} at column "
                    f"{exc.start + 1})"
                ) from None
            if text.strip():
                yield event_from_line(json_object(text, where), run_id=run_id, where=where)


def json_object(text: str, where: str) -> dict[str, Json]:
    """Parse one JSON object, refusing repeated keys and nesting past `MAX_DEPTH`."""
    try:
        value = json.loads(text, object_pairs_hook=_unique_keys)
    except json.JSONDecodeError as exc:
        raise PayloadInvalid(f"{where} is not valid JSON: {exc.msg} (column {exc.colno})") from None
    except RecursionError:
        raise PayloadInvalid(f"{where} nests JSON deeper than {MAX_DEPTH} levels") from None
    except PayloadInvalid as exc:
        raise PayloadInvalid(f"{where}: {exc}") from None
    except ValueError as exc:  # an integer of thousands of digits: Python's limit on reading one
        raise PayloadInvalid(f"{where} is not valid JSON here: {exc}".split(";")[0]) from None
    if not isinstance(value, dict):
        raise PayloadInvalid(f"{where} must be a JSON object")
    if _depth(value) > MAX_DEPTH:
        raise PayloadInvalid(f"{where} nests JSON deeper than {MAX_DEPTH} levels")
    return value


def event_from_line(item: Mapping[str, Json], *, run_id: str, where: str) -> NewEvent:
    """Validate one line's envelope and payload into an event; the message names the field."""
    unknown = sorted(set(item) - set(ENVELOPE_KEYS))
    if unknown:
        raise PayloadInvalid(
            f"{where}: unknown key {', '.join(map(repr, unknown))} "
            f"(an event has {', '.join(ENVELOPE_KEYS)}; payload fields go inside payload)"
        )
    kind = item.get("event_type")
    if not isinstance(kind, str) or not kind:
        raise PayloadInvalid(
            f"{where}: event_type must be a non-empty string, {_got(item, 'event_type')}"
        )
    if kind in _LEDGER_ONLY:
        raise PayloadInvalid(
            f"{where}: {kind} cannot be appended ({_LEDGER_ONLY[kind]}, never `kasmina append`)"
        )
    stream = item.get("stream_id")
    if not isinstance(stream, str) or not stream:
        raise PayloadInvalid(
            f"{where}: stream_id must be a non-empty string, {_got(item, 'stream_id')}"
        )
    payload = item.get("payload")
    if not isinstance(payload, dict):
        raise PayloadInvalid(f"{where}: payload must be a JSON object, {_got(item, 'payload')}")
    seed_id = item.get("seed_id")
    if seed_id is not None and not isinstance(seed_id, str):
        raise PayloadInvalid(f"{where}: seed_id must be a string or null, {_got(item, 'seed_id')}")
    epoch = _counter(item, "epoch", 0, where)
    version = _counter(item, "version", 1, where)
    event_id = _event_id(item.get("event_id"), where)
    try:
        return event_from_dict(
            kind,
            payload,
            run_id=run_id,
            stream_id=stream,
            epoch=epoch,
            seed_id=seed_id,
            event_id=event_id,
            version=version,
        )
    except EventError as exc:
        raise PayloadInvalid(f"{where}: {exc}") from None


def _counter(item: Mapping[str, Json], key: str, least: int, where: str) -> int | None:
    value = item.get(key)
    if value is None:
        return None
    if type(value) is not int or not least <= value <= INT32_MAX:
        raise PayloadInvalid(
            f"{where}: {key} must be a whole number from {least} to {INT32_MAX} or null, "
            f"{_got(item, key)}"
        )
    return value


def _event_id(value: Json, where: str) -> str | None:
    """A given id, in the UUID's one spelling, so that a retry with another spelling matches."""
    if value is None:
        return None
    try:
        if not isinstance(value, str):
            raise ValueError
        return str(uuid.UUID(value))
    except ValueError:
        raise PayloadInvalid(f"{where}: event_id must be a UUID, got {_shown(value)}") from None


def _unique_keys(pairs: list[tuple[str, Json]]) -> dict[str, Json]:
    out: dict[str, Json] = {}
    for key, value in pairs:
        if key in out:
            raise PayloadInvalid(f"key {key!r} appears twice in one object")
        out[key] = value
    return out


def _depth(value: Json) -> int:
    """How deeply lists and objects nest (a scalar is 0), without recursion."""
    deepest = 0
    pending: list[tuple[Json, int]] = [(value, 0)]
    while pending:
        node, depth = pending.pop()
        if isinstance(node, dict | list):
            depth += 1
            deepest = max(deepest, depth)
            children = node.values() if isinstance(node, dict) else node
            pending.extend((child, depth) for child in children)
    return deepest


def _got(item: Mapping[str, Json], key: str) -> str:
    return f"got {_shown(item[key])}" if key in item else "but it is missing"


def _shown(value: Json) -> str:
    """A value as the user wrote it, cut short: enough to find it in the file."""
    text = json.dumps(value, ensure_ascii=False)
    return text if len(text) <= 40 else f"{text[:37]}..."
