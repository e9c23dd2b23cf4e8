"""A funnel's answer for one tenant: from fct_funnel_daily (a defined funnel, whole UTC days) or the staged events.

Both run the same counting (dbt_project/macros/funnels.sql): the table holds its result per cohort
day as the hourly job computed it; for an ad-hoc funnel, a range that is not whole UTC days, or
`total` (whose medians no daily row can give), the query API renders the macros itself
(analytics_core/funnel_sql.py) over the tenant's staged events of the range, every value a bound
parameter. tests/integration/test_funnels_dbt.py holds the two paths to the same numbers.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

from analytics_core.funnel_sql import render
from analytics_core.funnels import Funnel
from api.engine.errors import QueryError

STAGED = "stg_tracking__events"
Read = Callable[[str, Any], list[tuple[Any, ...]]]


class TableNotReady(Exception):
    """The daily table does not hold the funnel as defined now, and the range is too long for the staged events."""


def whole_days(start: datetime, end: datetime) -> bool:
    return all(t.astimezone(UTC).time() == time(0) for t in (start, end))


def check_range(start: datetime, end: datetime, raw: bool, max_days: int, max_raw_days: int) -> None:
    """The range's rules, before anything is read: not empty, at most the limit of its path."""
    if end <= start:
        raise QueryError("end", "after_start", "end must be after start")
    days = (end - start).total_seconds() / 86_400
    limit, rule = (max_raw_days, "max_raw_range_days") if raw else (max_days, "max_range_days")
    if days > limit:
        raise QueryError("end", rule, f"the range spans {days:g} days; at most {limit} here")


def _row(values: dict[str, Any], steps: int, day: date | None, breakdown_value: Any) -> dict[str, Any]:
    return {
        "cohort_day": day,
        "breakdown_value": None if breakdown_value is None else str(breakdown_value),
        "entered": int(values["entered"]),
        "reached": [int(values[f"reached_{k}"]) for k in range(1, steps + 1)],
        "pending": int(values["pending"]),
        "pending_at": [int(values[f"pending_at_{k}"]) for k in range(1, steps)],
        "excluded": int(values["excluded"]),
        "median_s": [values[f"median_s_{k}"] for k in range(2, steps + 1)],
        "p90_s": [values[f"p90_s_{k}"] for k in range(2, steps + 1)],
    }


def from_table(
    read: Read,
    tenant_id: str,
    key: str,
    funnel: Funnel,
    start: datetime,
    end: datetime,
    breakdown: str | None,
    cap: int,
    definition_hash: str,
) -> tuple[list[dict[str, Any]], datetime | None] | None:
    """Rows per cohort day of a defined funnel over whole UTC days [start, end), and when the table was
    built; None when fct_funnel_daily does not hold the funnel as defined now (not built, or some of its
    rows built by another definition than `definition_hash`). One statement: the check and the rows."""
    n = len(funnel.steps)
    columns = ["cohort_day", "breakdown_value", "_built_at", *_counts(n)]
    found = read(
        "WITH hashes AS (SELECT list(DISTINCT definition_hash) AS found FROM {lake}.main.fct_funnel_daily"
        " WHERE funnel_key = ?), wanted AS ("
        f"SELECT {', '.join(columns)} FROM {{lake}}.main.fct_funnel_daily WHERE tenant_id = ? AND funnel_key = ?"
        " AND breakdown = ? AND cohort_day >= ? AND cohort_day < ? ORDER BY cohort_day, breakdown_value LIMIT ?)"
        " SELECT hashes.found, wanted.* FROM hashes LEFT JOIN wanted ON true"
        " ORDER BY wanted.cohort_day, wanted.breakdown_value",
        [key, tenant_id, key, breakdown or "", start.astimezone(UTC).date(), end.astimezone(UTC).date(), cap + 1],
    )
    if not found or found[0][0] != [definition_hash]:
        return None
    rows = [dict(zip(columns, r[1:], strict=True)) for r in found if r[1] is not None]
    built = max((r["_built_at"] for r in rows), default=None)
    return [_row(r, n, r["cohort_day"], r["breakdown_value"]) for r in rows], built


def from_events(
    read: Read,
    alias: str,
    tenant_id: str,
    funnel: Funnel,
    start: datetime,
    end: datetime,
    as_of: datetime,
    breakdown: str | None,
    by_day: bool,
    cap: int,
) -> list[dict[str, Any]]:
    """Rows of the funnel over the tenant's staged events, by cohort day or for the whole range."""
    group = [breakdown] if breakdown else []
    last = end + timedelta(seconds=funnel.window)  # later steps may come until the last window's end
    events = (
        f"(SELECT * FROM {alias}.main.{STAGED} WHERE tenant_id = $tenant"
        " AND event_at >= cast($first AS timestamptz) AND event_at <= cast($last AS timestamptz))"
    )
    sql, params = render(funnel, events, start, end, as_of, group_by=group, by_day=by_day)
    n = len(funnel.steps)
    keys = [*(["cohort_day"] if by_day else []), *group]
    names = [*keys, *_counts(n)]
    bound = {**params, "tenant": tenant_id, "first": start.isoformat(), "last": last.isoformat(), "cap": cap + 1}
    order = ", ".join(keys) or "entered"
    found = read(f"SELECT {', '.join(names)} FROM ({sql}) AS funnel ORDER BY {order} LIMIT $cap", bound)
    rows = [dict(zip(names, r, strict=True)) for r in found]
    return [_row(r, n, r.get("cohort_day"), r.get(breakdown) if breakdown else None) for r in rows]


def _counts(n: int) -> list[str]:
    """The summary's columns after its keys, for a funnel of n steps."""
    return [
        "entered",
        "pending",
        "excluded",
        *(f"reached_{k}" for k in range(1, n + 1)),
        *(f"pending_at_{k}" for k in range(1, n)),
        *(f"median_s_{k}" for k in range(2, n + 1)),
        *(f"p90_s_{k}" for k in range(2, n + 1)),
    ]


STALE_TABLE = (
    "fct_funnel_daily does not hold this funnel as defined now (not built yet, or built by another"
    " definition): counted from the staged events"
)


def answer(
    read: Read,
    alias: str,
    tenant_id: str,
    key: str | None,
    funnel: Funnel,
    start: datetime,
    end: datetime,
    breakdown: str | None,
    by_day: bool,
    cap: int,
    table_hash: str | None,
    max_raw_days: int,
) -> dict[str, Any]:
    """The rows and where they came from: the daily table when it can answer and holds the funnel as
    defined now (`table_hash`), else the staged events (the range's limits were checked before)."""
    as_of = datetime.now(UTC)
    note = None
    if key is not None and table_hash is not None and uses_table(key, funnel, start, end, breakdown, by_day):
        held = from_table(read, tenant_id, key, funnel, start, end, breakdown, cap, table_hash)
        if held is not None:
            rows, built = held
            return {"rows": rows, "source": "fct_funnel_daily", "as_of": built, "note": None}
        note = STALE_TABLE
        if (end - start).total_seconds() > max_raw_days * 86_400:
            raise TableNotReady(f"{STALE_TABLE} only up to {max_raw_days} days; the next hourly build will hold it")
    rows = from_events(read, alias, tenant_id, funnel, start, end, as_of, breakdown, by_day, cap)
    return {"rows": rows, "source": "raw_events", "as_of": as_of, "note": note}


def uses_table(
    key: str | None, funnel: Funnel, start: datetime, end: datetime, breakdown: str | None, by_day: bool
) -> bool:
    """Whether the daily table may answer (its longer range limit applies); from_table() checks it is current."""
    return (
        key is not None and by_day and whole_days(start, end) and (breakdown is None or breakdown in funnel.breakdowns)
    )
