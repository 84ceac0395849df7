"""Event ids: time-ordered UUIDs, made cheaply once per recorded event."""

from __future__ import annotations

import os
import re
import threading
import time


class _IdState(threading.local):
    """Per thread: random bytes fetched 4 KiB at a time, and the last id's clock.

    Per thread, so two threads never take the same bytes, and emptied in a
    forked child, which would otherwise replay its parent's ids.
    """

    def __init__(self) -> None:
        self.hex = ""  # random bytes, 4 KiB at a time, as hex digits
        self.offset = 0
        self.millis = 0
        self.prefix = ""  # the id's first 15 characters: the millisecond and the version
        self.counter = 0


_ids = _IdState()
os.register_at_fork(after_in_child=lambda: setattr(_ids, "hex", ""))
#: The RFC 9562 variant sets the top two bits of byte 8 to 10: hex digit 8, 9, a or b.
_VARIANT = {digit: "89ab"[int(digit, 16) & 3] for digit in "0123456789abcdef"}


def new_event_id() -> str:
    """A time-ordered (version 7) UUID string, built without `uuid.UUID`'s overhead.

    Why version 7: the unique index on ``event_id`` is written once per event,
    and random ids land on a random page of it each time, so a batch of a
    thousand dirtied about a thousand index pages. Ids that start with the
    time land together at the index's end. Within one millisecond a thread's
    ids count up in the 12 bits after the version (RFC 9562's counter), so a
    thread's ids sort in the order it made them; 62 random bits follow.
    """
    state = _ids
    millis = time.time_ns() // 1_000_000
    if millis > state.millis:
        state.millis, state.counter = millis, 0
        t = f"{millis:012x}"
        state.prefix = f"{t[:8]}-{t[8:]}-7"
    else:
        state.counter += 1
        if state.counter > 0xFFF:  # more than 4,096 ids in a millisecond: borrow the next
            state.millis, state.counter = state.millis + 1, 0
            t = f"{state.millis:012x}"
            state.prefix = f"{t[:8]}-{t[8:]}-7"
    start = state.offset
    if start >= len(state.hex):
        state.hex, start = os.urandom(4096).hex(), 0
    state.offset = start + 16
    r = state.hex[start : start + 16]
    return f"{state.prefix}{state.counter:03x}-{_VARIANT[r[0]]}{r[1:4]}-{r[4:]}"


__all__ = ["new_event_id"]


_UUID_TEXT = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


def uuid_bytes(event_id: str) -> bytes | None:
    """The 16 bytes of an id in the lowercase 8-4-4-4-12 form the ledger stores, else None.

    Only that form: the id's text is hashed, and the ledger gives it back from
    its bytes in that form, so any other spelling of the same UUID would
    no longer verify.
    """
    if _UUID_TEXT.fullmatch(event_id) is None:
        return None
    return bytes.fromhex(event_id.replace("-", ""))


def uuid_text(data: bytes) -> str:
    """`uuid_bytes` undone: 16 bytes as the lowercase 8-4-4-4-12 text that was hashed."""
    return quoted_uuid(data)[1:-1]


def quoted_uuid(data: bytes) -> str:
    """`uuid_text` as a JSON string, as a hashed envelope holds it: hex digits and
    dashes need no escaping, so no encoder is asked (it runs once per verified event)."""
    h = data.hex()
    return f'"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"'
