"""A view or a query as a DataFrame (`Ledger.frame`), for notebooks.

The rows come through the same read-only path as `kasmina sql`; the frame
library (pandas, or polars) is an optional extra, ``kasmina[frames]``.
Columns get the dtypes an analysis expects on both databases: whole numbers
stay whole where a value is missing (pandas ``Int64``, not floats with NaN),
floats stay floats, PostgreSQL's ``numeric`` becomes a float, and the
``*_at`` times, which SQLite keeps as ISO text, become UTC datetimes.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from datetime import datetime
from decimal import Decimal
from typing import Any, Literal, Protocol

from kasmina.errors import KasminaError, QueryError
from kasmina.ledger.readonly import DEFAULT_TIMEOUT_S
from kasmina.ledger.sqlparams import NAME


class Source(Protocol):
    """What a frame is read from (`kasmina.ledger.core.Ledger` is one)."""

    @property
    def dialect(self) -> str: ...
    def resolve_run(self, ref: str) -> str: ...
    def views(self) -> set[str]: ...
    def sql(
        self, query: str, *, params: Mapping[str, object] | None = ..., timeout_s: float = ...
    ) -> tuple[list[str], Iterator[tuple[object, ...]]]: ...


Engine = Literal["pandas", "polars"]
_INSTALL = "ledger.frame needs {lib}: pip install 'kasmina[frames]'"


def frame(
    ledger: Source,
    source: str,
    *,
    run: str | None = None,
    params: Mapping[str, object] | None = None,
    engine: Engine = "pandas",
    timeout_s: float = DEFAULT_TIMEOUT_S,
) -> Any:
    """`source` (a view's name, or a query) as a DataFrame; see `Ledger.frame`."""
    values = dict(params or {})
    if run is not None:
        values["run"] = ledger.resolve_run(run)
    if NAME.fullmatch(source):
        known = ledger.views() | {"events"}
        if source not in known:
            raise QueryError(f"no view {source!r}; the ledger has: {', '.join(sorted(known))}")
        query = f'SELECT * FROM "{source}"' + (" WHERE run_id = :run" if run is not None else "")
    else:
        query = source
    columns, rows = ledger.sql(query, params=values, timeout_s=timeout_s)
    data = [tuple(_plain(v) for v in row) for row in rows]
    if engine == "pandas":
        return _pandas(columns, data)
    if engine == "polars":
        return _polars(columns, data)
    raise KasminaError(f"engine {engine!r} is not pandas or polars")


def _plain(value: object) -> object:
    return float(value) if isinstance(value, Decimal) else value


def _times(columns: Sequence[str]) -> list[str]:
    return [c for c in columns if c.endswith("_at")]


def _pandas(columns: list[str], data: list[tuple[object, ...]]) -> Any:
    try:
        import pandas as pd
    except ImportError:
        raise KasminaError(_INSTALL.format(lib="pandas")) from None
    df = pd.DataFrame.from_records(data, columns=columns, coerce_float=False)
    times = set(_times(columns))
    for index, name in enumerate(columns):
        if name in times:
            df[name] = pd.to_datetime(df[name], utc=True, format="ISO8601")
        elif (dtype := _nullable([row[index] for row in data])) is not None:
            df[name] = df[name].astype(dtype)
    return df


def _nullable(values: list[object]) -> str | None:
    """The pandas dtype that keeps a column's values and its NULLs: whole numbers stay
    whole (``Int64``) and floats floats (``Float64``), even where every float is whole."""
    kinds = {type(v) for v in values if v is not None}
    if not kinds:
        return None
    if kinds == {bool}:
        return "boolean"
    if kinds == {int}:
        return "Int64"
    if kinds <= {int, float}:
        return "Float64"
    if kinds == {str}:
        return "string"
    return None


def _polars(columns: list[str], data: list[tuple[object, ...]]) -> Any:
    try:
        import polars as pl
    except ImportError:
        raise KasminaError(_INSTALL.format(lib="polars")) from None
    times = set(_times(columns))
    parsed = [
        tuple(_when(v) if name in times else v for name, v in zip(columns, row, strict=True))
        for row in data
    ]
    return pl.DataFrame(parsed, schema=columns, orient="row", infer_schema_length=None)


def _when(value: object) -> object:
    return datetime.fromisoformat(value) if isinstance(value, str) else value
