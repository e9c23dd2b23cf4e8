"""The answer cache never serves a number from before a restatement (issue 16, finding 7).

A real DuckLake built by dbt, the session's Redis, the query API over HTTP twice: with its in-memory replica
and without it (reading the catalog). A closed day is asked (a miss, then a hit); late events for that day are
loaded and dbt rebuilds the rollups, each in another process as the loader and dbt are; the same question then
answers the new number at once (equal to a count in SQL over the raw events, written here), and the next ask
is a hit again. A dbt run that changes nothing an answer read (the minute job: staged events, minute rollups,
watermarks moving on past the day) leaves it cached, and an answer stored by one API is served by the other.

Once the APIs are running, the lake is written by other processes only (see tests/integration/
test_query_replica.py: warehouse.connect in this process would delete the catalog's WAL files under them);
this process reads it through attach_lake.
"""

from __future__ import annotations

import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from analytics_core import warehouse
from analytics_core.clients import redis_client
from analytics_core.settings import Settings
from api.app import create_app
from api.engine.query_engine import attach_lake
from tenants import TenantStore, create_tenant_with_keys
from tests.integration.dbt_runs import run_dbt
from tests.integration.query_lake import events_sql, insert_block
from tests.servers import serve

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]
TENANT, READ_KEY = "tenant_v", "rk_cache_versions"
HISTORY = (datetime(2026, 3, 2, tzinfo=UTC), datetime(2026, 3, 8, tzinfo=UTC), 6_000)  # closed days, watermark past
DAY_OF = {"replica": datetime(2026, 3, 3, tzinfo=UTC), "lake": datetime(2026, 3, 4, tzinfo=UTC)}  # restated days
UNCHANGED_DAY = datetime(2026, 3, 5, tzinfo=UTC)
OTHER_DAY = datetime(2026, 3, 7, tzinfo=UTC)  # where the minute job's new events land
# The test's own count: people's events, the first copy of each event id, straight from the raw events.
TRUTH_SQL = """
    SELECT coalesce(country, 'unknown') AS country, count(*) FILTER (WHERE NOT is_bot) AS events
    FROM (
        SELECT * FROM lake.main.raw_events
        QUALIFY row_number() OVER (
            PARTITION BY tenant_id, event_id ORDER BY received_at, _kafka_partition, _kafka_offset
        ) = 1
    )
    WHERE tenant_id = ? AND "timestamp" >= ? AND "timestamp" < ?
    GROUP BY ALL
"""


@pytest.fixture(scope="module")
def lake(tmp_path_factory: pytest.TempPathFactory, stack_settings: Settings) -> Iterator[Settings]:
    base = tmp_path_factory.mktemp("cache_versions")
    settings = stack_settings.model_copy(
        update={
            "warehouse_path": base / "warehouse",
            "tenants_db": base / "tenants.sqlite",
            "redis_key_prefix": f"test:{uuid.uuid4().hex[:10]}:",
            "api_replica_refresh_s": 0.2,
        }
    )
    con = warehouse.connect(settings)
    try:
        start, end, n = HISTORY
        insert_block(con, "lake.main.raw_events", TENANT, start, end, n, "history", 0, 0)
    finally:
        con.close()
    run_dbt(settings, "build", "--exclude-resource-type", "unit_test")
    create_tenant_with_keys(TenantStore(settings.tenants_db), TENANT, "wk_cache_versions", READ_KEY)
    yield settings
    conn = redis_client(settings)
    try:
        keys = list(conn.scan_iter(match=f"{settings.redis_key_prefix}*", count=1000))
        if keys:
            conn.delete(*keys)
    finally:
        conn.close()


@pytest.fixture(scope="module")
def apis(lake: Settings) -> Iterator[dict[str, str]]:
    """Two query APIs over the lake and Redis: one with the in-memory replica, one reading the catalog."""
    with serve(create_app(lake)) as replica, serve(create_app(lake.model_copy(update={"api_replica": False}))) as own:
        caught_up(replica, lake)
        yield {"replica": replica, "lake": own}


# -- helpers ------------------------------------------------------------------------------------------------


def lake_snapshot(settings: Settings) -> int:
    con = attach_lake(settings)
    try:
        row = con.execute("SELECT id FROM lake.current_snapshot()").fetchone()
        assert row is not None
        return int(row[0])
    finally:
        con.close()


def caught_up(url: str, settings: Settings, timeout: float = 60.0) -> None:
    """Until the API's replica holds the lake's current snapshot (a query computed now reads it)."""
    want = lake_snapshot(settings)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ready = httpx.get(f"{url}/readyz", timeout=10).json()
        held = ready.get("replica", "")
        if held.startswith("snapshot ") and int(held.split()[1]) >= want:
            return
        time.sleep(0.05)
    raise AssertionError(f"the replica of {url} did not reach snapshot {want}: {ready}")


def truth(settings: Settings, start: datetime, end: datetime) -> dict[str, int]:
    """People's events per country over [start, end), by SQL over the raw events."""
    con = attach_lake(settings)
    try:
        return {str(c): int(n) for c, n in con.execute(TRUTH_SQL, [TENANT, start, end]).fetchall() if n}
    finally:
        con.close()


def ask(url: str, body: dict[str, Any]) -> dict[str, Any]:
    answer = httpx.post(f"{url}/api/v1/query", json=body, headers={"Authorization": f"Bearer {READ_KEY}"}, timeout=60)
    assert answer.status_code == 200, answer.text
    result: dict[str, Any] = answer.json()
    return result


def hit(answer: dict[str, Any]) -> bool:
    return bool(answer["provenance"]["cache"]["hit"])


def total(answer: dict[str, Any]) -> int:
    return int(sum(row["values"]["events"] or 0 for row in answer["rows"]))


def by_country(answer: dict[str, Any]) -> dict[str, int]:
    out: dict[str, int] = {}
    for row in answer["rows"]:
        country = row["dimensions"]["country"]
        out[country] = out.get(country, 0) + int(row["values"]["events"] or 0)
    return {c: n for c, n in out.items() if n}


def counters(url: str) -> dict[str, float]:
    """The cache's counters in /metrics."""
    text = httpx.get(f"{url}/metrics", timeout=10).text
    names = ("api_cache_hits_total", "api_cache_misses_total", "api_cache_stale_total")
    found = {name: 0.0 for name in names}
    for line in text.splitlines():
        name, _, value = line.partition(" ")
        if name in found:
            found[name] = float(value)
    return found


def moved(before: dict[str, float], after: dict[str, float]) -> dict[str, int]:
    return {name.removeprefix("api_cache_").removesuffix("_total"): int(after[name] - before[name]) for name in before}


def questions(day: datetime) -> dict[str, dict[str, Any]]:
    """The day asked three ways: day rollups (UTC), hour rollups (New York's day), raw events (by page)."""
    utc = {"metrics": ["events"], "start": day.isoformat(), "end": (day + timedelta(days=1)).isoformat()}
    local = day.date().isoformat(), (day + timedelta(days=1)).date().isoformat()
    return {
        "rollup_day": {**utc, "granularity": "day", "group_by": ["country"]},
        "rollup_hour": {
            "metrics": ["events"],
            "start": local[0],
            "end": local[1],
            "granularity": "day",
            "timezone": "America/New_York",
        },
        "raw": {**utc, "granularity": "day", "group_by": ["page"]},
    }


def expected(settings: Settings, day: datetime) -> dict[str, int]:
    """Each question's total, by raw SQL (New York: UTC-5 on these days)."""
    ny = day + timedelta(hours=5)
    return {
        "rollup_day": sum(truth(settings, day, day + timedelta(days=1)).values()),
        "rollup_hour": sum(truth(settings, ny, ny + timedelta(days=1)).values()),
        "raw": sum(truth(settings, day, day + timedelta(days=1)).values()),
    }


def child(warehouse_path: str, action: str, *args: str) -> None:
    """In another process: load events (`events DAY N SALT`, received now), or run dbt (`dbt ARGS...`)."""
    settings = Settings(warehouse_path=Path(warehouse_path), _env_file=None)  # type: ignore[call-arg]
    if action == "events":
        day, n, salt = datetime.fromisoformat(args[0]), int(args[1]), args[2]
        con = warehouse.connect(settings)
        try:
            row = con.execute("SELECT max(_kafka_offset) + 1 FROM lake.main.raw_events WHERE _kafka_partition = 0")
            offset = int((row.fetchone() or (0,))[0])
            # Late: event times in the day (10:00 to 12:00 UTC, inside New York's day too), received now.
            start, end = day + timedelta(hours=10), day + timedelta(hours=12)
            sql = events_sql(TENANT, start, end, n, salt, 0, offset)
            con.execute(f"INSERT INTO lake.main.raw_events SELECT * REPLACE (now() AS received_at) FROM ({sql})")
        finally:
            con.close()
    else:
        run_dbt(settings, *args)


def in_another_process(settings: Settings, action: str, *args: str) -> None:
    code = "import sys; from tests.integration.test_api_cache_versions import child; child(*sys.argv[1:])"
    done = subprocess.run(
        [sys.executable, "-c", code, str(settings.warehouse_path), action, *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, f"{action} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"


# -- the tests ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["replica", "lake"])
def test_a_restated_day_is_answered_anew_at_once_then_cached_again(
    lake: Settings, apis: dict[str, str], mode: str
) -> None:
    url, day = apis[mode], DAY_OF[mode]
    asked = questions(day)
    old = expected(lake, day)
    before = counters(url)
    first = {name: ask(url, body) for name, body in asked.items()}
    second = {name: ask(url, body) for name, body in asked.items()}
    for name, answer in first.items():
        assert {p["source"] for p in answer["provenance"]["parts"]} == {name}, name  # the source meant
        assert not hit(answer) and hit(second[name]), name
        assert second[name]["rows"] == answer["rows"] and total(answer) == old[name], name
    assert by_country(first["rollup_day"]) == truth(lake, day, day + timedelta(days=1))
    assert moved(before, counters(url)) == {"hits": 3, "misses": 3, "stale": 0}

    in_another_process(lake, "events", day.isoformat(), "40", f"late_{mode}")
    in_another_process(lake, "dbt", "run")
    if mode == "replica":  # what the replica holds is what a query computed now reads
        caught_up(url, lake)
    new = expected(lake, day)
    assert all(new[name] > old[name] for name in asked), (old, new)  # the late events count in every question

    before = counters(url)
    restated = {name: ask(url, body) for name, body in asked.items()}
    for name, answer in restated.items():
        assert total(answer) == new[name], (name, total(answer), new[name], old[name])
        assert not hit(answer), name  # not the entry stored before the restatement
    assert by_country(restated["rollup_day"]) == truth(lake, day, day + timedelta(days=1))
    assert moved(before, counters(url)) == {"hits": 0, "misses": 3, "stale": 3}
    before = counters(url)
    again = {name: ask(url, body) for name, body in asked.items()}
    for name, answer in again.items():
        assert hit(answer) and answer["rows"] == restated[name]["rows"], name
    assert moved(before, counters(url)) == {"hits": 3, "misses": 0, "stale": 0}


def test_an_answer_stays_cached_while_what_it_read_is_unchanged_and_any_api_serves_it(
    lake: Settings, apis: dict[str, str]
) -> None:
    """Stored by the API with the replica, served by the one without it, and by both after the minute job."""
    body = questions(UNCHANGED_DAY)["rollup_day"]
    want = truth(lake, UNCHANGED_DAY, UNCHANGED_DAY + timedelta(days=1))
    stored = ask(apis["replica"], body)
    assert not hit(stored) and by_country(stored) == want
    served = {mode: ask(url, body) for mode, url in apis.items()}
    assert all(hit(answer) and answer["rows"] == stored["rows"] for answer in served.values())
    raw = questions(UNCHANGED_DAY)["raw"]
    raw_stored = ask(apis["replica"], raw)
    assert not hit(raw_stored) and hit(ask(apis["lake"], raw))

    # The minute job: new events (another day) staged, minute rollups built, the watermarks moved on past the
    # day. The day rollups this answer read did not change, nor its watermarks within its range: still cached.
    in_another_process(lake, "events", OTHER_DAY.isoformat(), "30", "minute_job")
    in_another_process(lake, "dbt", "run", "--select", "stg_tracking__events", "tag:minute")
    caught_up(apis["replica"], lake)
    time.sleep(1.1)  # the API without the replica reads the catalog again (VERSIONS_TTL_S)
    before = {mode: counters(url) for mode, url in apis.items()}
    for mode, url in apis.items():
        answer = ask(url, body)
        assert hit(answer) and answer["rows"] == stored["rows"], mode
        assert by_country(answer) == truth(lake, UNCHANGED_DAY, UNCHANGED_DAY + timedelta(days=1))
        assert moved(before[mode], counters(url)) == {"hits": 1, "misses": 0, "stale": 0}, mode
    # The raw events' question of that day read the staged events, which the minute job changed: computed again
    # (the same number: the new events are of another day), then cached again.
    before = counters(apis["lake"])
    raw_again = ask(apis["lake"], raw)
    assert not hit(raw_again) and total(raw_again) == total(raw_stored) == sum(want.values())
    assert moved(before, counters(apis["lake"])) == {"hits": 0, "misses": 1, "stale": 1}
    assert hit(ask(apis["replica"], raw))
