"""GET /api/v1/dashboards/{id}: every tile equals its endpoint's answer and raw SQL; the answer is cached per
dashboard until the warehouse changes; tenants see their own numbers; bad parameters are refused by name.

A real DuckLake built by dbt (generated events of two weeks and of the last hours, checkout sessions tagged with
the checkout_button experiment), the session's Redis (the realtime layer's keys of a few recent events written
from the key layout, tests/integration/realtime_fill.py) and the query API over HTTP with its replica. Every
tile's numbers are compared with what POST /api/v1/query, POST /api/v1/funnels/query and GET
/api/v1/experiments/{key} answer for the tile's `asked` requests, and with an independent computation: SQL over
the raw events (the first copy of each event id) written here, the plain-Python funnel engine
(tests/funnel_reference.py), distinct users per variant, the events written to Redis. Late events are loaded and
dbt run in other processes, as the loader and dbt are.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from analytics_core import warehouse
from analytics_core.catalogue import get_catalogue
from analytics_core.clients import redis_client
from analytics_core.dashboards import get_dashboards
from analytics_core.funnels import get_definitions
from analytics_core.realtime_keys import RealtimeKeys
from analytics_core.settings import Settings
from api.app import create_app
from api.engine.query_engine import attach_lake
from tenants import TenantStore, create_tenant_with_keys
from tests import funnel_reference
from tests.integration.dbt_runs import run_dbt
from tests.integration.lake_events import lake_settings, write_raw
from tests.integration.query_lake import insert_block
from tests.integration.realtime_fill import write_realtime
from tests.integration.test_api_cache_funnels import load_and_build, sessions
from tests.integration.test_api_cache_versions import caught_up
from tests.servers import serve

pytestmark = pytest.mark.integration
DAY0 = datetime(2026, 11, 2, tzinfo=UTC)
WEEK = f"{(DAY0 + timedelta(days=7)).date()}/{(DAY0 + timedelta(days=14)).date()}"  # closed, whole UTC days
KEYS = {"t1": "rk_dashboards_t1", "t2": "rk_dashboards_t2"}
ENDPOINTS = {"POST /api/v1/query": "/api/v1/query", "POST /api/v1/funnels/query": "/api/v1/funnels/query"}
PURCHASE_TYPES = get_catalogue().purchases.event_types
# The first copy of each event id, as staging keeps it, with the staged columns' defaults.
EVENTS_SQL = """
    SELECT *, coalesce(user_id, anonymous_id) AS user_key, coalesce(country, 'unknown') AS dim_country,
        coalesce(device, 'unknown') AS dim_device
    FROM lake.main.raw_events
    WHERE tenant_id = $tenant
    QUALIFY row_number() OVER (
        PARTITION BY tenant_id, event_id ORDER BY received_at, _kafka_partition, _kafka_offset
    ) = 1
"""
_PURCHASE = f"event_type IN ({', '.join(repr(t) for t in PURCHASE_TYPES)})"
METRIC_SQL = {
    "events": "count(*) FILTER (WHERE NOT is_bot)",
    "purchases": f"count(*) FILTER (WHERE NOT is_bot AND {_PURCHASE})",
    "revenue": f"sum(revenue) FILTER (WHERE NOT is_bot AND {_PURCHASE})",
    "active_users": "count(DISTINCT user_key) FILTER (WHERE NOT is_bot)",
    "conversion_rate": f"count(DISTINCT user_key) FILTER (WHERE NOT is_bot AND {_PURCHASE})"
    " / nullif(count(DISTINCT user_key) FILTER (WHERE NOT is_bot), 0)",
}


@pytest.fixture(scope="module")
def lake(stack_settings: Settings, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Settings]:
    settings = lake_settings(stack_settings, tmp_path_factory.mktemp("dashboards"), "dashboards")
    settings = settings.model_copy(update={"api_replica_refresh_s": 0.2})
    now = datetime.now(UTC).replace(second=0, microsecond=0)
    con = warehouse.connect(settings)
    try:
        table = "lake.main.raw_events"
        offset = insert_block(con, table, "t1", DAY0, DAY0 + timedelta(days=14), 9_000, "weeks")
        offset = insert_block(
            con, table, "t1", now - timedelta(days=2), now - timedelta(hours=1), 2_000, "recent", 0, offset
        )
        insert_block(con, table, "t2", DAY0, DAY0 + timedelta(days=14), 3_000, "other", 0, offset)
    finally:
        con.close()
    days = [DAY0 + timedelta(days=d) for d in (7, 9, 12)]
    write_raw(settings, [e for i, day in enumerate(days) for e in sessions("t1", f"s{i}", 12 + 4 * i, 2 + i, day)])
    run_dbt(settings, "run")
    store = TenantStore(settings.tenants_db)
    for tenant, key in KEYS.items():
        create_tenant_with_keys(store, tenant, f"wk_dashboards_{tenant}", key)
    yield settings
    conn = redis_client(settings)
    try:
        found = list(conn.scan_iter(match=f"{settings.redis_key_prefix}*", count=1000))
        if found:
            conn.delete(*found)
    finally:
        conn.close()


@pytest.fixture(scope="module")
def live_events(lake: Settings) -> list[dict[str, Any]]:
    """A few events of the last minutes in the realtime layer's Redis keys (and nowhere else), for t1."""
    now = time.time()
    events = [
        {"ts": datetime.fromtimestamp(now - 90 + 10 * i, UTC), "is_bot": i == 5,
         "event_type": ("page_view", "purchase")[i % 2], "country": "DE", "device": "mobile",
         "user_key": f"live-{i % 4}", "revenue": 10.0 * (i % 2)}
        for i in range(8)
    ]  # fmt: skip
    conn = redis_client(lake)
    try:
        keys = RealtimeKeys.from_settings(lake)
        write_realtime(conn, keys, get_catalogue(), "t1", events, now, lake.realtime_retention_s)
    finally:
        conn.close()
    return events


@pytest.fixture(scope="module")
def api(lake: Settings, live_events: list[dict[str, Any]]) -> Iterator[str]:
    with serve(create_app(lake)) as url:
        caught_up(url, lake)
        yield url


# -- helpers ---------------------------------------------------------------------------------------------------


def load(url: str, tenant: str = "t1", **params: Any) -> dict[str, Any]:
    answer = httpx.get(
        f"{url}/api/v1/dashboards/demo", params=params, headers={"Authorization": f"Bearer {KEYS[tenant]}"}, timeout=120
    )
    assert answer.status_code == 200, answer.text
    result: dict[str, Any] = answer.json()
    return result


def refused(url: str, path: str = "/api/v1/dashboards/demo", **params: Any) -> httpx.Response:
    return httpx.get(f"{url}{path}", params=params, headers={"Authorization": f"Bearer {KEYS['t1']}"}, timeout=60)


def counters(url: str) -> dict[str, float]:
    """The demo dashboard's cache counters in /metrics."""
    found = {"hits": 0.0, "misses": 0.0, "stale": 0.0}
    for line in httpx.get(f"{url}/metrics", timeout=10).text.splitlines():
        name, _, value = line.partition(" ")
        for kind in found:
            if name == f'api_dashboard_cache_{kind}_total{{dashboard="demo"}}':
                found[kind] = float(value)
    return found


def moved(before: dict[str, float], after: dict[str, float]) -> dict[str, int]:
    return {kind: int(after[kind] - before[kind]) for kind in before}


def tiles(answer: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {t["id"]: t for t in answer["tiles"]}


def without_cache(answer: dict[str, Any]) -> dict[str, Any]:
    """An endpoint's answer as a tile holds it: without its cache info and elapsed time."""
    out = {k: v for k, v in answer.items() if k not in ("cache", "elapsed_ms")}
    if "provenance" in out:
        out["provenance"] = {k: v for k, v in out["provenance"].items() if k not in ("cache", "elapsed_ms")}
    return out


def ask_endpoint(url: str, tenant: str, endpoint: str, body: dict[str, Any]) -> dict[str, Any]:
    headers = {"Authorization": f"Bearer {KEYS[tenant]}"}
    if endpoint in ENDPOINTS:
        answer = httpx.post(f"{url}{ENDPOINTS[endpoint]}", json=body, headers=headers, timeout=60)
    else:
        answer = httpx.get(f"{url}/api/v1/experiments/{body['experiment']}", headers=headers, timeout=60)
    assert answer.status_code == 200, answer.text
    result: dict[str, Any] = answer.json()
    return result


def truth(settings: Settings, tenant: str, asked: dict[str, Any]) -> dict[tuple[int | None, str | None], float]:
    """A query tile's numbers by SQL over the raw events: (bucket start epoch or None for total, group) -> value."""
    metric = asked["metrics"][0]
    zone = asked["timezone"]
    grain = asked["granularity"]
    local = f"date_trunc('{grain}', \"timestamp\" AT TIME ZONE '{zone}')"  # the bucket's wall time in the zone
    bucket = "NULL" if grain == "total" else f"epoch({local} AT TIME ZONE '{zone}')"
    group = f"dim_{asked['group_by'][0]}" if asked["group_by"] else "NULL"
    where = ['"timestamp" >= $start', '"timestamp" < $end']
    for f in asked["filters"]:
        listed = ", ".join(repr(v) for v in f["values"])
        where.append(f"dim_{f['dimension']} {'NOT IN' if f['op'] == 'not_in' else 'IN'} ({listed})")
    sql = (
        f"SELECT {bucket} AS bucket, {group} AS grp, {METRIC_SQL[metric]} AS value FROM ({EVENTS_SQL})"
        f" WHERE {' AND '.join(where)} GROUP BY ALL"
    )
    con = attach_lake(settings)
    try:
        rows = con.execute(
            sql,
            {
                "tenant": tenant,
                "start": datetime.fromisoformat(asked["start"]),
                "end": datetime.fromisoformat(asked["end"]),
            },
        ).fetchall()
    finally:
        con.close()
    return {(None if b is None else int(b), g): float(v) for b, g, v in rows if v}


def tile_numbers(answer: dict[str, Any], group_by: list[str]) -> dict[tuple[int | None, str | None], float]:
    """A QueryResult's rows as truth() keys them; the top-N rest row under "__rest__"."""
    out = {}
    total = answer["granularity"] == "total"
    for row in answer["rows"]:
        value = next(iter(row["values"].values()))
        if not value:
            continue
        bucket = None if total else int(datetime.fromisoformat(row["bucket"]).timestamp())
        group = "__rest__" if row["rest"] else (row["dimensions"][group_by[0]] if group_by else None)
        out[(bucket, group)] = float(value)
    return out


def assert_close(found: dict[Any, float], want: dict[Any, float]) -> None:
    assert found.keys() == want.keys(), (sorted(found.items(), key=str)[:8], sorted(want.items(), key=str)[:8])
    for key, value in want.items():
        assert found[key] == pytest.approx(value, rel=1e-9, abs=1e-6), key


def check_query_tile(settings: Settings, tenant: str, tile: dict[str, Any]) -> None:
    for asked, answer in zip(tile["asked"], tile["answers"], strict=True):
        want = truth(settings, tenant, asked)
        found = tile_numbers(answer, asked["group_by"])
        rest_key = next((key for key in found if key[1] == "__rest__"), None)
        if rest_key is not None:  # top N: the named groups are the raw counts, the rest adds up the others
            rest = found.pop(rest_key)
            assert sum(want.values()) == pytest.approx(sum(found.values()) + rest)
            want = {k: v for k, v in want.items() if k in found}
        assert_close(found, want)


def funnel_truth(settings: Settings, tenant: str, asked: dict[str, Any], as_of: datetime) -> dict[str, list[int]]:
    """Users reaching each step per cohort day, by the plain-Python funnel engine over the raw events."""
    con = attach_lake(settings)
    try:
        cursor = con.execute(f"SELECT * FROM ({EVENTS_SQL})", {"tenant": tenant})
        names = [d[0] for d in cursor.description]
        rows = [dict(zip(names, r, strict=True)) for r in cursor.fetchall()]
    finally:
        con.close()
    events = [
        {**r, "country": r["dim_country"], "device": r["dim_device"], "ts": int(r["timestamp"].timestamp() * 1_000_000)}
        for r in rows
    ]
    funnel = get_definitions().funnels[asked["funnel"]]
    us = [int(datetime.fromisoformat(asked[k]).timestamp() * 1_000_000) for k in ("start", "end")]
    entries = funnel_reference.entries(events, funnel, us[0], us[1], int(as_of.timestamp() * 1_000_000), [])
    summary = funnel_reference.summary(entries, funnel, [])
    day = 86_400
    return {
        datetime.fromtimestamp(r["cohort_day"] * day, UTC).date().isoformat(): [r[f"reached_{k}"] for k in range(1, 5)]
        for r in summary
    }


def experiment_truth(settings: Settings, tenant: str) -> dict[str, int]:
    """Distinct people per variant of checkout_button (one variant each here) by SQL over the raw events."""
    con = attach_lake(settings)
    try:
        rows = con.execute(
            f"SELECT experiment_variant, count(DISTINCT user_key) FROM ({EVENTS_SQL})"
            " WHERE experiment_key = 'checkout_button' AND NOT is_bot GROUP BY ALL",
            {"tenant": tenant},
        ).fetchall()
    finally:
        con.close()
    return {str(v): int(n) for v, n in rows}


def check_every_tile(settings: Settings, url: str, tenant: str, answer: dict[str, Any]) -> None:
    """Each tile equals its endpoint's answer to its `asked`, and the independent computation."""
    for tile in answer["tiles"]:
        assert tile["error"] is None, tile
        if tile["kind"] == "live":
            continue
        for asked, given in zip(tile["asked"], tile["answers"], strict=True):
            assert given == without_cache(ask_endpoint(url, tenant, tile["endpoint"], asked)), tile["id"]
        if tile["endpoint"] == "POST /api/v1/query":
            check_query_tile(settings, tenant, tile)
        elif tile["kind"] == "funnel":
            found = tile["answers"][0]
            assert found["source"] == "fct_funnel_daily"
            assert found["rows"], "no cohort day: the comparison below would hold for nothing"
            as_of = datetime.fromisoformat(found["as_of"])
            assert {r["cohort_day"]: r["reached"] for r in found["rows"]} == funnel_truth(
                settings, tenant, tile["asked"][0], as_of
            )
        else:
            users = experiment_truth(settings, tenant)
            assert sum(users.values()) > 0 and tile["answers"][0]["users"] == users


# -- the tests ---------------------------------------------------------------------------------------------------


def test_every_tile_equals_its_endpoint_and_raw_sql(lake: Settings, api: str) -> None:
    answer = load(api, range=WEEK, timezone="UTC")
    assert answer["range"] == {
        "expression": WEEK, "start": "2026-11-09T00:00:00+00:00", "end": "2026-11-16T00:00:00+00:00",
        "counted_until": "2026-11-16T00:00:00+00:00", "open": False, "timezone": "UTC",
    }  # fmt: skip
    assert not answer["cache"]["hit"] and answer["cache"]["ttl_s"] == lake.api_cache_closed_ttl_s
    found = tiles(answer)
    assert found["revenue"]["answers"][0]["granularity"] == "hour"  # auto over 7 days
    assert found["active_users"]["number"]["previous_start"] == "2026-11-02T00:00:00Z"
    assert found["events_by_country"]["answers"][0]["rows"][-1]["rest"]  # 12 countries, the top 10 and the rest
    assert {s for t in answer["tiles"] if t["provenance"] for s in t["provenance"]["sources"]} <= {
        "rollup_day", "rollup_hour", "fct_funnel_daily", "realtime",
        "fct_experiment_exposures", "fct_experiment_significance",
    }  # fmt: skip
    check_every_tile(lake, api, "t1", answer)

    # Another zone and the load's filters: the metric tiles are filtered, the funnel widened to UTC days.
    berlin = load(api, range=WEEK, timezone="Europe/Berlin", filter=["device:in:mobile,tablet", "country:not_in:US"])
    assert berlin["range"]["start"] == "2026-11-09T00:00:00+01:00"
    revenue = tiles(berlin)["revenue"]["asked"][0]
    assert revenue["filters"] == [
        {"dimension": "device", "op": "in", "values": ["mobile", "tablet"]},
        {"dimension": "country", "op": "not_in", "values": ["US"]},
    ]
    assert any("widened" in note for note in tiles(berlin)["checkout_funnel"]["provenance"]["notes"])
    check_every_tile(lake, api, "t1", berlin)


def test_the_live_tile_holds_the_realtime_layers_totals(
    lake: Settings, api: str, live_events: list[dict[str, Any]]
) -> None:
    live = tiles(load(api))["live"]
    people = [e for e in live_events if not e["is_bot"]]
    totals = live["answers"][0]["totals"]
    assert totals == {
        "events": len(people),
        "revenue": sum(e["revenue"] for e in people if e["event_type"] == "purchase"),
        "active_users": len({e["user_key"] for e in people}),
    }
    assert live["provenance"]["sources"] == ["realtime"] and not live["provenance"]["cache"]["hit"]


def test_a_repeated_fixed_range_load_is_a_hit_counted_per_dashboard(lake: Settings, api: str) -> None:
    params = {"range": f"{DAY0.date()}/{(DAY0 + timedelta(days=5)).date()}", "timezone": "America/New_York"}
    before = counters(api)
    first = load(api, **params)
    again = load(api, **params)
    assert not first["cache"]["hit"] and again["cache"]["hit"]
    assert again["tiles"][:-1] != first["tiles"][:-1]  # the cache info differs...
    for a, b in zip(first["tiles"], again["tiles"], strict=True):  # ...and nothing else but the live tile's read time
        if a["kind"] != "live":
            assert {**a, "provenance": None} == {**b, "provenance": None}
            assert b["provenance"]["cache"]["hit"]
    assert moved(before, counters(api)) == {"hits": 1, "misses": 1, "stale": 0}


def test_a_repeated_last_7d_load_within_the_minute_is_a_hit(lake: Settings, api: str) -> None:
    if datetime.now(UTC).second > 45:  # both loads within one minute
        time.sleep(61 - datetime.now(UTC).second)
    before = counters(api)
    first = load(api, range="last_7d", timezone="Asia/Kolkata")
    again = load(api, range="last_7d", timezone="Asia/Kolkata")
    assert not first["cache"]["hit"] and again["cache"]["hit"] and again["cache"]["ttl_s"] == lake.api_cache_ttl_s
    assert first["range"] == again["range"] and first["range"]["open"]
    start = datetime.fromisoformat(first["range"]["start"])
    assert (start.hour, start.minute, start.utcoffset()) == (0, 0, timedelta(hours=5, minutes=30))
    assert datetime.fromisoformat(first["range"]["end"]) - start == timedelta(days=7)
    assert moved(before, counters(api)) == {"hits": 1, "misses": 1, "stale": 0}
    for tile in first["tiles"]:  # the numbers of an open range are the endpoints' too (realtime past the watermark)
        if tile["endpoint"] == "POST /api/v1/query":
            assert tile["error"] is None and tile["provenance"]["realtime"], tile["id"]
            for asked, given in zip(tile["asked"], tile["answers"], strict=True):
                assert given["rows"] == ask_endpoint(api, "t1", tile["endpoint"], asked)["rows"], tile["id"]


def test_another_tenants_key_sees_its_own_numbers(lake: Settings, api: str) -> None:
    mine = load(api, range=WEEK)
    theirs = load(api, "t2", range=WEEK)
    assert not theirs["cache"]["hit"]  # not t1's entry
    events = tiles(theirs)["events_by_country"]
    check_query_tile(lake, "t2", events)
    assert events["answers"] != tiles(mine)["events_by_country"]["answers"]
    assert tiles(theirs)["checkout_button"]["answers"][0]["users"] == {"control": 0, "treatment": 0}


def test_a_tile_the_parameters_cannot_answer_is_refused_alone(api: str) -> None:
    answer = load(api, range="last_12m", filter=["country:eq:DE", "device:eq:mobile"])
    found = tiles(answer)
    error = found["active_users"]["error"]
    assert (error["status"], error["field"], error["rule"]) == (400, "range", "max_raw_range_days")
    assert found["active_users"]["answers"] is None and found["revenue"]["error"] is None


@pytest.mark.parametrize(
    ("params", "field", "rule"),
    [
        ({"range": "last_8d"}, "range", "range_syntax"),
        ({"range": "2026-11-09/2026-11-02"}, "range", "after_start"),
        ({"range": "2020-01-01/2026-01-01"}, "range", "max_range_days"),
        ({"range": "2026-11-31/2026-12-02"}, "range", "iso_8601"),
        ({"timezone": "Europe/Atlantis"}, "timezone", "iana_zone"),
        ({"filter": ["colour:eq:red"]}, "filter[0]", "catalogue_dimension"),
        ({"filter": ["country:eq:DE", "device=mobile"]}, "filter[1]", "filter_syntax"),
        ({"filter": ["country:eq:DE"] * 9}, "filter", "max_filters"),
    ],
)
def test_bad_parameters_are_refused_naming_the_parameter(
    api: str, params: dict[str, Any], field: str, rule: str
) -> None:
    answer = refused(api, **params)
    assert answer.status_code == 400, answer.text
    assert (answer.json()["field"], answer.json()["rule"]) == (field, rule)


def test_unknown_dashboards_and_keys_are_refused(api: str) -> None:
    assert refused(api, "/api/v1/dashboards/nope").status_code == 404
    assert refused(api, "/api/v1/dashboards/Not-An-Id").status_code == 400
    assert httpx.get(f"{api}/api/v1/dashboards/demo", timeout=10).status_code == 401
    listed = httpx.get(f"{api}/api/v1/dashboards", headers={"Authorization": f"Bearer {KEYS['t1']}"}, timeout=10).json()
    demo = next(d for d in listed["dashboards"] if d["id"] == "demo")
    assert demo["definition_hash"] == get_dashboards()["demo"].definition_hash
    assert [t["kind"] for t in demo["tiles"]] == [t.kind for t in get_dashboards()["demo"].tiles]


def test_a_change_in_the_warehouse_makes_the_next_load_a_miss_with_the_new_numbers(lake: Settings, api: str) -> None:
    """Last: late events are loaded into the week asked (another process), and dbt rebuilds what they touch."""
    load(api, range=WEEK)
    assert load(api, range=WEEK)["cache"]["hit"]
    late_day = DAY0 + timedelta(days=10)
    load_and_build(lake, sessions("t1", "late", 9, 4, late_day), api)
    before = counters(api)
    restated = load(api, range=WEEK)
    assert not restated["cache"]["hit"]
    assert moved(before, counters(api)) == {"hits": 0, "misses": 1, "stale": 1}
    check_every_tile(lake, api, "t1", restated)
    funnel = {r["cohort_day"]: r["entered"] for r in tiles(restated)["checkout_funnel"]["answers"][0]["rows"]}
    assert funnel[late_day.date().isoformat()] >= 9
    assert load(api, range=WEEK)["cache"]["hit"]
