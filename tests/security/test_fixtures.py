"""The attack tests' own base: the fingerprint sees a change, and the owner is no superuser."""

from __future__ import annotations

import rawdb

from security.attacks import Fingerprint, fingerprint


def test_owner_database_is_not_run_by_a_superuser(owner_pg_url: str) -> None:
    (superuser,) = rawdb.run(
        owner_pg_url, "SELECT rolsuper FROM pg_roles WHERE rolname = current_user"
    )[0]
    assert superuser is False


def test_fingerprint_sees_a_tampered_row(attacked_url: str) -> None:
    before: Fingerprint = fingerprint(attacked_url)
    assert before.verified and before.count == 7
    rawdb.drop_triggers(attacked_url)
    rawdb.run(
        attacked_url,
        "UPDATE events SET epoch = 99 WHERE position = (SELECT MAX(position) FROM events)",
    )
    after = fingerprint(attacked_url)
    assert after != before
    assert not after.verified
