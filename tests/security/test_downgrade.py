"""A downgrade that would drop recorded data refuses, saying what it would drop.

`db downgrade base` dropped 191 events without a word, and `db downgrade
0004` dropped the rank column, breaking the hash of every event a
multi-process run wrote. Snapshots are a cache and views are derived, so a
downgrade that drops only those goes ahead.
"""

from __future__ import annotations

import pytest
import rawdb

from kasmina.cli import main
from kasmina.errors import LedgerError, WouldLoseData
from kasmina.ledger import Ledger, migrate
from security.attacks import cli_error, fingerprint

RANKED = "ranked"
#: Both runs are format 2: undoing 0013 leaves their hashes in a format it cannot name.
FORMATS = "the ledger format of 9 events in 2 runs (they would no longer verify)"


@pytest.fixture
def url(attacked_url: str) -> str:
    """The attacked ledger (one sealed run of 7 events) plus a two-rank run of 2 events."""
    with Ledger.open(attacked_url) as ledger:
        ledger.start_run("ranked", seed=2, run_id=RANKED, world_size=2).finish()
    return attacked_url


def _revision(url: str) -> str:
    return str(rawdb.run(url, "SELECT version_num FROM alembic_version")[0][0])


@pytest.mark.parametrize(
    ("target", "loss"),
    [
        ("base", "9 events in 2 runs"),
        ("0001", f"the rank of 2 events in 1 run and {FORMATS}"),
        ("0004", f"the rank of 2 events in 1 run and {FORMATS}"),
    ],
)
def test_a_downgrade_that_drops_data_is_refused_and_changes_nothing(
    url: str, target: str, loss: str, capsys: pytest.CaptureFixture[str]
) -> None:
    before = fingerprint(url)
    line = cli_error(capsys, ["--db", url, "db", "downgrade", target])
    assert line == (
        f"error: downgrade to {target} would drop {loss}; pass --discard-data to drop them"
    )
    assert fingerprint(url) == before
    assert _revision(url) == migrate.HEAD_REVISION


@pytest.mark.ledger_format(1)
def test_dropping_only_caches_and_views_goes_ahead(
    attacked_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """A format-1 run, no rank: down to 0001 loses snapshots and views, no event, no hash."""
    hashes = rawdb.run(attacked_url, "SELECT position, hash FROM events ORDER BY position")
    assert main(["--db", attacked_url, "db", "downgrade", "0001"]) == 0, capsys.readouterr()
    assert capsys.readouterr().out.strip() == "database at revision 0001"
    assert rawdb.run(attacked_url, "SELECT position, hash FROM events ORDER BY position") == hashes
    with Ledger.open(attacked_url) as ledger:
        assert ledger.verify().ok
    assert main(["--db", attacked_url, "db", "upgrade"]) == 0
    with Ledger.open(attacked_url) as ledger:
        assert ledger.revision == migrate.HEAD_REVISION and ledger.verify().ok


def test_discard_data_drops_it_and_says_what_went(
    url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    capsys.readouterr()
    assert main(["--db", url, "db", "downgrade", "0004", "--discard-data"]) == 0
    out = capsys.readouterr().out.strip()
    assert out == f"database at revision 0004 (dropped the rank of 2 events in 1 run and {FORMATS})"
    assert rawdb.run(url, "SELECT COUNT(*) FROM events") == [(9,)]
    assert main(["--db", url, "db", "downgrade", "base", "--discard-data"]) == 0
    assert capsys.readouterr().out.strip() == (
        "database at revision none (dropped 9 events in 2 runs)"
    )


def test_an_empty_ledger_downgrades_to_base_without_discard_data(db_url: str) -> None:
    with Ledger.open(db_url):
        pass
    assert migrate.downgrade(db_url, "base") == []


def test_every_revision_says_what_its_downgrade_drops() -> None:
    """A new migration must decide; one missing from the table is refused, never assumed safe."""
    from alembic.script import ScriptDirectory

    script = ScriptDirectory.from_config(migrate.alembic_config("sqlite://"))
    revisions = {rev.revision for rev in script.walk_revisions()}
    assert revisions <= set(migrate.DOWNGRADE_LOSSES)


def test_a_relative_target_is_checked_like_any_other(url: str) -> None:
    from alembic.script import ScriptDirectory

    script = ScriptDirectory.from_config(migrate.alembic_config("sqlite://"))
    above_rank = len(list(script.iterate_revisions("head", "0004")))
    before = fingerprint(url)
    with pytest.raises(WouldLoseData, match=f"downgrade to -{above_rank} would drop the rank"):
        migrate.downgrade(url, f"-{above_rank}")
    assert fingerprint(url) == before
    # One step less keeps the ranks but still undoes 0013: the formats of the runs.
    with pytest.raises(WouldLoseData, match=rf"-{above_rank - 1} would drop the ledger format of"):
        migrate.downgrade(url, f"-{above_rank - 1}")
    assert fingerprint(url) == before


@pytest.mark.parametrize("target", ["0001-1", "head-16", "base+1", "0013-1", "001", ""])
def test_a_target_alembic_would_read_another_way_is_refused_and_changes_nothing(
    url: str, target: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """`0001-1` or `head-16` went straight to base, dropping every event without a word:
    the losses were counted for nothing while Alembic resolved the words itself."""
    before = fingerprint(url)
    line = cli_error(capsys, ["--db", url, "db", "downgrade", target])
    assert line.startswith(f"error: downgrade target {target!r} is not a revision: give one of ")
    assert line.endswith(", base, or -N (N revisions down)")
    assert fingerprint(url) == before
    assert _revision(url) == migrate.HEAD_REVISION


def test_going_down_past_base_is_refused(url: str, capsys: pytest.CaptureFixture[str]) -> None:
    before = fingerprint(url)
    steps = int(migrate.HEAD_REVISION) + 1
    line = cli_error(capsys, ["--db", url, "db", "downgrade", "--", f"-{steps}"])
    assert line == (
        f"error: cannot go down {steps} revisions from {migrate.HEAD_REVISION}: base comes first"
    )
    with pytest.raises(LedgerError, match="'-0' is not a revision"):
        migrate.downgrade(url, "-0")  # the command line reads it as an option
    assert fingerprint(url) == before
