"""The ledger formats: how a run's rows are written and hashed, one rule per format.

A run keeps the format it started in (`ledger_runs`); every format ever
written keeps verifying. Format 1 hashes ``prev_hash`` followed by kasmina's
own canonical JSON (`kasmina.canonical`), chained per stream. Format 2 hashes
RFC 8785 text with both links inside it (`kasmina.jcs`). Appending and
verifying both call `row_hash`, so the two can never disagree on the rule.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from kasmina import canonical, jcs

if TYPE_CHECKING:
    from kasmina.events import Payload

#: The format new runs are written in.
LEDGER_FORMAT = 2


def payload_text(payload: Payload, form: int) -> str:
    """The text a payload is stored and hashed as in a run of format `form`."""
    return payload.jcs_text() if form >= 2 else payload.canonical_text()


def row_hash(
    form: int,
    event_id: str,
    run_id: str,
    stream_id: str,
    version: int,
    event_type: str,
    schema_version: int,
    epoch: str,
    seed_id: str,
    payload: str,
    recorded_at: str,
    prev_hash: str,
    run_prev_hash: str,
    rank: int | None,
) -> str:
    """A row's hash from its columns, the strings already JSON-quoted (None as ``null``).

    `prev_hash` links the row to its stream, `run_prev_hash` (format 2 only)
    to the run's row before it by position.
    """
    if form >= 2:
        return jcs.event_hash(
            jcs.quoted_envelope(
                event_id,
                run_id,
                stream_id,
                version,
                event_type,
                schema_version,
                epoch,
                seed_id,
                payload,
                recorded_at,
                prev_hash,
                run_prev_hash,
                rank,
            )  # fmt: skip
        )
    return canonical.chain_hash(
        prev_hash,
        canonical.quoted_envelope(
            event_id,
            run_id,
            stream_id,
            version,
            event_type,
            schema_version,
            epoch,
            seed_id,
            payload,
            recorded_at,
            f'"{prev_hash}"',
            rank,
        ),  # fmt: skip
    )
