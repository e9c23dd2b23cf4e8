"""Funnels through the query API on the query bench's lake (a year of events; 100M at scale large).

The lake is bench_query's (ANALYTICS_BENCH_QUERY_DIR keeps it between runs; a lake prepared now gets
its funnel tables with the rollups, slice by slice); the funnel tables are brought up to date first
(`dbt run --select +fct_funnel_daily`, timed; a kept lake built before the funnel tables existed gets
them whole there, in batches of users past the `funnel_build_batch_events` var). The API runs as a real
server (`analytics api`) and a keep-alive httpx client asks:

- funnel_defined: the project's `checkout` funnel over 30 days per cohort day, answered from
  fct_funnel_daily; every repetition shifts the range back a day, so each one misses the answer cache;
  then one of them repeated (cache hits);
- funnel_adhoc: a 3-step ad-hoc funnel (page_view → add_to_cart → checkout, 1-day window) over 30
  days, counted from the staged events, against the same funnel SQL (analytics_core/funnel_sql.py,
  what the API renders) run directly on the lake in this process over the same range, alternating;
  the first repetition's rows must be equal.
"""

from __future__ import annotations

import contextlib
import os
import statistics
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx

from analytics_core import warehouse
from analytics_core.dbt import run_dbt
from analytics_core.funnel_sql import render
from analytics_core.funnels import Funnel
from analytics_core.settings import Settings
from bench.bench_query import (
    EVENTS,
    EVENTS_ENV,
    READ_KEY,
    STAGED_EVENTS,
    TENANT,
    USERS,
    check_redis,
    delete_redis_keys,
    lake_directory,
    lake_settings,
    percentile,
    post,
    prepare_lake,
    start_api,
)
from bench.harness import Record, Scale, record

DEFINED_REPS = 40
CACHED_REPS = 100
ADHOC_REPS = 5
SPAN = timedelta(days=30)
ADHOC = {"steps": [{"event_type": t} for t in ("page_view", "add_to_cart", "checkout")], "window": "1d"}


def _post(client: httpx.Client, body: dict[str, Any]) -> tuple[float, dict[str, Any]]:
    return post(client, body, "/api/v1/funnels/query")


def _range(end: datetime, k: int) -> tuple[datetime, datetime]:
    last = end - timedelta(days=k)
    return last - SPAN, last


def _build_funnel_tables(settings: Settings, directory: Path) -> float:
    """`dbt run --select +fct_funnel_daily` on the lake (whole the first time, incremental later); seconds."""
    started = time.perf_counter()
    args = ["run", "--select", "+fct_funnel_daily"]
    done = run_dbt(settings, args, directory / "dbt" / "target", directory / "dbt" / "logs", capture=True)
    if done.returncode != 0:
        raise RuntimeError(f"dbt {' '.join(args)} failed:\n{done.stdout[-3000:]}")
    return time.perf_counter() - started


def run(settings: Settings, scale: Scale) -> list[Record]:
    """funnel_defined_p95, funnel_defined_cached_p95, funnel_adhoc_overhead (and their medians)."""
    n = int(os.environ.get(EVENTS_ENV) or EVENTS[scale])
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    check_redis(settings)
    with contextlib.ExitStack() as stack:
        directory = lake_directory(stack)
        bench = lake_settings(settings, directory, f"bench.funnels.{stamp}.")
        data_end = prepare_lake(bench, directory, n, USERS[scale])
        built = _build_funnel_tables(bench, directory)
        print(f"funnel bench: dbt run --select +fct_funnel_daily on {n:,} events: {built:.0f} s", flush=True)
        end = data_end - timedelta(days=1)  # whole UTC days, every window closed
        try:
            api, url = start_api(bench, directory)
            with (
                api,
                httpx.Client(base_url=url, headers={"Authorization": f"Bearer {READ_KEY}"}, timeout=600) as client,
            ):
                defined, cached = _defined(client, end)
                adhoc_api, adhoc_sql = _adhoc(bench, client, end)
        finally:
            delete_redis_keys(bench, f"{bench.redis_key_prefix}*")
    api_ms, sql_ms = statistics.median(adhoc_api) * 1000, statistics.median(adhoc_sql) * 1000
    print(f"funnel_adhoc: API {api_ms:.0f} ms, direct SQL {sql_ms:.0f} ms (medians)")
    records = [
        record("funnel_events", n, "events"),
        record("funnel_adhoc_sql_median", sql_ms, "ms"),
        record("funnel_adhoc_api_median", api_ms, "ms", baseline="funnel_adhoc_sql_median"),
        record("funnel_adhoc_overhead", api_ms / sql_ms, "x", target="<= 1.2"),
    ]
    print(
        f"funnel_defined: p50 {percentile(defined, 50) * 1000:.1f} ms, p95 {percentile(defined, 95) * 1000:.1f} ms;"
        f" cached p95 {percentile(cached, 95) * 1000:.1f} ms"
    )
    records += [
        record("funnel_defined_median", statistics.median(defined) * 1000, "ms"),
        record("funnel_defined_p95", percentile(defined, 95) * 1000, "ms", target="<= 50"),
        record("funnel_defined_cached_p95", percentile(cached, 95) * 1000, "ms"),
        record("funnel_tables_run", built, "s"),  # whole on a new lake, else what changed since
    ]
    return records


def _defined(client: httpx.Client, end: datetime) -> tuple[list[float], list[float]]:
    """Seconds per uncached and per cached request of the defined funnel from its table."""
    times: list[float] = []
    for k in range(DEFINED_REPS + 1):  # the first one warms up
        start, stop = _range(end, k)
        elapsed, answer = _post(client, {"funnel": "checkout", "start": start.isoformat(), "end": stop.isoformat()})
        if answer["source"] != "fct_funnel_daily" or answer["cache"]["hit"]:
            raise RuntimeError(
                f"expected an uncached answer from fct_funnel_daily: {answer['source']}, {answer['cache']}"
            )
        if not answer["rows"] or answer["rows"][0]["entered"] <= 0:
            raise RuntimeError("the funnel table answered no users: is it built over this lake?")
        if k:
            times.append(elapsed)
    start, stop = _range(end, 1)
    cached: list[float] = []
    for _ in range(CACHED_REPS):
        elapsed, answer = _post(client, {"funnel": "checkout", "start": start.isoformat(), "end": stop.isoformat()})
        if not answer["cache"]["hit"]:
            raise RuntimeError("a repeated funnel question missed the cache")
        cached.append(elapsed)
    return times, cached


def _adhoc(settings: Settings, client: httpx.Client, end: datetime) -> tuple[list[float], list[float]]:
    """Seconds per ad-hoc funnel through the API and per the same SQL run here, alternating."""
    funnel = Funnel.model_validate(ADHOC)
    staged = f"{settings.warehouse_alias}.main.{STAGED_EVENTS}"
    events = (
        f"(SELECT * FROM {staged} WHERE tenant_id = $tenant"
        " AND event_at >= cast($first AS timestamptz) AND event_at <= cast($last AS timestamptz))"
    )
    api_times: list[float] = []
    sql_times: list[float] = []
    con = warehouse.connect(settings, read_only=True)
    try:
        for k in range(ADHOC_REPS + 1):  # the first one warms up (both paths)
            start, stop = _range(end, k)
            elapsed, answer = _post(client, {"definition": ADHOC, "start": start.isoformat(), "end": stop.isoformat()})
            if answer["source"] != "raw_events" or answer["cache"]["hit"]:
                raise RuntimeError(f"expected an uncached answer from the staged events: {answer['source']}")
            sql, params = render(funnel, events, start, stop, datetime.now(UTC), by_day=True)
            bound = {
                **params,
                "tenant": TENANT,
                "first": start.isoformat(),
                "last": (stop + timedelta(seconds=funnel.window)).isoformat(),
            }
            t0 = time.perf_counter()  # every column, as the API reads them: medians and p90s are the costly part
            cursor = con.execute(f"SELECT * FROM ({sql}) ORDER BY cohort_day", bound)
            got = cursor.fetchall()
            direct = time.perf_counter() - t0
            if k == 0:
                names = [d[0] for d in cursor.description]
                direct_rows = [dict(zip(names, r, strict=True)) for r in got]
                api_rows = [(r["cohort_day"], r["entered"], r["reached"][2], r["median_s"][1]) for r in answer["rows"]]
                wanted = [
                    (r["cohort_day"].isoformat(), r["entered"], r["reached_3"], r["median_s_3"]) for r in direct_rows
                ]
                if api_rows != wanted:
                    raise RuntimeError("the API's ad-hoc funnel differs from the same SQL run directly")
            else:
                api_times.append(elapsed)
                sql_times.append(direct)
    finally:
        con.close()
    return api_times, sql_times
