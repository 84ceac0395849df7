"""`Ledger.frame`: the same values as `Ledger.sql`, with dtypes that keep NULLs, on both
databases, through pandas and polars."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import pandas as pd
import polars as pl
import pytest

from kasmina.errors import QueryError
from kasmina.events import EpochCompleted
from kasmina.ledger import Ledger
from kasmina.replay.synthetic import synthetic_run


@pytest.fixture
def ledger(db_url: str) -> Any:
    with Ledger.open(db_url) as opened:
        synthetic_run(opened, epochs=5, slots=3, seed=0, gc_period=1000)
        plain = opened.start_run("whole", seed=1)
        plain.recorder.emit(EpochCompleted(val_accuracy=50.0), stream_id="run", epoch=0)
        plain.finish()
        opened.start_run("silent", seed=2).finish()
        yield opened


def _sql(ledger: Ledger, query: str) -> tuple[list[str], list[tuple[object, ...]]]:
    columns, rows = ledger.sql(query)
    return columns, [tuple(row) for row in rows]


def _cell(value: object, column: str) -> object:
    if value is None or value is pd.NA or (isinstance(value, float) and value != value):
        return None
    if column.endswith("_at") and isinstance(value, str):
        return pd.Timestamp(datetime.fromisoformat(value))
    if isinstance(value, datetime):
        return pd.Timestamp(value)
    return float(value) if type(value).__name__ == "Decimal" else value


def _values(df: pd.DataFrame) -> list[tuple[object, ...]]:
    return [
        tuple(_cell(v, c) for v, c in zip(row, df.columns, strict=True))
        for row in df.itertuples(index=False)
    ]


@pytest.mark.parametrize("view", ["seed_outcomes", "stage_changes", "run_summary", "events"])
def test_a_view_gives_the_rows_sql_gives(ledger: Ledger, view: str) -> None:
    df = ledger.frame(view)
    columns, rows = _sql(ledger, f"SELECT * FROM {view}")
    assert list(df.columns) == columns and len(df) == len(rows) > 0
    expected = [tuple(_cell(v, c) for v, c in zip(r, columns, strict=True)) for r in rows]
    assert _values(df) == expected


def test_run_keeps_one_runs_rows_and_is_run_in_a_query(ledger: Ledger) -> None:
    run_id = ledger.resolve_run("latest~2")
    df = ledger.frame("stage_changes", run="latest~2")
    assert len(df) > 0 and set(df["run_id"]) == {run_id}
    query = "SELECT COUNT(*) AS n FROM stage_changes WHERE run_id = :run AND epoch >= :from"
    counted = ledger.frame(query, run="latest~2", params={"from": 2})
    assert counted["n"].tolist() == [int((df["epoch"] >= 2).sum())]


def test_missing_values_keep_their_column_type(ledger: Ledger) -> None:
    df = ledger.frame(
        "SELECT name, epochs, final_val_accuracy, started_at FROM run_summary ORDER BY name"
    )
    assert str(df["final_val_accuracy"].dtype) == "Float64"  # 50.0 stays a float
    assert str(df["epochs"].dtype) == "Int64"
    assert df.set_index("name")["final_val_accuracy"]["whole"] == 50.0
    assert df.set_index("name")["final_val_accuracy"].isna()["silent"]
    assert str(df["started_at"].dtype).startswith("datetime64") and df["started_at"].dt.tz


def test_polars_gives_the_same_values(ledger: Ledger) -> None:
    query = "SELECT run_id, epoch, seed_id, recorded_at FROM events ORDER BY position"
    with_pandas = ledger.frame(query)
    with_polars = ledger.frame(query, engine="polars")
    assert isinstance(with_polars, pl.DataFrame)
    assert with_polars.schema["epoch"] == pl.Int64
    assert with_polars["epoch"].to_list() == [
        None if v is pd.NA else v for v in with_pandas["epoch"].tolist()
    ]
    assert with_polars["recorded_at"].dt.epoch("us").to_list() == [
        t.value // 1000 for t in with_pandas["recorded_at"]
    ]


def test_an_unknown_view_is_one_line(ledger: Ledger) -> None:
    with pytest.raises(QueryError, match=r"no view 'nope'; the ledger has: .*seed_outcomes"):
        ledger.frame("nope")
