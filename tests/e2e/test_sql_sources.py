"""`kasmina sql`: the query as an argument, from stdin or a file, a cookbook recipe, and
named parameters, on both databases."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest

from kasmina.cli import main
from kasmina.ledger import Ledger
from kasmina.recipes import recipe, recipes
from kasmina.replay.synthetic import synthetic_run

PAGE = Path(__file__).resolve().parents[2] / "docs" / "sql.md"


@pytest.fixture
def url(db_url: str) -> str:
    with Ledger.open(db_url) as ledger:
        synthetic_run(ledger, epochs=4, slots=2, seed=0, gc_period=1000)
    return db_url


def _rows(url: str, capsys: pytest.CaptureFixture[str], *args: str) -> list[dict[str, object]]:
    assert main(["--db", url, "sql", *args, "--format", "json"]) == 0
    return list(json.loads(capsys.readouterr().out))


def test_a_query_may_open_with_a_comment(url: str, capsys: pytest.CaptureFixture[str]) -> None:
    rows = _rows(url, capsys, "-- how many events?\nSELECT COUNT(*) AS n FROM events")
    assert rows[0]["n"] == _rows(url, capsys, "SELECT COUNT(*) AS n FROM events")[0]["n"] > 0


def test_stdin_and_a_file_give_the_query(
    url: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    query = "SELECT event_type FROM events ORDER BY position LIMIT 2"
    monkeypatch.setattr("sys.stdin", io.StringIO(query))
    from_stdin = _rows(url, capsys, "-")
    path = tmp_path / "q.sql"
    path.write_text(query)
    assert _rows(url, capsys, "-f", str(path)) == from_stdin == _rows(url, capsys, query)
    assert from_stdin[0]["event_type"] == "RunStarted"


def test_named_parameters(url: str, capsys: pytest.CaptureFixture[str]) -> None:
    query = (
        "SELECT COUNT(*) AS n FROM events WHERE event_type = :kind AND epoch >= :from "
        "AND event_type <> 'x:y'"
    )
    rows = _rows(url, capsys, query, "--param", "kind=SeedTelemetrySampled", "--param", "from=2")
    plain = _rows(
        url,
        capsys,
        "SELECT COUNT(*) AS n FROM events WHERE event_type = 'SeedTelemetrySampled' AND epoch >= 2",
    )
    assert rows == plain and int(str(plain[0]["n"])) > 0


def test_a_recipe_runs_by_name(url: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert "run-overview" in recipes() and len(recipes()) >= 12
    assert recipe("run-overview") in PAGE.read_text()
    assert _rows(url, capsys, "--recipe", "run-overview") == _rows(
        url, capsys, recipe("run-overview")
    )


def test_a_recipe_asks_for_the_seed_it_is_about(
    url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """Your seeds are not the demo's: the recipe names the parameter it needs."""
    with Ledger.open(url) as ledger:
        seeds = sorted({e.seed_id for e in ledger.read(ledger.run_ids()[0]) if e.seed_id})
    assert main(["--db", url, "sql", "--recipe", "seed-moves"]) == 2
    assert capsys.readouterr().err == (
        "error: the query uses :seed but no --param seed=VALUE is given\n"
    )
    for seed in seeds[:2]:
        moves = _rows(url, capsys, "--recipe", "seed-moves", "--param", f"seed={seed}")
        by_hand = _rows(
            url,
            capsys,
            "SELECT run_id, epoch, from_stage, to_stage FROM stage_changes "
            f"WHERE seed_id = '{seed}' ORDER BY position",
        )
        assert moves and [{k: m[k] for k in by_hand[0]} for m in moves] == by_hand
    # A seed id that looks like a number is still compared as text (PostgreSQL refuses
    # text = integer).
    assert _rows(url, capsys, "--recipe", "seed-moves", "--param", "seed=42") == []


def test_the_query_comes_from_one_place(url: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--db", url, "sql", "SELECT 1", "--recipe", "run-overview"]) != 0
    assert "give the query once" in capsys.readouterr().err
    assert main(["--db", url, "sql", "--recipe", "nope"]) != 0
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no recipe 'nope'; the cookbook has: run-overview" in err


def test_run_names_the_run_that_is_run_in_the_query(
    db_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with Ledger.open(db_url) as ledger:
        first = synthetic_run(ledger, epochs=2, slots=1, seed=0, gc_period=1000)
        second = synthetic_run(ledger, epochs=3, slots=1, seed=1, gc_period=1000)
        query = "SELECT run_id, COUNT(*) AS n FROM events WHERE run_id = :run GROUP BY run_id"
        _, rows = ledger.sql(query, params={"run": first})
        expected = [tuple(r) for r in rows]
    assert expected[0][0] == first
    assert [(r["run_id"], r["n"]) for r in _rows(db_url, capsys, query, "--run", "latest~1")] == (
        expected
    )
    assert _rows(db_url, capsys, query, "--run", "latest")[0]["run_id"] == second
    code = main(["--db", db_url, "sql", query, "--run", "latest", "--param", f"run={first}"])
    assert code == 2
    assert "give the run once" in capsys.readouterr().err
