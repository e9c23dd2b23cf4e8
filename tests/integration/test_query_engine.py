"""The query engine on a real DuckLake built by dbt, and on real Redis for the speed layer.

Every expected number is computed here, in SQL over the raw events (first copy of each event id),
with DuckDB's own time-zone functions; never by the code under test. Generated events cover the
2026-03-08 and 2026-11-01 New York clock changes and the last three days (minute rollups).
"""

from __future__ import annotations

import socket
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, tzinfo
from typing import Any
from zoneinfo import ZoneInfo

import duckdb
import pytest
import redis
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from redis.backoff import NoBackoff
from redis.retry import Retry

from analytics_core import sketches, warehouse
from analytics_core.catalogue import get_catalogue
from analytics_core.clients import redis_client
from analytics_core.realtime_keys import RealtimeKeys
from analytics_core.settings import Settings
from api.engine import QueryEngine
from api.engine.errors import QueryError
from api.models import QueryRequest, QueryResult
from tests.integration.dbt_runs import run_dbt
from tests.integration.query_lake import events_sql, insert_block
from tests.integration.realtime_fill import write_realtime
from tests.unique_counts import unique_count_ok

pytestmark = pytest.mark.integration

NOW = datetime.now(UTC).replace(second=0, microsecond=0)
TODAY = NOW.replace(hour=0, minute=0)
LAKE_UNTIL = NOW - timedelta(minutes=30)  # the warehouse's events end here; later ones are realtime only
# The speed-layer cases cover whole hours the warehouse holds and the live minutes past it, at any time of
# day: from the UTC day of three hours before LAKE_UNTIL (yesterday between 00:00 and 03:30) to tomorrow.
SPAN_FROM = (LAKE_UNTIL - timedelta(hours=3)).replace(hour=0, minute=0)
SPAN_END = TODAY + timedelta(days=1)
BLOCKS = (  # start, end, events of tenant_a
    (datetime(2026, 3, 5, tzinfo=UTC), datetime(2026, 3, 11, tzinfo=UTC), 17_000, "mar"),
    (datetime(2026, 10, 30, tzinfo=UTC), datetime(2026, 11, 3, tzinfo=UTC), 11_000, "nov"),
    (TODAY - timedelta(days=3), LAKE_UNTIL, 9_000, "recent"),
    # Lord Howe's clock changes (half an hour): 2026-04-05 back, 2026-10-04 forward.
    (datetime(2026, 4, 3, tzinfo=UTC), datetime(2026, 4, 7, tzinfo=UTC), 4_000, "lhapr"),
    (datetime(2026, 10, 2, tzinfo=UTC), datetime(2026, 10, 6, tzinfo=UTC), 4_000, "lhoct"),
)
NY, KOLKATA = ZoneInfo("America/New_York"), ZoneInfo("Asia/Kolkata")

METRIC_SQL = {
    "events": "count(*) FILTER (WHERE NOT is_bot)",
    "traffic_events": "count(*)",
    "purchases": "count(*) FILTER (WHERE NOT is_bot AND event_type = 'purchase')",
    "revenue": "coalesce(sum(revenue) FILTER (WHERE NOT is_bot AND event_type = 'purchase'), 0)",
    "active_users": "count(DISTINCT user_key) FILTER (WHERE NOT is_bot)",
    "purchasers": "count(DISTINCT user_key) FILTER (WHERE NOT is_bot AND event_type = 'purchase')",
}
RATIOS = {"conversion_rate": ("purchasers", "active_users")}
UNIQUE = {"active_users", "purchasers"}
TRUTH_COLUMNS = """
    "timestamp" AS ts, tenant_id, event_type, is_bot, revenue, coalesce(user_id, anonymous_id) AS user_key,
    coalesce(country, 'unknown') AS country, coalesce(device, 'unknown') AS device,
    page, experiment_key, experiment_variant
"""
FIRST_COPIES = f"""
    SELECT {TRUTH_COLUMNS} FROM {{lake}}.main.raw_events
    QUALIFY row_number() OVER (
        PARTITION BY tenant_id, event_id ORDER BY received_at, _kafka_partition, _kafka_offset
    ) = 1
"""


@pytest.fixture(scope="module")
def lake(tmp_path_factory: pytest.TempPathFactory) -> Settings:
    settings = Settings(warehouse_path=tmp_path_factory.mktemp("query") / "warehouse", _env_file=None)  # type: ignore[call-arg]
    return build_lake(settings)


def build_lake(settings: Settings) -> Settings:
    """Two tenants' generated events (resends, bots, missing values) loaded as the loader would, then dbt."""
    con = warehouse.connect(settings)
    offset = 0
    for start, end, n, salt in BLOCKS:
        for partition in (0, 1):
            offset = insert_block(
                con, "lake.main.raw_events", "tenant_a", start, end, n // 2, f"{salt}{partition}", partition, offset
            )
        offset = insert_block(con, "lake.main.raw_events", "tenant_b", start, end, n // 4, f"{salt}b", 2, offset)
    con.close()
    run_dbt(settings, "build", "--exclude-resource-type", "unit_test")
    return settings


@pytest.fixture(scope="module")
def truth(lake: Settings) -> Iterator[duckdb.DuckDBPyConnection]:
    """The test's own view of the events: first copies, in a table of this in-memory database."""
    con = warehouse.connect(lake, create=False)
    con.execute(f"CREATE TABLE truth AS {FIRST_COPIES.format(lake=lake.warehouse_alias)}")
    con.execute("CREATE TABLE live AS SELECT * FROM truth LIMIT 0")  # events only Redis has (speed-layer tests)
    yield con
    con.close()


@pytest.fixture(scope="module")
def engine(lake: Settings) -> Iterator[QueryEngine]:
    engine = QueryEngine(lake)
    yield engine
    engine.close()


@dataclass
class Case:
    id: str
    metrics: list[str]
    start: datetime
    end: datetime
    granularity: str = "auto"
    timezone: str = "UTC"
    group_by: list[str] = field(default_factory=list)
    filters: list[dict[str, Any]] = field(default_factory=list)
    where: str = "true"  # the filters again, in the test's SQL
    top_n: int | None = None
    sources: set[str] | None = None  # the provenance sources the planner must choose
    tenant: str = "tenant_a"

    def request(self) -> QueryRequest:
        return QueryRequest(
            metrics=self.metrics,
            start=self.start,
            end=self.end,
            granularity=self.granularity,  # type: ignore[arg-type]
            timezone=self.timezone,
            group_by=self.group_by,
            filters=self.filters,  # type: ignore[arg-type]
            top_n=self.top_n,
        )


def _bucket_sql(grain: str, tz: str) -> str:
    if grain == "total":
        return "'total'"
    local = f"timezone('{tz}', ts)"
    offset = f"CAST(epoch({local}) - epoch(ts) AS BIGINT)"
    if grain == "day":
        return f"strftime(date_trunc('day', {local}), '%Y-%m-%d')"
    pattern = "%Y-%m-%d %H" if grain == "hour" else "%Y-%m-%d %H:%M"
    return f"strftime(date_trunc('{grain}', {local}), '{pattern}') || ' ' || {offset}"


def _bucket_key(label: datetime, grain: str) -> str:
    """The truth's key of a bucket (a partial edge bucket's label, its start inside the bucket, maps to it too)."""
    if grain == "total":
        return "total"
    if grain == "day":
        return label.strftime("%Y-%m-%d")
    offset = int(label.utcoffset().total_seconds())  # type: ignore[union-attr]
    return label.strftime("%Y-%m-%d %H" if grain == "hour" else "%Y-%m-%d %H:%M") + f" {offset}"


REST = ("<the top-N rest>",)  # the key of the rest rows (`rest: true`): their values are null, as a missing one is


def _literal(groups: list[tuple[str | None, ...]]) -> str:
    """The groups as a SQL list of lists, a missing value (None) as NULL."""
    quoted = (", ".join("NULL" if v is None else "'" + v.replace("'", "''") + "'" for v in g) for g in groups)
    return f"[{', '.join(f'[{q}]' for q in quoted)}]::VARCHAR[][]"


def expected(
    con: duckdb.DuckDBPyConnection, case: Case, grain: str, tables: tuple[str, ...] = ("truth",)
) -> dict[tuple[str, tuple[str | None, ...]], dict[str, float]]:
    """(bucket, group) → metric → value, by SQL over the test's events; top N computed exactly.

    A group holds None for a dimension its events have no value for; the top-N rest is REST."""
    base = []
    for m in case.metrics:
        base += [p for p in RATIOS.get(m, (m,)) if p not in base]
    source = " UNION ALL ".join(f"SELECT * FROM {t}" for t in tables)
    where = f"tenant_id = ? AND ts >= ? AND ts < ? AND ({case.where})"
    params: list[Any] = [case.tenant, case.start, case.end]
    groups = case.group_by
    listed = f"[{', '.join(groups)}]"
    if case.top_n:
        first = RATIOS.get(case.metrics[0], (case.metrics[0],))
        parts = ", ".join(METRIC_SQL[p] for p in first)
        rows = con.execute(
            f"SELECT [{', '.join(groups)}], {parts} FROM ({source}) WHERE {where} GROUP BY ALL", params
        ).fetchall()
        score = {tuple(r[0]): (r[1] / r[2] if r[2] else -1.0) if len(first) == 2 else r[1] for r in rows}
        # Ties by value, a missing one (None) after every real one.
        ranked = sorted(score, key=lambda g: (-score[g], [(v is None, v or "") for v in g]))
        if len(ranked) > case.top_n:
            flag = f"list_contains({_literal(ranked[: case.top_n])}, {listed})"  # NULL matches NULL in lists
            listed = f"CASE WHEN {flag} THEN {listed} END"  # the rest: a NULL list, keyed REST below
    select = ", ".join([_bucket_sql(grain, case.timezone), f"{listed}::VARCHAR[]"])
    measures = ", ".join(METRIC_SQL[m] for m in base)
    sql = f"SELECT {select}, {measures} FROM ({source}) WHERE {where} GROUP BY ALL"
    out = {}
    for bucket, group, *values in con.execute(sql, params).fetchall():
        key = (bucket, REST if group is None else tuple(group))
        out[key] = dict(zip(base, [float(v) for v in values], strict=True))
    return out


def check(result: QueryResult, want: dict[tuple[str, tuple[str | None, ...]], dict[str, float]], case: Case) -> None:
    got = {
        (
            _bucket_key(r.bucket, result.granularity),
            REST if r.rest else tuple(r.dimensions[d] for d in case.group_by),
        ): r.values
        for r in result.rows
    }
    assert len(got) == len(result.rows), case.id  # one row per bucket and group: a missing value is not the rest
    exact_uniques = {p.source for p in result.provenance.parts} == {"raw"}
    base = {p for m in case.metrics for p in RATIOS.get(m, (m,))}
    want = {k: v for k, v in want.items() if any(v[m] for m in base)}
    if case.group_by:
        assert set(got) == set(want), (sorted(set(got) ^ set(want), key=repr)[:5], case.id)
    else:
        assert set(want) <= set(got), case.id
    for key, values in got.items():
        truth = want.get(key, dict.fromkeys(base, 0.0))
        for metric in case.metrics:
            value = values[metric]
            if metric in RATIOS:
                numerator, denominator = (truth[p] for p in RATIOS[metric])
                if not denominator:
                    assert value is None, (case.id, key, metric)
                elif metric in result.provenance.approximate:  # within the sum of its parts' errors
                    error = result.provenance.approximate[metric].relative_error
                    want_ratio = numerator / denominator
                    assert value == pytest.approx(want_ratio, rel=error + 0.01, abs=0.002), (case.id, key, metric)
                else:  # both parts exact
                    assert value == pytest.approx(numerator / denominator, rel=1e-9), (case.id, key, metric)
            elif metric in UNIQUE and metric in result.provenance.approximate:
                # an estimate (a dense sketch: more than 8,192 users) within its label's error
                error = result.provenance.approximate[metric].relative_error
                assert value is not None and abs(value - truth[metric]) <= error * truth[metric], (
                    case.id,
                    key,
                    metric,
                    value,
                    truth[metric],
                )
            elif metric in UNIQUE and not exact_uniques:
                # not marked approximate: exact, as a sketch of up to 8,192 users is (within 1 % above)
                assert unique_count_ok(value, truth[metric]), (case.id, key, metric, value, truth[metric])
            else:
                assert value == pytest.approx(truth[metric], rel=1e-9, abs=1e-6), (case.id, key, metric, value)
    if case.sources is not None:
        assert {p.source for p in result.provenance.parts} == case.sources, (case.id, result.provenance.parts)


def day(y: int, m: int, d: int, tz: tzinfo = UTC, hour: int = 0) -> datetime:
    return datetime(y, m, d, hour, tzinfo=tz)


ALL_METRICS = ["events", "traffic_events", "purchases", "revenue", "active_users", "purchasers", "conversion_rate"]
RECENT = TODAY - timedelta(days=2)
CASES = [
    Case("utc_days", ALL_METRICS, day(2026, 3, 4), day(2026, 3, 12), "day", sources={"rollup_day"}),
    Case(
        "utc_month_by_country",
        ["events", "revenue", "active_users"],
        day(2026, 3, 1),
        day(2026, 4, 1),
        group_by=["country"],
        sources={"rollup_day"},
    ),
    Case(
        "utc_hours_by_event_type",
        ["events", "revenue", "active_users"],
        day(2026, 3, 8),
        day(2026, 3, 9),
        "hour",
        group_by=["event_type"],
        sources={"rollup_hour"},
    ),
    Case(
        "utc_hours_all_three_dimensions",
        ["traffic_events", "purchases", "revenue"],
        day(2026, 11, 1),
        day(2026, 11, 1, hour=6),
        "hour",
        group_by=["event_type", "country", "device"],
        sources={"rollup_hour"},
    ),
    Case(
        "new_york_days_spring_forward",
        ["events", "revenue", "active_users", "conversion_rate"],
        day(2026, 3, 6, NY),
        day(2026, 3, 11, NY),
        "day",
        "America/New_York",
        sources={"rollup_hour"},
    ),
    Case(
        "new_york_days_fall_back_filtered",
        ["events", "purchases", "revenue"],
        day(2026, 10, 30, NY),
        day(2026, 11, 3, NY),
        "day",
        "America/New_York",
        group_by=["device"],
        filters=[{"dimension": "country", "op": "in", "values": ["US", "DE"]}],
        where="country IN ('US', 'DE')",
        sources={"rollup_hour"},
    ),
    Case(
        "new_york_hours_repeat_one_oclock",
        ["events", "active_users"],
        day(2026, 11, 1, NY),
        day(2026, 11, 1, NY, 6),
        "hour",
        "America/New_York",
        sources={"rollup_hour"},
    ),
    Case(
        "kolkata_days_recent",
        ["events", "revenue", "active_users"],
        RECENT.replace(tzinfo=KOLKATA),
        (RECENT + timedelta(days=2)).replace(tzinfo=KOLKATA),
        "day",
        "Asia/Kolkata",
        sources={"rollup_minute", "rollup_hour"},
    ),
    Case(
        "kolkata_minutes",
        ["events", "purchases"],
        RECENT + timedelta(hours=10),
        RECENT + timedelta(hours=11, minutes=30),
        "minute",
        "Asia/Kolkata",
        sources={"rollup_minute"},
    ),
    Case(
        "kolkata_days_march_raw",
        ["events", "active_users", "conversion_rate"],
        day(2026, 3, 5, KOLKATA),
        day(2026, 3, 10, KOLKATA),
        "day",
        "Asia/Kolkata",
        sources={"rollup_hour", "raw"},  # each day's half hours at 18:30 UTC from raw events: minutes are gone
    ),
    Case(
        "page_top_3_raw",
        ["events", "active_users"],
        day(2026, 3, 5),
        day(2026, 3, 11),
        "day",
        group_by=["page"],
        top_n=3,
        sources={"raw"},
    ),
    Case(
        "experiment_variants_raw",
        ["events", "purchasers", "conversion_rate"],
        day(2026, 10, 30, NY),
        day(2026, 11, 3, NY),
        "day",
        "America/New_York",
        group_by=["experiment_variant"],
        filters=[{"dimension": "experiment_key", "op": "eq", "values": ["checkout-v2"]}],
        where="experiment_key = 'checkout-v2'",
        sources={"raw"},
    ),
    Case(
        "countries_not_in",
        ["events", "active_users", "conversion_rate"],
        day(2026, 3, 5),
        day(2026, 3, 11),
        "day",
        filters=[{"dimension": "country", "op": "not_in", "values": ["US", "DE"]}],
        where="country NOT IN ('US', 'DE')",
        sources={"rollup_day"},
    ),
    Case(
        "mobile_uniques",
        ["active_users", "purchasers", "conversion_rate"],
        day(2026, 3, 5),
        day(2026, 3, 11),
        "day",
        group_by=["device"],
        filters=[{"dimension": "device", "op": "eq", "values": ["mobile"]}],
        where="device = 'mobile'",
        sources={"rollup_day"},
    ),
    Case(
        "top_4_countries_other_merged",
        ["events", "revenue", "active_users"],
        day(2026, 3, 5),
        day(2026, 3, 11),
        "day",
        group_by=["country"],
        top_n=4,
        sources={"rollup_day"},
    ),
    Case(
        "uniques_by_two_dimensions_raw",
        ["active_users", "events"],
        day(2026, 3, 7),
        day(2026, 3, 9),
        "day",
        group_by=["country", "device"],
        sources={"raw"},
    ),
    Case(
        "tenant_b_new_york_hours",
        ["events", "revenue", "active_users"],
        day(2026, 3, 8, NY),
        day(2026, 3, 9, NY),
        "hour",
        "America/New_York",
        sources={"rollup_hour"},
        tenant="tenant_b",
    ),
]


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_answers_equal_raw_sql_and_the_planner_picks_the_source(
    engine: QueryEngine, truth: duckdb.DuckDBPyConnection, case: Case
) -> None:
    result = engine.run(case.tenant, case.request())
    check(result, expected(truth, case, result.granularity), case)
    assert not result.provenance.incomplete
    assert result.provenance.watermark is not None
    approximate = set(result.provenance.approximate)
    if {p.source for p in result.provenance.parts} == {"raw"}:
        assert not approximate
        assert "raw events" in (result.provenance.realtime_unavailable or "")
    else:  # estimates only where a unique count passed 8,192 users (its sketch is dense)
        truth_values = expected(truth, case, result.granularity).values()
        dense = {m for m in UNIQUE if any(v.get(m, 0.0) > sketches.EXACT_UP_TO for v in truth_values)}
        assert approximate == {m for m in case.metrics if dense & set(RATIOS.get(m, (m,)))}


# -- ranges that do not fall on bucket boundaries, the whole-range bucket ------------------------------------------


def _partial_flags(result: QueryResult) -> dict[str, bool]:
    return {_bucket_key(r.bucket, result.granularity): r.partial for r in result.rows}


def test_a_range_inside_buckets_counts_only_its_part_and_marks_the_edges_partial(
    engine: QueryEngine, truth: duckdb.DuckDBPyConnection
) -> None:
    """Finding: day buckets from 06:00 answered the whole first day (10,304 events where 8,882 lie in the range)."""
    start, end = datetime(2026, 3, 6, 6, tzinfo=UTC), datetime(2026, 3, 7, 18, 30, tzinfo=UTC)
    case = Case("unaligned_days", ALL_METRICS, start, end, "day", group_by=["country"])
    result = engine.run(case.tenant, case.request())
    check(result, expected(truth, case, "day"), case)
    assert (result.start, result.end) == (start, end)
    assert _partial_flags(result) == {"2026-03-06": True, "2026-03-07": True}
    assert result.rows[0].bucket == start  # labelled with where it starts
    hours = Case(
        "unaligned_hours",
        ["events", "active_users"],
        start.replace(minute=10),
        start.replace(hour=9, minute=50),
        "hour",
    )
    result = engine.run(hours.tenant, hours.request())
    check(result, expected(truth, hours, "hour"), hours)
    assert [r.partial for r in result.rows] == [True, False, False, True]


def test_a_utc_day_asked_in_kolkata_is_two_partial_days(engine: QueryEngine, truth: duckdb.DuckDBPyConnection) -> None:
    start = datetime(2026, 3, 7, tzinfo=UTC)
    case = Case(
        "kolkata_cut", ["events", "active_users", "revenue"], start, start + timedelta(days=1), "day", "Asia/Kolkata"
    )
    result = engine.run(case.tenant, case.request())
    check(result, expected(truth, case, "day"), case)
    assert [r.partial for r in result.rows] == [True, True]
    assert (
        sum(r.values["events"] or 0 for r in result.rows)
        == truth.execute(
            "SELECT count(*) FILTER (WHERE NOT is_bot) FROM truth WHERE tenant_id = 'tenant_a' AND ts >= ? AND ts < ?",
            [start, start + timedelta(days=1)],
        ).fetchone()[0]
    )  # type: ignore[index]


def test_align_buckets_widens_the_range_and_says_so(engine: QueryEngine, truth: duckdb.DuckDBPyConnection) -> None:
    start, end = datetime(2026, 3, 6, 6, tzinfo=UTC), datetime(2026, 3, 7, 18, 30, tzinfo=UTC)
    request = Case("x", ["events"], start, end, "day").request().model_copy(update={"align": "buckets"})
    result = engine.run("tenant_a", request)
    assert (result.start, result.end) == (datetime(2026, 3, 6, tzinfo=UTC), datetime(2026, 3, 8, tzinfo=UTC))
    widened = Case("widened", ["events"], result.start, result.end, "day")
    check(result, expected(truth, widened, "day"), widened)
    assert not any(r.partial for r in result.rows)


def test_total_counts_each_user_once_over_the_whole_range(
    engine: QueryEngine, truth: duckdb.DuckDBPyConnection
) -> None:
    """Finding: "active users in the last 7 days" could not be asked: adding days counts a user once a day."""
    start = datetime(2026, 3, 5, 7, tzinfo=ZoneInfo("America/New_York"))
    case = Case(
        "total",
        ["active_users", "purchasers", "conversion_rate", "events"],
        start,
        start + timedelta(days=5),
        "total",
        "America/New_York",
        group_by=["device"],
    )
    result = engine.run(case.tenant, case.request())
    assert result.granularity == "total" and {r.bucket for r in result.rows} == {start}
    check(result, expected(truth, case, "total"), case)
    days = engine.run(case.tenant, case.request().model_copy(update={"granularity": "day", "group_by": []}))
    total = engine.run(case.tenant, case.request().model_copy(update={"group_by": []}))
    daily = sum(r.values["active_users"] or 0 for r in days.rows)
    assert total.rows[0].values["active_users"] < daily  # returning users counted once, not once a day


def test_a_range_starting_inside_a_minute_takes_only_that_stretch_from_raw_events(
    engine: QueryEngine, truth: duckdb.DuckDBPyConnection
) -> None:
    start = datetime(2026, 3, 6, 6, 0, 30, tzinfo=UTC)  # minutes of March are past their retention
    case = Case("seconds", ["events", "active_users", "conversion_rate"], start, start + timedelta(hours=5), "total")
    result = engine.run(case.tenant, case.request())
    check(result, expected(truth, case, "total"), case)
    raw = [(p.start, p.end) for p in result.provenance.parts if p.source == "raw"]
    assert raw == [(start, start.replace(hour=7, second=0)), (start.replace(hour=11, second=0), case.end)]
    assert {p.source for p in result.provenance.parts} == {"raw", "rollup_hour"}
    assert not result.provenance.realtime_unavailable and not result.provenance.incomplete


ZONES = ["UTC", "America/New_York", "Australia/Lord_Howe", "Asia/Kathmandu", "Asia/Kolkata"]
# Stretches of events holding both clock changes of New York (2026-03-08, 2026-11-01) and of Lord Howe.
SPANS = [(b[0], b[1]) for b in BLOCKS if b[3] != "recent"]
FILTERS = [  # (filters, the same in the truth's SQL)
    ([], "true"),
    ([{"dimension": "country", "op": "in", "values": ["US", "DE", "unknown"]}], "country IN ('US', 'DE', 'unknown')"),
    ([{"dimension": "device", "op": "not_in", "values": ["mobile"]}], "device NOT IN ('mobile')"),
    ([{"dimension": "event_type", "op": "eq", "values": ["purchase"]}], "event_type = 'purchase'"),
]


@given(data=st.data())
@hypothesis_settings(
    max_examples=60,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
def test_any_range_grain_and_zone_equals_raw_sql(
    engine: QueryEngine, truth: duckdb.DuckDBPyConnection, data: st.DataObject
) -> None:
    """Property: any range (whole minutes, now and then seconds), grain and zone answers what SQL says."""
    lo, hi = data.draw(st.sampled_from(SPANS), label="span")
    first = data.draw(st.integers(0, int((hi - lo).total_seconds() // 60) - 2), label="start minute")
    start = lo + timedelta(minutes=first)
    length = data.draw(st.integers(1, min(4 * 1440, int((hi - start).total_seconds() // 60))), label="minutes")
    end = start + timedelta(minutes=length)
    if data.draw(st.integers(0, 9), label="seconds") == 0:
        start += timedelta(seconds=data.draw(st.integers(1, 59)))
    grains = ["total", "day", "hour"] + (["minute"] if length <= 600 else [])
    grain = data.draw(st.sampled_from(grains), label="grain")
    zone = data.draw(st.sampled_from(ZONES), label="zone")
    metrics = data.draw(st.lists(st.sampled_from([*ALL_METRICS]), min_size=1, max_size=4, unique=True), label="metrics")
    group_by = data.draw(st.sampled_from([[], ["country"], ["device"]]), label="group_by")
    filters, where = data.draw(st.sampled_from(FILTERS), label="filters")
    case = Case("property", metrics, start, end, grain, zone, group_by=group_by, filters=filters, where=where)
    result = engine.run(case.tenant, case.request())
    check(result, expected(truth, case, grain), case)
    assert (result.start.timestamp(), result.end.timestamp()) == (start.timestamp(), end.timestamp())
    for row in result.rows:
        inside = start <= row.bucket < end
        assert inside, (row.bucket, start, end)


def test_a_dst_day_has_23_hours_of_events(engine: QueryEngine) -> None:
    result = engine.run("tenant_a", CASES[4].request())
    spring = [p for p in result.provenance.parts]
    assert sum(p.buckets for p in spring) == 5 * 24 - 1
    assert [r.bucket.utcoffset() for r in result.rows][2:4] == [timedelta(hours=-5), timedelta(hours=-4)]


def test_limit_truncates_in_bucket_then_dimension_order(engine: QueryEngine) -> None:
    request = CASES[1].request().model_copy(update={"limit": 7})
    result = engine.run("tenant_a", request)
    assert result.truncated and len(result.rows) == 7
    keys = [(r.bucket, r.dimensions["country"]) for r in result.rows]
    assert keys == sorted(keys)
    assert engine.run("tenant_a", CASES[1].request()).truncated is False


INJECTION = "x' OR 1=1 --"


def test_injection_in_filter_values_is_just_a_value(engine: QueryEngine) -> None:
    for dimension in ("country", "page"):  # rollup path and raw path
        request = QueryRequest(
            metrics=["events", "active_users"],
            start=day(2026, 3, 5),
            end=day(2026, 3, 8),
            granularity="day",
            filters=[{"dimension": dimension, "op": "eq", "values": [INJECTION]}],  # type: ignore[list-item]
        )
        result = engine.run("tenant_a", request)
        assert len(result.rows) == 3
        assert all(v == 0 for r in result.rows for v in r.values.values()), dimension


def test_dimension_names_outside_the_catalogue_are_refused(engine: QueryEngine) -> None:
    for request in (
        {"group_by": ["country) OR 1=1 --"]},
        {"filters": [{"dimension": "tenant_id", "op": "eq", "values": ["tenant_b"]}]},
    ):
        with pytest.raises(QueryError):
            engine.run(
                "tenant_a",
                QueryRequest.model_validate(
                    {**request, "metrics": ["events"], "start": "2026-03-05", "end": "2026-03-06"}
                ),
            )


def test_another_tenants_rows_are_never_counted(engine: QueryEngine, truth: duckdb.DuckDBPyConnection) -> None:
    for tenant in ("tenant_c", "tenant_a' OR '1'='1", "tenant_b"):
        for case in (CASES[0], CASES[10]):  # rollups, raw
            result = engine.run(tenant, case.request())
            totals = sum(r.values["events"] or 0 for r in result.rows)
            want = sum(
                v["events"] for v in expected(truth, Case(**{**case.__dict__, "tenant": tenant}), "day").values()
            )
            assert totals == want, tenant
            if tenant != "tenant_b":
                assert totals == 0


# -- the speed layer ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def live_events(engine: QueryEngine, truth: duckdb.DuckDBPyConnection) -> datetime:
    """Events after the warehouse watermark, which only Redis will hold; returns the watermark."""
    watermark = engine.watermark("tenant_a")
    assert watermark is not None and LAKE_UNTIL - timedelta(minutes=15) < watermark <= LAKE_UNTIL
    start = watermark + timedelta(seconds=1)
    end = datetime.now(UTC) - timedelta(seconds=5)
    truth.execute(f"INSERT INTO live SELECT {TRUTH_COLUMNS} FROM ({events_sql('tenant_a', start, end, 600, 'live')})")
    return watermark


def engine_over_redis(
    lake: Settings, truth: duckdb.DuckDBPyConnection, stack_settings: Settings, since: datetime
) -> Iterator[QueryEngine]:
    """An engine over the lake and Redis keys holding tenant_a's events from `since` on, live ones too.

    The keys carry a prefix of their own and are deleted by name afterwards (the shared Redis may hold
    millions of keys: a SCAN per test would take seconds).
    """
    settings = lake.model_copy(update={"redis_key_prefix": f"test:{uuid.uuid4().hex[:10]}:"})
    columns = [c[0] for c in truth.execute("SELECT * FROM truth LIMIT 0").description]
    rows = truth.execute(
        "SELECT * FROM truth WHERE tenant_id = 'tenant_a' AND ts >= ? UNION ALL SELECT * FROM live", [since]
    ).fetchall()
    events = [dict(zip(columns, row, strict=True)) for row in rows]
    keys = RealtimeKeys.from_settings(settings)
    now = datetime.now(UTC).timestamp()
    conn = redis_client(stack_settings)
    written = write_realtime(conn, keys, get_catalogue(), "tenant_a", events, now, settings.realtime_retention_s)
    assert written
    engine = QueryEngine(settings, conn)
    yield engine
    engine.close()
    for i in range(0, len(written), 1000):
        conn.delete(*written[i : i + 1000])
    conn.close()


@pytest.fixture(scope="module")
def speed_engine(
    lake: Settings, truth: duckdb.DuckDBPyConnection, live_events: datetime, stack_settings: Settings
) -> Iterator[QueryEngine]:
    """Redis holding every event of the retention window, live ones too."""
    yield from engine_over_redis(lake, truth, stack_settings, SPAN_FROM)


SPEED_CASES = [
    Case(
        "recent_uniques_outside_two_countries",
        ["active_users", "events"],
        SPAN_FROM,
        SPAN_END,
        "hour",
        filters=[{"dimension": "country", "op": "not_in", "values": ["US", "DE"]}],
        where="country NOT IN ('US', 'DE')",
    ),
    Case("recent_by_hour", ALL_METRICS, SPAN_FROM, SPAN_END, "hour"),
    Case(
        "last_hours_by_country_filtered",
        ["events", "purchases", "revenue"],
        (LAKE_UNTIL - timedelta(hours=2)).replace(minute=0),
        NOW + timedelta(hours=1),
        "hour",
        group_by=["country"],
        filters=[{"dimension": "device", "op": "in", "values": ["desktop", "mobile"]}],
        where="device IN ('desktop', 'mobile')",
    ),
    Case(
        "recent_uniques_by_country",
        ["active_users", "purchasers", "conversion_rate", "events"],
        SPAN_FROM,
        SPAN_END,
        "day",
        group_by=["country"],
    ),
    Case(
        "recent_top_3_countries",
        ["events", "active_users", "revenue"],
        SPAN_FROM,
        SPAN_END,
        "hour",
        group_by=["country"],
        top_n=3,
    ),
    Case(
        "kolkata_last_minutes",
        ["events", "revenue"],
        LAKE_UNTIL - timedelta(minutes=20),
        NOW + timedelta(minutes=1),
        "minute",
        "Asia/Kolkata",
    ),
]


@pytest.mark.parametrize("case", SPEED_CASES, ids=[c.id for c in SPEED_CASES])
def test_speed_layer_answers_equal_raw_sql_over_warehouse_and_live_events(
    speed_engine: QueryEngine, truth: duckdb.DuckDBPyConnection, live_events: datetime, case: Case
) -> None:
    result = speed_engine.run(case.tenant, case.request())
    check(result, expected(truth, case, result.granularity, ("truth", "live")), case)
    provenance = result.provenance
    assert provenance.realtime and provenance.realtime_unavailable is None
    assert not provenance.incomplete, provenance.incomplete
    realtime = [p for p in provenance.parts if p.source == "realtime"]
    assert realtime and min(p.start for p in realtime) <= live_events + timedelta(minutes=1)
    assert {p.source for p in provenance.parts} & {"rollup_minute", "rollup_hour", "rollup_day"}


@pytest.fixture(scope="module")
def late_realtime_engine(
    lake: Settings, truth: duckdb.DuckDBPyConnection, live_events: datetime, stack_settings: Settings
) -> Iterator[QueryEngine]:
    """Redis holding only the events from the watermark's minute on: a realtime layer started late.

    (The engine reads Redis from the watermark's minute: the warehouse holds only part of that minute.)
    """
    yield from engine_over_redis(lake, truth, stack_settings, live_events.replace(second=0, microsecond=0))


@pytest.mark.parametrize("case", [c for c in SPEED_CASES if UNIQUE & set(c.metrics)], ids=lambda c: c.id)
def test_unique_users_of_a_bucket_across_the_watermark_are_the_union_of_warehouse_and_redis(
    late_realtime_engine: QueryEngine, truth: duckdb.DuckDBPyConnection, case: Case
) -> None:
    """Finding: the bucket holding the watermark took its unique users from Redis alone (-1.7 % today)."""
    result = late_realtime_engine.run(case.tenant, case.request())
    check(result, expected(truth, case, result.granularity, ("truth", "live")), case)
    assert result.provenance.realtime and not result.provenance.incomplete, result.provenance.incomplete
    unique = [m for m in case.metrics if m in UNIQUE]
    assert not set(unique) & set(result.provenance.approximate)  # a few thousand users: exact sketches
    sources = {p.source for p in result.provenance.parts if set(unique) & set(p.metrics or unique)}
    assert "realtime" in sources and sources & {"rollup_minute", "rollup_hour", "rollup_day"}


def closed_redis() -> redis.Redis:
    """A client of a loopback port nobody listens on."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return redis.Redis(host="127.0.0.1", port=port, socket_connect_timeout=1, retry=Retry(NoBackoff(), 0))


def test_unreachable_redis_gives_the_warehouse_answer_without_realtime(
    lake: Settings, truth: duckdb.DuckDBPyConnection, live_events: datetime
) -> None:
    engine = QueryEngine(lake, closed_redis())
    try:
        case = SPEED_CASES[1]
        result = engine.run(case.tenant, case.request())
    finally:
        engine.close()
    check(result, expected(truth, case, result.granularity), case)  # warehouse events only
    assert result.provenance.realtime is False
    assert "Redis unreachable" in (result.provenance.realtime_unavailable or "")
    assert result.provenance.incomplete and "watermark" in result.provenance.incomplete[0]
    assert "realtime" not in {p.source for p in result.provenance.parts}


def test_ranges_before_the_watermark_do_not_touch_redis(lake: Settings) -> None:
    engine = QueryEngine(lake, closed_redis())
    try:
        result = engine.run("tenant_a", CASES[0].request())
    finally:
        engine.close()
    assert result.provenance.realtime is False and result.provenance.realtime_unavailable is None


def test_past_redis_retention_the_warehouse_answers_alone_with_caveats(
    speed_engine: QueryEngine, truth: duckdb.DuckDBPyConnection
) -> None:
    """A day after the range Redis holds none of its minutes: warehouse numbers, and says so."""
    case = SPEED_CASES[1]
    result = speed_engine.run(case.tenant, case.request(), now=case.end + timedelta(days=1))
    check(result, expected(truth, case, result.granularity), case)  # the warehouse's events only
    caveats = " ".join(result.provenance.incomplete)
    assert "Redis no longer holds those minutes" in caveats and len(result.provenance.incomplete) == 1
    assert {p.source for p in result.provenance.parts} == {"rollup_hour", "rollup_minute"}


def test_redis_without_realtime_data_is_not_used(lake: Settings, stack_settings: Settings) -> None:
    conn = redis_client(stack_settings)
    engine = QueryEngine(lake.model_copy(update={"redis_key_prefix": f"test:{uuid.uuid4().hex[:10]}:"}), conn)
    try:
        result = engine.run("tenant_a", SPEED_CASES[1].request())
    finally:
        engine.close()
        conn.close()
    assert result.provenance.realtime is False
    assert "written nothing" in (result.provenance.realtime_unavailable or "")
