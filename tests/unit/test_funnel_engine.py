"""The funnel SQL of dbt_project/macros/funnels.sql, run in an in-memory DuckDB on hand-built events.

Each hand test writes its expected numbers out, and also checks that tests/funnel_reference.py (a
plain-Python engine written from the same rules) agrees; a hypothesis test then compares the two on
random events and random funnels of every mode. The BigQuery rendering is parsed with sqlglot.
"""

from __future__ import annotations

import itertools
import json
import math
from datetime import UTC, datetime, timedelta
from typing import Any

import duckdb
import numpy as np
import pytest
import sqlglot
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from analytics_core.funnel_sql import macros, render, render_entries
from analytics_core.funnels import Funnel
from tests import funnel_reference
from tests.dbt_bigquery import parse_error

S = 1_000_000  # microseconds in a second
DAY = 86_400 * S
T0 = 1_767_225_600 * S  # 2026-01-01T00:00:00Z
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
COLUMNS = (
    "tenant_id varchar, event_id varchar, event_type varchar, user_key varchar, event_at timestamptz, "
    "page varchar, country varchar, device varchar, library varchar, currency varchar, experiment_key varchar, "
    "experiment_variant varchar, properties varchar, revenue double, is_bot boolean"
)
_ids = itertools.count(1)


def ev(
    at: float,
    event_type: str,
    user: str = "u",
    tenant: str = "t",
    us: int = 0,
    event_id: str | None = None,
    bot: bool = False,
    properties: dict[str, Any] | None = None,
    **fields: Any,
) -> dict[str, Any]:
    """An event `at` seconds (plus `us` microseconds) after T0; ids rise in creation order unless given."""
    return {
        "tenant_id": tenant,
        "event_id": event_id or f"e{next(_ids):06d}",
        "event_type": event_type,
        "user_key": user,
        "ts": T0 + round(at * S) + us,
        "page": fields.get("page"),
        "country": fields.get("country", "unknown"),
        "device": fields.get("device", "unknown"),
        "library": fields.get("library"),
        "currency": None,
        "experiment_variant": None,
        "properties": json.dumps(properties or {}),
        "is_bot": bot,
    }


def funnel(*steps: str | dict[str, Any], window: int = 20, **definition: Any) -> Funnel:
    listed = [{"event_type": s} if isinstance(s, str) else s for s in steps]
    return Funnel.model_validate({"steps": listed, "window": window, **definition})


def at(us: int) -> datetime:
    return EPOCH + timedelta(microseconds=us)


def _us(value: datetime | None) -> int | None:
    return None if value is None else (value - EPOCH) // timedelta(microseconds=1)


def _load(events: list[dict[str, Any]]) -> duckdb.DuckDBPyConnection:
    con = duckdb.connect()
    con.execute(f"create table events ({COLUMNS})")
    names = [
        *("tenant_id", "event_id", "event_type", "user_key", "ts", "page", "country", "device", "library"),
        *("currency", "experiment_variant", "properties", "is_bot"),
    ]
    if events:
        con.executemany(
            "insert into events values "
            "(?, ?, ?, ?, timezone('UTC', make_timestamp(?)), ?, ?, ?, ?, ?, null, ?, ?, null, ?)",
            [[e[name] for name in names] for e in events],
        )
    return con


def _rows(cursor: duckdb.DuckDBPyConnection) -> list[dict[str, Any]]:
    names = [d[0] for d in cursor.description or []]
    rows = []
    for values in cursor.fetchall():
        row = dict(zip(names, values, strict=True))
        for name, value in row.items():
            if isinstance(value, datetime):
                row[name] = _us(value)
            elif name == "cohort_day":
                row[name] = (value - EPOCH.date()).days
        rows.append(row)
    return rows


def _same(a: list[dict[str, Any]], b: list[dict[str, Any]]) -> bool:
    if len(a) != len(b):
        return False
    for x, y in zip(a, b, strict=True):
        if x.keys() != y.keys():
            return False
        for key in x:
            if isinstance(x[key], float) and isinstance(y[key], float):
                if not math.isclose(x[key], y[key], rel_tol=1e-12, abs_tol=1e-12):
                    return False
            elif x[key] != y[key]:
                return False
    return True


def _sort_key(row: dict[str, Any]) -> list[tuple[bool, Any]]:
    return [(v is None, v if v is not None else "") for k, v in row.items() if not k.startswith(("median", "p90"))]


def run(
    definition: Funnel,
    events: list[dict[str, Any]],
    start: int = T0,
    end: int = T0 + DAY,
    as_of: int = T0 + 10 * DAY,
    group_by: list[str] | None = None,
    by_day: bool = True,
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(entries, summary) from the SQL, after checking that the reference engine gives the same."""
    con = _load(events)
    sql, params = render_entries(definition, "events", at(start), at(end), at(as_of), group_by=group_by)
    entries = sorted(_rows(con.execute(sql, params)), key=lambda r: (r["tenant_id"], r["cohort_day"], r["user_key"]))
    sql, params = render(definition, "events", at(start), at(end), at(as_of), group_by=group_by, by_day=by_day)
    summary = sorted(_rows(con.execute(sql, params)), key=_sort_key)

    expected = funnel_reference.entries(events, definition, start, end, as_of, group_by)
    assert entries == expected, f"SQL entries {entries}\n!= reference {expected}"
    expected_summary = funnel_reference.summary(expected, definition, group_by, by_day)
    assert _same(summary, sorted(expected_summary, key=_sort_key)), f"{summary}\n!= {expected_summary}"
    return entries, summary


def seconds(row: dict[str, Any]) -> list[float | None]:
    """The entry's step times in seconds after T0."""
    return [None if v is None else (v - T0) / S for k, v in row.items() if k.startswith("step_")]


# ---- ordered ----


def test_ordered_counts_steps_in_order_with_other_events_between() -> None:
    entries, summary = run(funnel("A", "B", "C"), [ev(0, "A"), ev(2, "X"), ev(5, "B"), ev(10, "C")])
    assert [(e["depth"], e["status"], seconds(e)) for e in entries] == [(3, "converted", [0, 5, 10])]
    row = summary[0]
    assert (row["entered"], row["reached_1"], row["reached_2"], row["reached_3"]) == (1, 1, 1, 1)
    assert (row["median_s_2"], row["median_s_3"], row["p90_s_2"]) == (5.0, 5.0, 5.0)


def test_ordered_step_before_the_previous_one_does_not_count() -> None:
    entries, summary = run(funnel("A", "B", "C"), [ev(0, "B"), ev(5, "A"), ev(10, "C")])
    assert [(e["depth"], e["status"], seconds(e)) for e in entries] == [(1, "dropped", [5, None, None])]
    assert (summary[0]["reached_2"], summary[0]["median_s_2"]) == (0, None)


def test_ordered_takes_the_earliest_event_of_each_step() -> None:
    entries, _ = run(funnel("A", "B", "C"), [ev(0, "A"), ev(3, "B"), ev(4, "B"), ev(6, "C")])
    assert seconds(entries[0]) == [0, 3, 6]


# ---- strict ----


def test_strict_an_event_between_two_steps_breaks_it() -> None:
    entries, _ = run(funnel("A", "B", order="strict"), [ev(0, "A"), ev(2, "X"), ev(5, "B")])
    assert [(e["depth"], e["status"]) for e in entries] == [(1, "dropped")]


def test_strict_events_at_the_same_time_as_a_step_do_not_break_it() -> None:
    events = [ev(0, "A"), ev(0, "X"), ev(5, "X"), ev(5, "B"), ev(6, "C")]
    entries, _ = run(funnel("A", "B", "C", order="strict"), events)
    assert [(e["depth"], seconds(e)) for e in entries] == [(3, [0, 5, 6])]


def test_strict_stops_when_the_earliest_candidate_has_an_event_before_it() -> None:
    # B@5 has X@3 before it; the attempt stops at A even though nothing else would qualify.
    entries, _ = run(funnel("A", "B", "C", order="strict"), [ev(0, "A"), ev(3, "X"), ev(5, "B"), ev(6, "C")])
    assert [e["depth"] for e in entries] == [1]


def test_strict_bot_events_do_not_break_it() -> None:
    entries, _ = run(funnel("A", "B", order="strict"), [ev(0, "A"), ev(2, "X", bot=True), ev(5, "B")])
    assert [e["depth"] for e in entries] == [2]


# ---- any order ----


def test_any_order_counts_later_steps_in_any_order() -> None:
    entries, summary = run(funnel("A", "B", "C", order="any"), [ev(0, "A"), ev(3, "C"), ev(5, "B")])
    assert [(e["depth"], seconds(e)) for e in entries] == [(3, [0, 3, 5])]  # the k-th smallest times
    assert (summary[0]["median_s_2"], summary[0]["median_s_3"]) == (3.0, 2.0)


def test_any_order_only_counts_events_at_or_after_the_first_step() -> None:
    entries, _ = run(funnel("A", "B", "C", order="any"), [ev(5, "C"), ev(10, "A"), ev(10, "B", event_id="a0")])
    assert [(e["depth"], seconds(e)) for e in entries] == [(2, [10, 10, None])]


def test_any_order_depth_is_one_plus_the_steps_reached() -> None:
    entries, _ = run(funnel("A", "B", "C", "D", order="any"), [ev(0, "A"), ev(4, "D"), ev(30, "B")])
    assert [(e["depth"], seconds(e)) for e in entries] == [(2, [0, 4, None, None])]


# ---- the window ----


def test_an_event_exactly_at_the_end_of_the_window_counts() -> None:
    entries, summary = run(funnel("A", "B", window=20), [ev(0, "A"), ev(20, "B")])
    assert [(e["depth"], e["status"]) for e in entries] == [(2, "converted")]
    assert summary[0]["median_s_2"] == 20.0


def test_an_event_one_microsecond_after_the_window_does_not() -> None:
    entries, _ = run(funnel("A", "B", window=20), [ev(0, "A"), ev(20, "B", us=1)])
    assert [(e["depth"], e["status"]) for e in entries] == [(1, "dropped")]


@pytest.mark.parametrize("order", ["ordered", "strict", "any"])
def test_window_edges_in_every_mode(order: str) -> None:
    events = [ev(0, "A", user="in"), ev(20, "B", user="in"), ev(0, "A", user="out"), ev(20, "B", us=1, user="out")]
    entries, _ = run(funnel("A", "B", window=20, order=order), events)
    assert {e["user_key"]: e["depth"] for e in entries} == {"in": 2, "out": 1}


# ---- exclusions ----


def test_exclusion_between_first_and_last_step_by_default() -> None:
    entries, summary = run(
        funnel("A", "B", "C", exclusions=[{"event_type": "X"}]), [ev(0, "A"), ev(2, "X"), ev(5, "B")]
    )
    assert [(e["status"], e["excluded"]) for e in entries] == [("excluded", True)]
    row = summary[0]
    assert (row["entered"], row["reached_1"], row["excluded"], row["pending"]) == (0, 0, 1, 0)


def test_exclusion_between_explicit_steps_only_counts_inside_its_span() -> None:
    definition = funnel("A", "B", "C", exclusions=[{"event_type": "X", "between": [2, 3]}])
    before_span, _ = run(definition, [ev(0, "A"), ev(2, "X"), ev(5, "B"), ev(8, "C")])
    inside_span, _ = run(definition, [ev(0, "A"), ev(5, "B"), ev(6, "X"), ev(8, "C")])
    at_step_time, _ = run(definition, [ev(0, "A"), ev(5, "B"), ev(8, "X"), ev(8, "C")])
    assert [e["status"] for e in before_span + inside_span + at_step_time] == ["converted", "excluded", "converted"]


def test_exclusion_when_the_attempt_reached_i_but_not_j_counts_within_the_window() -> None:
    definition = funnel("A", "B", "C", window=20, exclusions=[{"event_type": "X", "between": [2, 3]}])
    within, _ = run(definition, [ev(0, "A"), ev(5, "B"), ev(20, "X")])
    after, _ = run(definition, [ev(0, "A"), ev(5, "B"), ev(20, "X", us=1)])
    assert [(e["status"], e["depth"]) for e in within + after] == [("excluded", 2), ("dropped", 2)]


def test_exclusion_does_not_affect_an_attempt_that_did_not_reach_its_first_step() -> None:
    definition = funnel("A", "B", "C", exclusions=[{"event_type": "X", "between": [2, 3]}])
    entries, _ = run(definition, [ev(0, "A"), ev(3, "X")])
    assert [(e["status"], e["depth"]) for e in entries] == [("dropped", 1)]


def test_an_excluded_attempt_gives_way_to_a_valid_one_the_same_day() -> None:
    definition = funnel("A", "B", exclusions=[{"event_type": "X"}])
    entries, summary = run(definition, [ev(0, "A"), ev(2, "X"), ev(5, "B"), ev(100, "A")])
    assert [(e["status"], e["depth"], seconds(e)) for e in entries] == [("dropped", 1, [100, None])]
    assert (summary[0]["entered"], summary[0]["excluded"]) == (1, 0)


@pytest.mark.parametrize("order", ["strict", "any"])
def test_exclusions_in_strict_and_any_order(order: str) -> None:
    definition = funnel("A", "B", "C", order=order, exclusions=[{"event_type": "X", "between": [2, 3]}])
    # any: X after the 2nd reached time, before the 3rd. strict: X breaks the chain before C, so the
    # attempt reached step 2 but not 3, and X falls after step 2 within the window: excluded all the same.
    entries, _ = run(definition, [ev(0, "A"), ev(3, "B"), ev(4, "X"), ev(6, "C")])
    assert [(e["status"], e["depth"]) for e in entries] == [("excluded", 3 if order == "any" else 2)]
    # with X after C (inside the window) neither is excluded: j was reached and X is not before it
    entries, _ = run(definition, [ev(0, "A"), ev(3, "B"), ev(6, "C"), ev(7, "X")])
    assert [(e["status"], e["depth"]) for e in entries] == [("converted", 3)]


# ---- hold constant ----


def test_hold_constant_needs_the_first_steps_value() -> None:
    definition = funnel("A", "B", hold_constant="page")
    entries, _ = run(definition, [ev(0, "A", page="/a"), ev(5, "B", page="/b"), ev(8, "B", page="/a")])
    assert seconds(entries[0]) == [0, 8]


def test_hold_constant_null_on_the_first_step_stops_at_depth_one() -> None:
    definition = funnel("A", "B", hold_constant="page")
    entries, _ = run(definition, [ev(0, "A"), ev(5, "B")])
    assert [e["depth"] for e in entries] == [1]


def test_hold_constant_on_a_property() -> None:
    definition = funnel("A", "B", "C", order="any", hold_constant="properties.cart")
    events = [ev(0, "A", properties={"cart": 7}), ev(2, "C", properties={"cart": "7"}), ev(3, "B", properties={})]
    entries, _ = run(definition, events)
    assert [(e["depth"], seconds(e)) for e in entries] == [(2, [0, 2, None])]


# ---- repeated first steps, same timestamps ----


def test_a_repeated_first_step_restarts_at_the_latest_attempt_that_gets_as_far() -> None:
    entries, summary = run(funnel("A", "B", window=20), [ev(0, "A"), ev(10, "A"), ev(25, "B")])
    assert [(e["status"], seconds(e)) for e in entries] == [("converted", [10, 25])]
    assert summary[0]["median_s_2"] == 15.0


def test_the_deepest_attempt_wins_over_a_later_shallower_one() -> None:
    entries, _ = run(funnel("A", "B", "C", window=20), [ev(0, "A"), ev(5, "B"), ev(8, "A"), ev(9, "C")])
    # the attempt at 0 reaches C (B@5, C@9); the one at 8 reaches only A, so the earlier, deeper one counts
    assert [(e["depth"], seconds(e)) for e in entries] == [(3, [0, 5, 9])]


def test_events_at_the_same_time_satisfy_consecutive_steps_in_either_order() -> None:
    entries, _ = run(funnel("A", "B"), [ev(0, "B", event_id="a"), ev(0, "A", event_id="b")])
    assert [(e["depth"], seconds(e)) for e in entries] == [(2, [0, 0])]


def test_one_event_satisfies_at_most_one_step() -> None:
    one, _ = run(funnel("A", "A"), [ev(0, "A")])
    two, _ = run(funnel("A", "A"), [ev(0, "A"), ev(0, "A")])
    assert [e["depth"] for e in one + two] == [1, 2]


# ---- pending, breakdowns, bots, users, tenants, days ----


def test_pending_while_the_window_is_open_dropped_after() -> None:
    events = [ev(0, "A"), ev(5, "B")]
    open_entries, open_summary = run(funnel("A", "B", "C", window=20), events, as_of=T0 + 10 * S)
    closed_entries, closed_summary = run(funnel("A", "B", "C", window=20), events, as_of=T0 + 20 * S)
    assert [e["status"] for e in open_entries + closed_entries] == ["pending", "dropped"]
    assert (open_summary[0]["pending"], open_summary[0]["pending_at_1"], open_summary[0]["pending_at_2"]) == (1, 0, 1)
    assert (closed_summary[0]["pending"], closed_summary[0]["entered"]) == (0, 1)


def test_breakdowns_come_from_the_first_step() -> None:
    definition = funnel("A", "B", breakdowns=["country", "page"])
    entries, summary = run(definition, [ev(0, "A", country="de", page="/a"), ev(5, "B", country="fr", page="/b")])
    assert [(e["country"], e["page"]) for e in entries] == [("de", "/a")]
    assert [(r["country"], r["page"], r["reached_2"]) for r in summary] == [("de", "/a", 1)]


def test_group_by_overrides_the_funnel_breakdowns() -> None:
    definition = funnel("A", "B", breakdowns=["country"])
    events = [ev(0, "A", device="ios", user="u1"), ev(0, "A", device="web", user="u2"), ev(3, "B", user="u2")]
    _, summary = run(definition, events, group_by=["device"])
    assert [(r["device"], r["entered"], r["reached_2"]) for r in summary] == [("ios", 1, 0), ("web", 1, 1)]


def test_bots_are_left_out() -> None:
    entries, summary = run(funnel("A", "B"), [ev(0, "A"), ev(5, "B", bot=True), ev(0, "A", user="bot", bot=True)])
    assert [(e["user_key"], e["depth"]) for e in entries] == [("u", 1)]
    assert summary[0]["entered"] == 1


def test_users_tenants_and_days_are_counted_apart() -> None:
    events = [
        ev(0, "A", user="u1"),
        ev(5, "B", user="u1"),
        ev(1, "A", user="u2"),
        ev(0, "A", user="u1", tenant="t2"),
        ev(86_400 + 10, "A", user="u1"),  # the next day: a second entry of u1
        ev(86_400 + 12, "B", user="u1"),
    ]
    entries, summary = run(funnel("A", "B"), events, end=T0 + 2 * DAY)
    assert [(e["tenant_id"], e["cohort_day"] - T0 // DAY, e["user_key"], e["depth"]) for e in entries] == [
        ("t", 0, "u1", 2),
        ("t", 0, "u2", 1),
        ("t", 1, "u1", 2),
        ("t2", 0, "u1", 1),
    ]
    assert [(r["tenant_id"], r["entered"], r["reached_2"]) for r in summary] == [("t", 2, 1), ("t", 1, 1), ("t2", 1, 0)]
    _, whole = run(funnel("A", "B"), events, end=T0 + 2 * DAY, by_day=False)
    assert [(r["tenant_id"], r["entered"], r["reached_2"], r["median_s_2"]) for r in whole] == [
        ("t", 3, 2, 3.5),
        ("t2", 1, 0, None),
    ]


def test_an_attempt_keeps_its_cohort_day_when_it_converts_the_next_day() -> None:
    entries, _ = run(funnel("A", "B", window=60), [ev(86_400 - 10, "A"), ev(86_400 + 10, "B")], end=T0 + 2 * DAY)
    assert [(e["cohort_day"] - T0 // DAY, e["status"]) for e in entries] == [(0, "converted")]


def test_first_steps_outside_the_range_do_not_start_attempts() -> None:
    entries, _ = run(funnel("A", "B"), [ev(-1, "A"), ev(0, "B"), ev(86_400, "A")])
    assert entries == []


# ---- filters ----


def test_properties_filters_present_missing_and_numeric() -> None:
    definition = funnel({"event_type": "A", "where": {"properties.plan": ["pro", 10, 1.5]}}, "B")
    events = [
        ev(0, "A", user="string", properties={"plan": "pro"}),
        ev(0, "A", user="integer", properties={"plan": 10}),
        ev(0, "A", user="decimal", properties={"plan": 1.5}),
        ev(0, "A", user="missing", properties={}),
        ev(0, "A", user="null", properties={"plan": None}),
        ev(0, "A", user="object", properties={"plan": {"pro": 1}}),
        ev(0, "A", user="other", properties={"plan": "free"}),
    ]
    entries, _ = run(definition, events)
    assert sorted(e["user_key"] for e in entries) == ["decimal", "integer", "string"]


def test_column_filters_and_a_null_column_never_matches() -> None:
    definition = funnel({"event_type": "A", "where": {"page": ["/a", "/b"], "country": "de"}}, "B")
    events = [
        ev(0, "A", user="yes", page="/b", country="de"),
        ev(0, "A", user="other_country", page="/a", country="fr"),
        ev(0, "A", user="no_page", country="de"),
    ]
    entries, _ = run(definition, events)
    assert [e["user_key"] for e in entries] == ["yes"]


def test_values_are_bound_not_pasted() -> None:
    nasty = "it's'; drop table events; --"
    definition = funnel({"event_type": nasty, "where": {"page": [nasty]}}, "B")
    entries, _ = run(definition, [ev(0, nasty, page=nasty), ev(1, "B"), ev(0, "A", user="v", page=nasty)])
    assert [e["depth"] for e in entries] == [2]
    sql, params = render(definition, "events", at(T0), at(T0 + DAY), at(T0))
    assert nasty not in sql and "drop table" not in sql
    assert nasty in params.values()


@pytest.mark.parametrize("value", ["it's", "back\\slash", "new\nline", "'; drop table x; --", "\\'"])
def test_literal_binders_quote_any_value(value: str) -> None:
    module = macros()
    assert duckdb.connect().execute(f"select {module.funnel_duckdb_literal(value)}").fetchone() == (value,)
    parsed = sqlglot.parse_one(f"select {module.funnel_bigquery_literal(value)}", read="bigquery")
    assert parsed.expressions[0].this == value


def test_a_pasted_name_that_is_not_a_field_is_refused() -> None:
    raw = {"steps": [{"event_type": "A", "where": {"properties.x') or (1": ["v"]}}, {"event_type": "B"}], "window": 9}
    with pytest.raises(KeyError, match="not a filterable field"):
        macros().funnel_entries("events", raw, "start", "end", "as_of", str)


def test_the_raw_dbt_var_shape_renders_too() -> None:
    raw = {"steps": [{"event_type": "A", "where": {"page": "/a"}}, {"event_type": "B"}], "window": "1d"}
    sql = str(macros().funnel_summary("events", raw, "s", "e", "a", macros().funnel_duckdb_literal))
    assert "t_1 + 86400000000" in sql and "page in ('/a')" in sql


# ---- quantiles ----


def test_time_to_convert_quantiles_match_numpy() -> None:
    durations = [1.5, 2, 2, 3.25, 7, 11, 12.000001, 13, 19, 20]
    events = []
    for i, d in enumerate(durations):
        events += [
            ev(i * 100, "A", user=f"u{i}"),
            ev(i * 100 + d, "B", user=f"u{i}"),
            ev(i * 100 + d + 0.5, "C", user=f"u{i}"),
        ]
    for i in range(3):  # users who stop at A add nothing to the durations
        events.append(ev(5000 + i, "A", user=f"drop{i}"))
    _, summary = run(funnel("A", "B", "C", window=30), events)
    row = summary[0]
    assert (row["entered"], row["reached_2"], row["reached_3"]) == (13, 10, 10)
    assert row["median_s_2"] == pytest.approx(float(np.quantile(durations, 0.5)), rel=1e-12)
    assert row["p90_s_2"] == pytest.approx(float(np.quantile(durations, 0.9)), rel=1e-12)
    assert row["median_s_3"] == row["p90_s_3"] == 0.5


@pytest.mark.parametrize("count", [1, 2, 3, 4, 7])
def test_quantiles_of_few_values(count: int) -> None:
    durations = [0.25 * (k + 1) ** 2 for k in range(count)]
    events = [
        e for i, d in enumerate(durations) for e in (ev(i * 100, "A", user=f"u{i}"), ev(i * 100 + d, "B", user=f"u{i}"))
    ]
    _, summary = run(funnel("A", "B", window=60), events)
    assert summary[0]["median_s_2"] == float(np.quantile(durations, 0.5))
    assert summary[0]["p90_s_2"] == float(np.quantile(durations, 0.9))


# ---- BigQuery ----


@pytest.mark.parametrize("order", ["ordered", "strict", "any"])
def test_bigquery_rendering_parses(order: str) -> None:
    definition = funnel(
        {"event_type": "A", "where": {"properties.plan": ["it's"], "page": ["/a"]}},
        "B",
        "C",
        order=order,
        exclusions=[{"event_type": "X"}, {"event_type": "Y", "between": [2, 3]}],
        hold_constant="properties.cart",
        breakdowns=["country", "device"],
    )
    for by_day in (True, False):
        sql, _ = render(definition, "`p.d.events`", at(T0), at(T0 + DAY), at(T0), dialect="bigquery", by_day=by_day)
        assert parse_error(sql) is None, parse_error(sql)
        assert "$p" not in sql and "@p1" in sql and "epoch_us" not in sql
    sql, _ = render_entries(
        definition, "(select * from `p.d.events`)", at(T0), at(T0 + DAY), at(T0), dialect="bigquery"
    )
    assert parse_error(sql) is None, parse_error(sql)
    literal = macros().funnel_summary(
        "`p.d.events`", definition.model_dump(mode="json"), "s", "e", "a", macros().funnel_bigquery_literal, "bigquery"
    )
    assert parse_error(str(literal)) is None


# ---- random events and funnels against the reference ----

TYPES = ["A", "B", "C", "D"]
PLANS = [None, "x", "y", 1, 2.5, True, {"o": 1}]


@st.composite
def funnels(draw: st.DrawFn) -> Funnel:
    order = draw(st.sampled_from(["ordered", "strict", "any"]))
    n = draw(st.integers(2, 4))
    # any order needs a different type per step; the others may repeat one (A -> A)
    types = draw(st.permutations(TYPES))[:n] if order == "any" else [draw(st.sampled_from(TYPES[:3])) for _ in range(n)]
    steps = []
    for event_type in types:
        step: dict[str, Any] = {"event_type": event_type}
        if draw(st.integers(0, 4)) == 0:
            field = draw(st.sampled_from(["page", "properties.plan"]))
            pool = ["/a", "/b"] if field == "page" else ["x", "y", "1", "2.5", "true"]
            step["where"] = {field: draw(st.lists(st.sampled_from(pool), min_size=1, max_size=2, unique=True))}
        steps.append(step)
    exclusions = []
    for _ in range(draw(st.integers(0, 2))):
        exclusion: dict[str, Any] = {"event_type": draw(st.sampled_from([*TYPES, "X"]))}
        if draw(st.integers(0, 3)) == 0:
            exclusion["where"] = {"page": [draw(st.sampled_from(["/a", "/b"]))]}
        if draw(st.booleans()):
            i = draw(st.integers(1, n - 1))
            exclusion["between"] = [i, draw(st.integers(i + 1, n))]
        exclusions.append(exclusion)
    return Funnel.model_validate(
        {
            "steps": steps,
            "window": draw(st.integers(1, 12)),
            "order": order,
            "exclusions": exclusions,
            "hold_constant": draw(st.sampled_from([None, None, "page", "properties.plan"])),
            "breakdowns": draw(st.sampled_from([[], ["page"], ["country"]])),
        }
    )


@st.composite
def event_sets(draw: st.DrawFn) -> list[dict[str, Any]]:
    events = []
    ids = draw(st.permutations(range(40)))
    for i in range(draw(st.integers(0, 25))):
        plan = draw(st.sampled_from(PLANS))
        events.append(
            ev(
                # a few seconds either side of midnight, to the microsecond edge, often tied
                draw(st.integers(-3, 14)) + (86_400 - 5 if draw(st.integers(0, 5)) == 0 else 0),
                draw(st.sampled_from([*TYPES, "X"])),
                user=draw(st.sampled_from(["u1", "u2"])),
                tenant=draw(st.sampled_from(["t1", "t1", "t2"])),
                us=draw(st.sampled_from([0, 0, 0, 1, -1])),
                event_id=f"id{ids[i]:02d}",
                bot=draw(st.integers(0, 9)) == 0,
                properties={} if plan is None and draw(st.booleans()) else {"plan": plan},
                page=draw(st.sampled_from([None, "/a", "/b"])),
                country=draw(st.sampled_from(["de", "fr"])),
            )
        )
    return events


@settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(definition=funnels(), events=event_sets(), as_of=st.integers(-2, 20), by_day=st.booleans())
def test_sql_matches_the_reference(definition: Funnel, events: list[dict[str, Any]], as_of: int, by_day: bool) -> None:
    run(definition, events, start=T0, end=T0 + DAY, as_of=T0 + as_of * S, by_day=by_day)


# ---- entries kept, summarized later (fct_funnel_entries, then fct_funnel_daily) ----


def test_kept_entries_summarized_later_equal_the_summary_of_the_events_then() -> None:
    """The engine's entry rows kept with open_until, their status taken at a later time with
    funnel_status and aggregated by funnel_summary_of_entries, give funnel_summary's numbers at that time."""
    definition = funnel(
        "A", "B", "C", exclusions=[{"event_type": "X", "between": [1, 3]}], breakdowns=["country"]
    ).model_dump(mode="json")
    events = [
        *(ev(0, "A", "u1", country="de"), ev(5, "B", "u1"), ev(9, "C", "u1")),  # converted
        *(ev(0, "A", "u2"), ev(5, "B", "u2")),  # depth 2, open until 20
        *(ev(3, "A", "u3"), ev(4, "X", "u3")),  # excluded
        *(ev(0, "A", "u4", country="de"), ev(2, "B", "u4"), ev(15, "A", "u4")),  # depth 2 from 0, open until 35
        *(ev(86_400 + 1, "A", "u5"), ev(86_400 + 30, "B", "u5")),  # the next day: B too late, open until 86_421
    ]
    con = _load(events)
    m = macros()

    def stamp(us: int) -> str:
        return f"timezone('UTC', make_timestamp({us}))"

    first, last = stamp(T0), stamp(T0 + 2 * DAY)
    ctes = m.funnel_entry_ctes("events", definition, first, last, stamp(T0 + S), m.funnel_duckdb_literal)
    con.execute(f"create table kept as with {ctes} select * from funnel_entry_rows")
    pending = []
    for later in (10, 25, 40, 86_400 + 10, 86_400 + 30):
        as_of = T0 + later * S
        status = m.funnel_status("is_excluded", "depth", 3, "open_until", str(as_of))
        kept = f"(select * exclude (status), {status} as status from kept)"
        got = _rows(con.execute(str(m.funnel_summary_of_entries(kept, definition))))
        sql = m.funnel_summary("events", definition, first, last, stamp(as_of), m.funnel_duckdb_literal)
        want = _rows(con.execute(str(sql)))
        assert sorted(got, key=_sort_key) == sorted(want, key=_sort_key), later
        pending.append(sum(row["pending"] for row in want))
    assert pending == [3, 2, 1, 1, 0]  # u2, u4 and u5 while their windows are open, then fewer
