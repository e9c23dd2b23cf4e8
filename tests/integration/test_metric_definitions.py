"""Metric definitions that version their data, on a real DuckLake built by real dbt.

A metric added to the catalogue over existing history, or one whose definition changes, is answered
exactly from raw events (or with an `incomplete` caveat naming it and the command) until the next
`dbt build` rebuilds its history in slices; after it, every bucket of every grain holds the new
definition's numbers. Expected numbers are counted here in SQL over the raw events (first copy of
each event id), never by the code under test.
"""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import duckdb
import pytest
import yaml

from analytics_core import warehouse
from analytics_core.catalogue import DBT_PROJECT_FILE, Catalogue, definition_vars
from analytics_core.settings import Settings
from api.engine import QueryEngine
from api.models import QueryRequest, QueryResult
from tests.integration.dbt_runs import lake_query, run_dbt
from tests.integration.query_lake import insert_block

pytestmark = pytest.mark.integration

NOW = datetime.now(UTC).replace(second=0, microsecond=0)
TODAY = NOW.replace(hour=0, minute=0)
BLOCKS = (  # salt, start, end, events of tenant_1 (tenant_2 gets a third)
    ("old", TODAY - timedelta(days=150), TODAY - timedelta(days=140), 3_000),
    ("mid", TODAY - timedelta(days=60), TODAY - timedelta(days=50), 3_000),
    ("recent", TODAY - timedelta(days=3), NOW - timedelta(minutes=30), 4_000),
)
LATE = ("late", TODAY - timedelta(days=2), TODAY - timedelta(days=1), 900)  # arrives after the first build
SLICE_DAYS = 20
BUILD = ("build", "--exclude-resource-type", "unit_test")
PROJECT_CATALOGUE = yaml.safe_load(DBT_PROJECT_FILE.read_text())["vars"]["metric_catalogue"]
CARTS_V1 = ["add_to_cart"]
CARTS_V2 = ["add_to_cart", "checkout_started"]
LONG = (TODAY - timedelta(days=155), TODAY + timedelta(days=1))  # longer than the raw path's 93 days
SHORT = (TODAY - timedelta(days=62), TODAY - timedelta(days=1))


def catalogue_with_carts(event_types: list[str]) -> dict[str, Any]:
    catalogue = copy.deepcopy(PROJECT_CATALOGUE)
    catalogue["metrics"]["carts"] = {
        "kind": "count",
        "description": "Add-to-cart events by people.",
        "humans_only": True,
        "event_types": event_types,
    }
    catalogue["metrics"]["cart_rate"] = {"kind": "ratio", "numerator": "purchases", "denominator": "carts"}
    return catalogue


def build(settings: Settings, catalogue: dict[str, Any] | None, **extra: Any) -> str:
    dbt_vars = {"metric_rebuild_slice_days": SLICE_DAYS, **extra}
    if catalogue is not None:
        dbt_vars["metric_catalogue"] = catalogue
    return run_dbt(settings, *BUILD, "--vars", json.dumps(dbt_vars)).stdout


@pytest.fixture(scope="module")
def lake(tmp_path_factory: pytest.TempPathFactory) -> Settings:
    """Two tenants' events over five months, built with the project's catalogue; then late events, not built."""
    settings = Settings(  # type: ignore[call-arg]
        warehouse_path=tmp_path_factory.mktemp("definitions") / "warehouse", api_replica=False, _env_file=None
    )
    con = warehouse.connect(settings)
    offset = 0
    for salt, start, end, n in BLOCKS:
        offset = insert_block(con, "lake.main.raw_events", "tenant_1", start, end, n, salt, 0, offset)
        offset = insert_block(con, "lake.main.raw_events", "tenant_2", start, end, n // 3, f"{salt}b", 1, offset)
    con.close()
    build(settings, None)
    con = warehouse.connect(settings)
    salt, start, end, n = LATE
    insert_block(con, "lake.main.raw_events", "tenant_1", start, end, n, salt, 0, offset)
    con.close()
    return settings


@pytest.fixture(scope="module")
def truth(lake: Settings) -> Iterator[duckdb.DuckDBPyConnection]:
    """The test's own copy of the events (first copies), refreshed by each test after it adds any."""
    con = duckdb.connect()
    yield con
    con.close()


def refresh_truth(settings: Settings, con: duckdb.DuckDBPyConnection, staged_only: bool = False) -> None:
    """The first copies of the raw events; `staged_only`: without the late ones no build has staged yet."""
    rows = lake_query(
        settings,
        "SELECT tenant_id, timestamp, event_type, is_bot FROM {lake}.raw_events WHERE NOT (? AND event_id LIKE ?)"
        " QUALIFY row_number() OVER (PARTITION BY tenant_id, event_id"
        " ORDER BY received_at, _kafka_partition, _kafka_offset) = 1",
        [staged_only, f"{LATE[0]}-%"],
    )
    con.execute("CREATE OR REPLACE TABLE truth (tenant_id VARCHAR, ts TIMESTAMPTZ, event_type VARCHAR, is_bot BOOLEAN)")
    con.executemany("INSERT INTO truth VALUES (?, ?, ?, ?)", rows)


def counted(
    con: duckdb.DuckDBPyConnection, tenant: str, grain: str, event_types: list[str], start: datetime, end: datetime
) -> dict[datetime, float]:
    """bucket start (UTC) -> events by people of these types, for buckets holding any."""
    rows = con.execute(
        f"SELECT date_trunc('{grain}', ts AT TIME ZONE 'UTC') AS bucket, count(*) FROM truth"
        " WHERE tenant_id = ? AND NOT is_bot AND list_contains(?, event_type) AND ts >= ? AND ts < ? GROUP BY ALL",
        [tenant, event_types, start, end],
    ).fetchall()
    return {bucket.replace(tzinfo=UTC): float(n) for bucket, n in rows}


def ask(
    settings: Settings,
    catalogue: dict[str, Any],
    metrics: list[str],
    span: tuple[datetime, datetime],
    grain: str = "day",
    tenant: str = "tenant_1",
    **more: Any,
) -> QueryResult:
    engine = QueryEngine(settings, catalogue=Catalogue.model_validate(catalogue))
    try:
        request = QueryRequest(metrics=metrics, start=span[0], end=span[1], granularity=grain, timezone="UTC", **more)  # type: ignore[arg-type]
        return engine.run(tenant, request)
    finally:
        engine.close()


def values(result: QueryResult, metric: str) -> dict[datetime, float]:
    """bucket (UTC) -> value, for buckets whose value is not 0."""
    return {r.bucket.astimezone(UTC): v for r in result.rows if (v := r.values[metric])}


def sources(result: QueryResult) -> set[str]:
    return {p.source for p in result.provenance.parts}


def caveats_naming(result: QueryResult, metric: str) -> list[str]:
    return [c for c in result.provenance.incomplete if re.match(rf"{metric}\b", c)]


def rollup_values(settings: Settings, grain: str, metric: str, tenant: str = "tenant_1") -> dict[datetime, float]:
    rows = lake_query(
        settings,
        f"SELECT window_start, value FROM {{lake}}.fct_metrics_{grain}"
        " WHERE tenant_id = ? AND metric = ? AND dimension_set = ''",
        [tenant, metric],
    )
    return {start.astimezone(UTC): value for start, value in rows}


def recorded(settings: Settings, metric: str) -> dict[str, str]:
    rows = lake_query(
        settings, "SELECT granularity, fingerprint FROM {lake}.fct_metric_definitions WHERE metric = ?", [metric]
    )
    return dict(rows)


def slices_logged(stdout: str, model: str, metric: str) -> tuple[int, int]:
    """(slices done, total) from the build's progress lines for one model; checks they count 1..N in order."""
    assert re.search(rf"{model}: rebuilding [a-z_, ]*\b{metric}\b[a-z_, ]* over ", stdout), stdout[-4000:]
    done = [(int(i), int(n)) for i, n in re.findall(rf"{model}: slice (\d+)/(\d+) \[", stdout)]
    assert done and [i for i, _ in done] == list(range(1, done[0][1] + 1)), done
    return len(done), done[0][1]


def assert_grains_hold(settings: Settings, truth: duckdb.DuckDBPyConnection, event_types: list[str]) -> None:
    """Every minute, hour and day rollup of carts equals the count of its events in SQL, for both tenants."""
    far = (TODAY - timedelta(days=400), TODAY + timedelta(days=2))
    recent = (TODAY - timedelta(days=6), TODAY + timedelta(days=2))
    for tenant in ("tenant_1", "tenant_2"):
        for grain, span in (("day", far), ("hour", far), ("minute", recent)):
            want = counted(truth, tenant, grain, event_types, *span)
            assert rollup_values(settings, grain, "carts", tenant) == want, (tenant, grain)


def test_a_new_metric_is_exact_before_and_after_the_build_that_rebuilds_its_history(
    lake: Settings, truth: duckdb.DuckDBPyConnection
) -> None:
    settings = lake
    refresh_truth(settings, truth, staged_only=True)  # what the raw path reads: the staged events
    catalogue = catalogue_with_carts(CARTS_V1)
    want_short = counted(truth, "tenant_1", "day", CARTS_V1, *SHORT)
    want_long = counted(truth, "tenant_1", "day", CARTS_V1, *LONG)
    assert len(want_long) > 20 and sum(want_long.values()) > 1000

    # Before any build knows carts: short ranges exactly from raw events; long ones marked incomplete.
    before = ask(settings, catalogue, ["carts", "cart_rate", "events"], SHORT)
    assert sources(before) == {"raw"} and values(before, "carts") == want_short
    assert "carts" in (before.provenance.realtime_unavailable or "")
    assert "analytics dbt build" in (before.provenance.realtime_unavailable or "")
    purchases = counted(truth, "tenant_1", "day", ["purchase"], *SHORT)
    for row in before.rows:
        day = row.bucket.astimezone(UTC)
        if want_short.get(day):
            assert row.values["cart_rate"] == pytest.approx(purchases.get(day, 0.0) / want_short[day])
    long_before = ask(settings, catalogue, ["carts", "events"], LONG)
    assert "raw" not in sources(long_before)
    (caveat,) = caveats_naming(long_before, "carts")
    assert "analytics dbt build" in caveat and "the rollups hold" in caveat
    assert not caveats_naming(long_before, "events")
    assert not caveats_naming(ask(settings, catalogue, ["events"], LONG), "events")  # others are untouched

    stdout = build(settings, catalogue)
    for model in ("fct_metrics_hour", "fct_metrics_day", "fct_metrics_minute"):
        done, total = slices_logged(stdout, model, "carts")
        assert done == total
    assert slices_logged(stdout, "fct_metrics_hour", "carts")[1] >= 150 // SLICE_DAYS
    assert not re.search(r"rebuilding (?!carts over)", stdout)  # carts alone

    refresh_truth(settings, truth)
    assert_grains_hold(settings, truth, CARTS_V1)
    after = ask(settings, catalogue, ["carts", "events"], LONG)
    assert "raw" not in sources(after) and not caveats_naming(after, "carts")
    assert values(after, "carts") == counted(truth, "tenant_1", "day", CARTS_V1, *LONG)
    short_after = ask(settings, catalogue, ["carts"], SHORT)
    assert sources(short_after) == {"rollup_day"}
    assert values(short_after, "carts") == counted(truth, "tenant_1", "day", CARTS_V1, *SHORT)
    hours = (TODAY - timedelta(days=3), TODAY - timedelta(days=1))
    by_hour = ask(settings, catalogue, ["carts"], hours, "hour")
    assert sources(by_hour) == {"rollup_hour"}
    assert values(by_hour, "carts") == counted(truth, "tenant_1", "hour", CARTS_V1, *hours)
    by_country = ask(settings, catalogue, ["carts"], LONG, group_by=["country"])
    assert not caveats_naming(by_country, "carts")
    total = sum(r.values["carts"] or 0 for r in by_country.rows)
    assert total == sum(counted(truth, "tenant_1", "day", CARTS_V1, *LONG).values())

    fingerprint = Catalogue.model_validate(catalogue).fingerprints(*definition_vars())["carts"]
    assert recorded(settings, "carts") == {"minute": fingerprint, "hour": fingerprint, "day": fingerprint}
    listed = lake_query(settings, "SELECT DISTINCT metric_definitions FROM {lake}.fct_warehouse_watermarks")
    assert all(f"carts={fingerprint}" in (text or "") for (text,) in listed) and len(listed) == 1

    # The sliced rebuild gives exactly the rows a full refresh gives.
    snapshot = (
        "SELECT tenant_id, metric, dimension_set, event_type, country, device, window_start, round(value, 6), sketch"
        " FROM {lake}.{table} ORDER BY ALL"
    )
    tables = ("fct_metrics_minute", "fct_metrics_hour", "fct_metrics_day")
    incremental = {t: lake_query(settings, snapshot.replace("{table}", t)) for t in tables}
    run_dbt(settings, *BUILD, "--full-refresh", "--vars", json.dumps({"metric_catalogue": catalogue}))
    for table in tables:
        assert lake_query(settings, snapshot.replace("{table}", table)) == incremental[table], table


def test_a_changed_definition_gives_the_new_numbers_after_the_build_never_a_mix(
    lake: Settings, truth: duckdb.DuckDBPyConnection
) -> None:
    settings = lake
    build(settings, catalogue_with_carts(CARTS_V1))  # built already when the test above ran: then a no-op
    refresh_truth(settings, truth)
    assert_grains_hold(settings, truth, CARTS_V1)
    changed = catalogue_with_carts(CARTS_V2)
    v1 = counted(truth, "tenant_1", "day", CARTS_V1, *LONG)
    v2 = counted(truth, "tenant_1", "day", CARTS_V2, *LONG)
    assert all(v2[day] > v1.get(day, 0) for day in v2)  # every day with events differs

    before = ask(settings, changed, ["carts"], SHORT)  # the new definition's numbers, from raw events
    assert sources(before) == {"raw"} and values(before, "carts") == counted(truth, "tenant_1", "day", CARTS_V2, *SHORT)
    long_before = ask(settings, changed, ["carts"], LONG)
    (caveat,) = caveats_naming(long_before, "carts")
    assert "analytics dbt build" in caveat
    assert values(long_before, "carts") == v1  # the old rollups, said to be incomplete

    stdout = build(settings, changed)
    for model in ("fct_metrics_hour", "fct_metrics_day", "fct_metrics_minute"):
        done, total = slices_logged(stdout, model, "carts")
        assert done == total
    assert not re.search(r"rebuilding (?!carts over)", stdout)  # carts alone
    assert_grains_hold(settings, truth, CARTS_V2)
    after = ask(settings, changed, ["carts", "cart_rate"], LONG)
    assert not caveats_naming(after, "carts") and "raw" not in sources(after)
    assert values(after, "carts") == v2
    # ... and the old definition, asked by an API that still serves it, is no longer taken for it.
    stale_api = ask(settings, catalogue_with_carts(CARTS_V1), ["carts"], LONG)
    assert caveats_naming(stale_api, "carts")


def test_metrics_leaving_the_catalogue_lose_their_rows_and_a_forced_rebuild_changes_nothing(
    lake: Settings,
) -> None:
    settings = lake
    build(settings, catalogue_with_carts(CARTS_V1))
    stdout = build(settings, None)  # the project's catalogue: no carts
    assert "rebuilding" not in stdout
    for table in ("fct_metrics_minute", "fct_metrics_hour", "fct_metrics_day"):
        assert lake_query(settings, f"SELECT count(*) FROM {{lake}}.{table} WHERE metric = 'carts'") == [(0,)]
    assert recorded(settings, "carts") == {}

    day_sql = (
        "SELECT tenant_id, metric, dimension_set, country, window_start, round(value, 6), sketch"
        " FROM {lake}.fct_metrics_day ORDER BY ALL"
    )
    before = lake_query(settings, day_sql)
    stdout = build(settings, None, rebuild_metric_history=["revenue", "active_users"])
    for model in ("fct_metrics_hour", "fct_metrics_day", "fct_metrics_minute"):
        assert re.search(rf"{model}: rebuilding revenue, active_users over ", stdout), stdout[-3000:]
    assert lake_query(settings, day_sql) == before
    refused = run_dbt(settings, *BUILD, "--vars", json.dumps({"rebuild_metric_history": ["nope"]}), check=False)
    assert refused.returncode != 0 and "rebuild_metric_history names nope" in refused.stdout


def test_a_tenants_own_purchase_mapping_rebuilds_purchases_for_the_rollups_and_the_api(
    lake: Settings, truth: duckdb.DuckDBPyConnection
) -> None:
    """tenant_2 maps its purchases to checkout_started: the next build rebuilds the purchase metrics
    (their fingerprints changed), every grain of each tenant then counts its own purchase event types,
    and the query API's raw path counts the same; the metrics without `purchase` are not rebuilt."""
    settings = lake
    build(settings, None)  # the late events staged, the project's mapping
    refresh_truth(settings, truth)
    mapping = copy.deepcopy(PROJECT_CATALOGUE)
    mapping["purchases"]["tenants"] = {"tenant_2": {"event_types": ["checkout_started"]}}
    own = {"tenant_1": ["purchase", "Order Completed"], "tenant_2": ["checkout_started"]}
    for tenant, types in own.items():  # before the build: the new mapping's numbers from the raw events
        asked = ask(settings, mapping, ["purchases"], SHORT, tenant=tenant)
        assert sources(asked) == {"raw"} and values(asked, "purchases") == counted(truth, tenant, "day", types, *SHORT)
    stdout = build(settings, mapping)
    for model in ("fct_metrics_hour", "fct_metrics_day", "fct_metrics_minute"):
        assert re.search(rf"{model}: rebuilding purchases, revenue, purchasers over ", stdout), stdout[-3000:]
    far = (TODAY - timedelta(days=400), TODAY + timedelta(days=2))
    recent = (TODAY - timedelta(days=6), TODAY + timedelta(days=2))
    for tenant, types in own.items():
        for grain, span in (("day", far), ("hour", far), ("minute", recent)):
            assert rollup_values(settings, grain, "purchases", tenant) == counted(truth, tenant, grain, types, *span)
        asked = ask(settings, mapping, ["purchases"], SHORT, tenant=tenant)
        assert "raw" not in sources(asked)
        assert values(asked, "purchases") == counted(truth, tenant, "day", types, *SHORT)
    build(settings, None)  # back to the project's mapping for the other tests


def test_a_lake_of_the_old_sketch_format_is_migrated_by_the_next_incremental_build(lake: Settings) -> None:
    """Rollups built before the sketches were BLOBs (INTEGER[] registers, metric_logic_version 1): the next
    plain build replaces the column and rebuilds every metric in slices, giving the rows a fresh build gives."""
    settings = lake
    build(settings, None)
    tables = ("fct_metrics_minute", "fct_metrics_hour", "fct_metrics_day")
    snapshot = (
        "SELECT tenant_id, metric, dimension_set, event_type, country, device, window_start, round(value, 6), sketch"
        " FROM {lake}.{table} ORDER BY ALL"
    )
    want = {t: lake_query(settings, snapshot.replace("{table}", t)) for t in tables}
    # The lake as the previous release left it: INTEGER[] sketches, recorded under logic version 1.
    hll_precision, _ = definition_vars()
    old = Catalogue.model_validate(PROJECT_CATALOGUE).fingerprints(hll_precision, 1)
    con = warehouse.connect(settings)
    try:
        for table in tables:
            con.execute(f"ALTER TABLE lake.main.{table} DROP COLUMN sketch")
            con.execute(f"ALTER TABLE lake.main.{table} ADD COLUMN sketch INTEGER[]")
            con.execute(
                f"UPDATE lake.main.{table} SET sketch = [323, 577] WHERE metric IN ('active_users', 'purchasers')"
            )
        for metric, fingerprint in old.items():
            con.execute(
                "UPDATE lake.main.fct_metric_definitions SET fingerprint = ? WHERE metric = ?", [fingerprint, metric]
            )
    finally:
        con.close()

    stdout = build(settings, None)
    for model in tables:
        assert f"{model}: sketch column INTEGER[] replaced by blob" in stdout, stdout[-3000:]
        assert re.search(
            rf"{model}: rebuilding events, traffic_events, purchases, revenue, active_users, purchasers", stdout
        )
        types = lake_query(
            settings,
            f"SELECT data_type FROM information_schema.columns WHERE table_name = '{model}' AND column_name = 'sketch'",
        )
        assert types == [("BLOB",)]
        assert lake_query(settings, snapshot.replace("{table}", model)) == want[model], model
    current = Catalogue.model_validate(PROJECT_CATALOGUE).fingerprints(*definition_vars())
    assert recorded(settings, "active_users") == dict.fromkeys(("minute", "hour", "day"), current["active_users"])
