"""Funnel and experiment answers are cached like /query's, and never served after their tables changed.

A real DuckLake built by dbt (the staged events, fct_funnel_daily, the experiment tables), the session's
Redis and the query API over HTTP with its replica. A question asked twice is a miss, then a hit with the
same rows; tenants never share an entry. Late events are then loaded and dbt run again, each in another
process as the loader and dbt are: the same question answers the new numbers at once (a miss, counted as
stale), equal to what the rebuilt table holds (or, for ad-hoc funnels, to the old answer plus the new
users), and is a hit again after that.
"""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from analytics_core.settings import Settings
from api.app import create_app
from api.engine.query_engine import attach_lake
from tenants import TenantStore, create_tenant_with_keys
from tests.integration.dbt_runs import run_dbt
from tests.integration.lake_events import lake_settings, write_raw
from tests.integration.test_api_cache_versions import caught_up, counters, moved
from tests.servers import serve

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]
DAY0 = datetime(2026, 11, 2, tzinfo=UTC)
STEPS = ["page_view", "add_to_cart", "checkout", "purchase"]
KEYS = {"t1": "rk_cache_funnels_t1", "t2": "rk_cache_funnels_t2"}


def sessions(tenant: str, prefix: str, users: int, depth: int, day: datetime) -> list[dict[str, Any]]:
    """`users` users walking the checkout funnel `depth` steps on `day`, each exposed to checkout_button
    (alternately control and treatment) and tagged on every step, so purchases count for its metrics."""
    out = []
    for u in range(users):
        at = day + timedelta(hours=8, minutes=u)
        variant = ("control", "treatment")[u % 2]
        for step in STEPS[:depth]:
            out.append(
                {"tenant_id": tenant, "user_id": f"{tenant}-{prefix}{u}", "event_type": step, "timestamp": at,
                 "is_bot": False, "country": ("US", "DE")[u % 2], "experiment_key": "checkout_button",
                 "experiment_variant": variant, "revenue": 20.0 if step == "purchase" else None,
                 "currency": "USD" if step == "purchase" else None}
            )  # fmt: skip
            at += timedelta(minutes=5)
    return out


def build(settings: Settings) -> None:
    """The minute and hourly jobs' models (the replica needs the rollups and the watermarks)."""
    run_dbt(settings, "run")


@pytest.fixture(scope="module")
def lake(stack_settings: Settings, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Settings]:
    settings = lake_settings(stack_settings, tmp_path_factory.mktemp("cache_funnels"), "cache_funnels")
    settings = settings.model_copy(update={"api_replica_refresh_s": 0.2})
    write_raw(
        settings,
        sessions("t1", "a", 30, 4, DAY0) + sessions("t1", "b", 20, 2, DAY0 + timedelta(days=1))
        + sessions("t2", "a", 10, 3, DAY0),
    )  # fmt: skip
    build(settings)
    store = TenantStore(settings.tenants_db)
    for tenant, key in KEYS.items():
        create_tenant_with_keys(store, tenant, f"wk_cache_funnels_{tenant}", key)
    yield settings


@pytest.fixture(scope="module")
def api(lake: Settings) -> Iterator[str]:
    with serve(create_app(lake)) as url:
        caught_up(url, lake)
        yield url


def post(url: str, tenant: str, body: dict[str, Any]) -> dict[str, Any]:
    answer = httpx.post(
        f"{url}/api/v1/funnels/query", json=body, headers={"Authorization": f"Bearer {KEYS[tenant]}"}, timeout=60
    )
    assert answer.status_code == 200, answer.text
    result: dict[str, Any] = answer.json()
    return result


def get(url: str, tenant: str, key: str) -> dict[str, Any]:
    answer = httpx.get(
        f"{url}/api/v1/experiments/{key}", headers={"Authorization": f"Bearer {KEYS[tenant]}"}, timeout=60
    )
    assert answer.status_code == 200, answer.text
    result: dict[str, Any] = answer.json()
    return result


def without_timing(answer: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in answer.items() if k not in ("cache", "elapsed_ms")}


def table_entered(settings: Settings, tenant: str) -> dict[str, int]:
    """Users entering the checkout funnel per cohort day, read from fct_funnel_daily by this test."""
    con = attach_lake(settings)
    try:
        rows = con.execute(
            "SELECT cohort_day, entered FROM lake.main.fct_funnel_daily"
            " WHERE tenant_id = ? AND funnel_key = 'checkout' AND breakdown = ''",
            [tenant],
        ).fetchall()
    finally:
        con.close()
    return {day.isoformat(): int(n) for day, n in rows}


def child(warehouse_path: str, events_file: str) -> None:
    """In another process: append the events of `events_file` (JSON) to raw_events, then the hourly models."""
    settings = Settings(warehouse_path=Path(warehouse_path), _env_file=None)  # type: ignore[call-arg]
    events = json.loads(Path(events_file).read_text())
    for e in events:
        e["timestamp"] = datetime.fromisoformat(e["timestamp"])
    write_raw(settings, events)
    build(settings)


def load_and_build(settings: Settings, events: list[dict[str, Any]], url: str) -> None:
    path = settings.warehouse_path.parent / f"late-{uuid.uuid4().hex[:8]}.json"
    path.write_text(json.dumps([{**e, "timestamp": e["timestamp"].isoformat()} for e in events]))
    code = "import sys; from tests.integration.test_api_cache_funnels import child; child(*sys.argv[1:])"
    done = subprocess.run(
        [sys.executable, "-c", code, str(settings.warehouse_path), str(path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, f"loading and building failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    caught_up(url, settings)


def test_funnel_answers_are_cached_until_their_table_or_events_change(lake: Settings, api: str) -> None:
    span = {"start": DAY0.isoformat(), "end": (DAY0 + timedelta(days=3)).isoformat()}
    defined = {**span, "funnel": "checkout"}
    adhoc = {**span, "definition": {"steps": [{"event_type": t} for t in STEPS], "window": "1d"}}
    before = counters(api)
    first = post(api, "t1", defined)
    again = post(api, "t1", defined)
    assert first["source"] == "fct_funnel_daily" and not first["cache"]["hit"]
    assert again["cache"]["hit"] and without_timing(again) == without_timing(first)
    assert first["cache"]["ttl_s"] == lake.api_cache_closed_ttl_s  # table answers change only with the table
    assert {r["cohort_day"]: r["entered"] for r in first["rows"]} == table_entered(lake, "t1")
    raw = post(api, "t1", adhoc)
    raw_again = post(api, "t1", adhoc)
    assert raw["source"] == "raw_events" and not raw["cache"]["hit"] and raw_again["cache"]["hit"]
    assert without_timing(raw_again) == without_timing(raw)
    assert raw["cache"]["ttl_s"] == lake.api_cache_closed_ttl_s  # every window of the range has ended
    other = post(api, "t2", defined)  # another tenant: an entry of its own
    assert not other["cache"]["hit"] and sum(r["entered"] for r in other["rows"]) == 10
    assert moved(before, counters(api)) == {"hits": 2, "misses": 3, "stale": 0}

    # Windows still open (the range reaches now): pending users change with the clock, the short TTL.
    now = datetime.now(UTC)
    open_range = {
        **adhoc,
        "start": (now - timedelta(days=1)).isoformat(),
        "end": (now + timedelta(hours=1)).isoformat(),
    }
    assert post(api, "t1", open_range)["cache"]["ttl_s"] == lake.api_cache_ttl_s

    # 7 more users enter on the second day; loaded and built by other processes.
    load_and_build(lake, sessions("t1", "late", 7, 4, DAY0 + timedelta(days=1)), api)
    before = counters(api)
    restated = post(api, "t1", defined)
    assert not restated["cache"]["hit"]
    assert {r["cohort_day"]: r["entered"] for r in restated["rows"]} == table_entered(lake, "t1")
    day2 = (DAY0 + timedelta(days=1)).date().isoformat()
    entered = {r["cohort_day"]: r["entered"] for r in first["rows"]}
    assert {r["cohort_day"]: r["entered"] for r in restated["rows"]} == {**entered, day2: entered[day2] + 7}
    raw_restated = post(api, "t1", adhoc)
    assert not raw_restated["cache"]["hit"]
    assert raw_restated["rows"][1]["entered"] == raw["rows"][1]["entered"] + 7
    assert raw_restated["rows"][1]["reached"][3] == raw["rows"][1]["reached"][3] + 7
    assert post(api, "t1", defined)["cache"]["hit"] and post(api, "t1", adhoc)["cache"]["hit"]
    assert moved(before, counters(api)) == {"hits": 2, "misses": 2, "stale": 2}


def test_experiment_answers_are_cached_until_its_tables_change(lake: Settings, api: str) -> None:
    first = get(api, "t1", "checkout_button")
    again = get(api, "t1", "checkout_button")
    assert not first["cache"]["hit"] and again["cache"]["hit"]
    assert without_timing(again) == without_timing(first)
    assert first["cache"]["ttl_s"] == lake.api_cache_closed_ttl_s
    other = get(api, "t2", "checkout_button")
    assert not other["cache"]["hit"] and sum(other["users"].values()) == 10

    load_and_build(lake, sessions("t1", "exp", 6, 4, DAY0 + timedelta(days=2)), api)
    restated = get(api, "t1", "checkout_button")
    assert not restated["cache"]["hit"]
    assert {v: n - first["users"][v] for v, n in restated["users"].items()} == {"control": 3, "treatment": 3}
    assert restated["built_at"] > first["built_at"]
    assert get(api, "t1", "checkout_button")["cache"]["hit"]
