"""SQL fragments shared by the rollup and raw-event reads; every value in them is a bound parameter.

The group outside the top N (answer.OTHER in Python) has NULL values in this SQL; raw reads, where a
NULL value is also a missing one, flag its rows besides (sql/raw_events.py).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from api.engine.timebuckets import Segment
from api.engine.validation import Condition

Params = list[Any]


def placeholders(values: Sequence[Any], params: Params) -> str:
    params.extend(values)
    return ", ".join("?" * len(values))


def utc(t: float) -> datetime:
    return datetime.fromtimestamp(t, UTC)


def bucket_index(column: str, segments: Sequence[Segment] | None, params: Params) -> str:
    """The query bucket of a timestamp column as an integer, by arithmetic on its epoch microseconds.

    Bucket boundaries are computed in Python (zoneinfo); SQL only finds the run of equal-sized
    buckets an instant falls in, so no time-zone conversion runs per row. None: one bucket, 0.
    """
    if not segments:
        return "0"
    micros = f"epoch_us({column})"
    arm = f"? + ({micros} - ?) // ?"
    if len(segments) == 1:
        s = segments[0]
        params.extend([s.first, s.start * 1_000_000, s.size * 1_000_000])
        return f"({arm})"
    whens = []
    for s in segments[:-1]:
        params.extend([s.end * 1_000_000, s.first, s.start * 1_000_000, s.size * 1_000_000])
        whens.append(f"WHEN {micros} < ? THEN {arm}")
    last = segments[-1]
    params.extend([last.first, last.start * 1_000_000, last.size * 1_000_000])
    return f"(CASE {' '.join(whens)} ELSE {arm} END)"


def conditions(
    filters: Sequence[Condition], column: dict[str, str], params: Params, missing: str | None = None
) -> list[str]:
    """SQL conditions of the filters; `column` maps a dimension to its SQL expression.

    `missing`: the columns may be NULL, and a NULL compares as this value. Written without coalesce()
    on the column, which would keep DuckDB from pushing the filter into the scan (the raw path's
    filtered page query: 214 ms with `coalesce(page, '') IN (...)`, 138 ms with `page IN (...)`).
    """
    out = []
    for f in filters:
        col = column[f.dimension]
        test = f"{col} {'NOT IN' if f.negated else 'IN'} ({placeholders(f.values, params)})"
        # NULL IN (...) is NULL, so the row drops out; keep it where its stand-in value would pass.
        if missing is not None and (missing in f.values) != f.negated:
            test = f"({test} OR {col} IS NULL)"
        out.append(test)
    return out


def top_flag(expressions: Sequence[str], top: Sequence[tuple[str | None, ...]], params: Params) -> str:
    """True when the row's group (the expressions' values) is one of the top groups."""
    params.append([list(group) for group in top])
    return f"list_contains(?, [{', '.join(expressions)}])"
