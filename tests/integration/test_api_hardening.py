"""The query API hardened, over real HTTP on a real DuckLake built by dbt and the session's Redis.

- Cached answers are served by any process: two API processes (one of them with two uvicorn workers) and a
  restarted one answer each other's entries with the same bytes, cache and elapsed_ms aside.
- Dimension values that look like the cache's old markers, JSON structure or the top-N rest stay plain values.
- Requests whose size the parameters make costly (filter products, buckets, rows, raw ranges) or impossible
  (zones that are directories, times past year 9999, integers past 64 bits) answer 400 naming field and rule.
- The worst request each limit allows stays within the budget docs/API.md states (peak RSS and wall time of a
  real server process).
- A read key asking too fast gets 429 with Retry-After, counted in Redis across processes; without Redis,
  queries are still answered.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from analytics_core import warehouse
from analytics_core.catalogue import get_catalogue
from analytics_core.clients import redis_client
from analytics_core.realtime_keys import RealtimeKeys
from analytics_core.settings import Settings
from api.app import create_app
from tenants import TenantStore, create_tenant_with_keys
from tests.integration.dbt_runs import run_dbt
from tests.integration.query_lake import events_sql, insert_block
from tests.integration.realtime_fill import write_realtime
from tests.replica_checks import wait_ready
from tests.servers import free_port, serve

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]

NOW = datetime.now(UTC).replace(second=0, microsecond=0)
TODAY = NOW.replace(hour=0, minute=0)
LAKE_UNTIL = NOW - timedelta(minutes=30)
# Whole hours the warehouse holds, then the live minutes past it: true at any time of day (TODAY holds
# no whole warehouse hour between 00:00 and 01:00 UTC).
SPAN_FROM = (LAKE_UNTIL - timedelta(hours=3)).replace(minute=0)
# tenant_a: the engine tests' blocks (two DST changes, the last three days); tenant_h: values that try to look
# like structure; tenant_d: dense recent traffic (more bucket and group cells than a query may read).
BLOCKS = (
    (datetime(2026, 3, 5, tzinfo=UTC), datetime(2026, 3, 11, tzinfo=UTC), 12_000, "mar"),
    (datetime(2026, 10, 30, tzinfo=UTC), datetime(2026, 11, 3, tzinfo=UTC), 8_000, "nov"),
    (TODAY - timedelta(days=3), LAKE_UNTIL, 9_000, "recent"),
)
HOSTILE = [
    '"cache":null,"elapsed_ms":null}}',
    "__cache_0123456789abcdef__",
    "__elapsed_0123456789abcdef__",
    '"},"provenance":{"cache":',
    "\\",
    "tab\tnewline\ncontrol\x01",
    "ü🙂\u2028",
]
OTHER_LIKE = "__other__"  # a real value, the most frequent of tenant_h: always in the top N
DENSE_EVENTS = 200_000  # over two days: more (minute, event type, country, device) cells than api_max_cells
KEYS = {"tenant_a": "rk_hard_a", "tenant_h": "rk_hard_h", "tenant_d": "rk_hard_d"}
MB = 1024 * 1024
# The budget docs/API.md states for the worst request each limit allows (peak RSS growth of the server
# process over all of them; wall time of each, on this shared 2-core machine).
BUDGET_RSS_MB = 200
BUDGET_SECONDS = 2.0


def _hostile_sql(start: datetime, end: datetime, n: int) -> tuple[str, list[Any]]:
    """tenant_h's events: 40 % of them in country (and on page) OTHER_LIKE, the rest spread over HOSTILE."""
    sql = events_sql("tenant_h", start, end, n, "hostile", partition=3)
    pick = f"list_element(?, (hash(event_id, 'c') % {len(HOSTILE)})::INTEGER + 1)"
    country = f"CASE WHEN hash(event_id) % 10 < 4 THEN '{OTHER_LIKE}' ELSE {pick} END"
    page = f"CASE WHEN hash(event_id, 'p') % 10 < 4 THEN '{OTHER_LIKE}' ELSE page END"
    return f"SELECT * REPLACE ({country} AS country, {page} AS page) FROM ({sql})", [HOSTILE]


@pytest.fixture(scope="module")
def lake(tmp_path_factory: pytest.TempPathFactory, stack_settings: Settings) -> Settings:
    base = tmp_path_factory.mktemp("hardening")
    settings = stack_settings.model_copy(
        update={
            "warehouse_path": base / "warehouse",
            "tenants_db": base / "tenants.sqlite",
            "redis_key_prefix": f"test:{uuid.uuid4().hex[:10]}:",
        }
    )
    con = warehouse.connect(settings)
    try:
        offset = 0
        for start, end, n, salt in BLOCKS:
            offset = insert_block(con, "lake.main.raw_events", "tenant_a", start, end, n, salt, 0, offset)
        sql, params = _hostile_sql(TODAY - timedelta(days=3), LAKE_UNTIL, 6_000)
        con.execute(f"INSERT INTO lake.main.raw_events {sql}", params)
        insert_block(
            con, "lake.main.raw_events", "tenant_d", TODAY - timedelta(days=2), LAKE_UNTIL, DENSE_EVENTS, "d", 4
        )
    finally:
        con.close()
    run_dbt(settings, "build", "--exclude-resource-type", "unit_test")
    store = TenantStore(settings.tenants_db)
    for tenant, key in KEYS.items():
        create_tenant_with_keys(store, tenant, f"wk_{key}", key)
    return settings


@pytest.fixture(scope="module")
def realtime(lake: Settings) -> Iterator[None]:
    """tenant_a's events of the last day in Redis as the realtime consumer keeps them (the realtime path runs)."""
    con = warehouse.connect(lake, create=False)
    try:
        cursor = con.execute(
            """SELECT "timestamp" AS ts, tenant_id, event_type, is_bot, revenue,
                coalesce(user_id, anonymous_id) AS user_key, coalesce(country, 'unknown') AS country,
                coalesce(device, 'unknown') AS device
            FROM lake.main.raw_events WHERE tenant_id = 'tenant_a' AND "timestamp" >= ?""",
            [TODAY - timedelta(days=1)],
        )
        columns = [c[0] for c in cursor.description]
        events = [dict(zip(columns, row, strict=True)) for row in cursor.fetchall()]
    finally:
        con.close()
    conn = redis_client(lake)
    keys = RealtimeKeys.from_settings(lake)
    written = write_realtime(conn, keys, get_catalogue(), "tenant_a", events, time.time(), lake.realtime_retention_s)
    yield
    for i in range(0, len(written), 1000):
        conn.delete(*written[i : i + 1000])
    conn.close()


def _drop_prefix(settings: Settings) -> None:
    conn = redis_client(settings)
    try:
        keys = list(conn.scan_iter(match=f"{settings.redis_key_prefix}*", count=1000))
        for i in range(0, len(keys), 1000):
            conn.delete(*keys[i : i + 1000])
    finally:
        conn.close()


@pytest.fixture(scope="module")
def api(lake: Settings, realtime: None) -> Iterator[str]:
    """The API app in this process (uvicorn in a thread), over the lake, Redis, and the module's key prefix."""
    try:
        with serve(create_app(lake)) as url:
            wait_ready(url)
            yield url
    finally:
        _drop_prefix(lake)


def ask(url: str, tenant: str, body: dict[str, Any], timeout: float = 60) -> httpx.Response:
    """POST the body as ASCII JSON (a lone surrogate goes as the escape "\\ud800", as any JSON client may send it)."""
    headers = {"Authorization": f"Bearer {KEYS[tenant]}", "Content-Type": "application/json"}
    return httpx.post(f"{url}/api/v1/query", content=json.dumps(body), headers=headers, timeout=timeout)


def iso(t: datetime) -> str:
    return t.isoformat()


# -- finding 1: any process renders any cached answer ----------------------------------------------------------


def shapes() -> list[tuple[str, dict[str, Any]]]:
    """Query shapes the cache tests ask: hostile values, top-N, a DST zone, the raw path, a range past the watermark."""
    days = {"start": iso(TODAY - timedelta(days=3)), "end": iso(TODAY), "granularity": "day"}
    return [
        ("tenant_h", {"metrics": ["events", "active_users"], "group_by": ["country"], **days}),
        (
            "tenant_h",
            {
                "metrics": ["events", "revenue"],
                "group_by": ["country"],
                "top_n": 2,
                "timezone": "America/New_York",
                **days,
            },
        ),
        ("tenant_h", {"metrics": ["events"], "group_by": ["page"], "top_n": 1, **days}),  # raw events
        (
            "tenant_a",
            {
                "metrics": ["traffic_events", "revenue"],
                "start": iso(SPAN_FROM),
                "end": iso(NOW + timedelta(hours=1)),
                "granularity": "hour",
            },
        ),
        ("tenant_a", {"metrics": ["events"], "start": "2026-03-06", "end": "2026-03-10", "timezone": "Asia/Kolkata"}),
    ]


def split(body: bytes) -> tuple[bytes, dict[str, Any]]:
    """The answer's bytes before provenance.cache (its last two fields), and those two fields.

    `,"cache":` cannot occur inside a JSON string (its quotes would be escaped), so its last occurrence is the field.
    """
    at = body.rindex(b',"cache":')
    tail = orjson.loads(body)["provenance"]
    return body[:at], {"cache": tail["cache"], "elapsed_ms": tail["elapsed_ms"]}


def same_answer(miss: httpx.Response, hit: httpx.Response) -> None:
    assert miss.status_code == 200, miss.text
    assert hit.status_code == 200, hit.text
    (head_miss, tail_miss), (head_hit, tail_hit) = split(miss.content), split(hit.content)
    assert head_hit == head_miss  # byte for byte, everything but cache and elapsed_ms
    assert tail_miss["cache"]["hit"] is False and tail_hit["cache"]["hit"] is True
    assert tail_hit["cache"]["ttl_s"] == tail_miss["cache"]["ttl_s"]


def test_hostile_values_come_back_from_the_cache_unchanged(api: str) -> None:
    tenant, body = shapes()[0]
    miss, hit = ask(api, tenant, body), ask(api, tenant, body)
    same_answer(miss, hit)
    seen = {row["dimensions"]["country"] for row in hit.json()["rows"]}
    assert seen == {*HOSTILE, OTHER_LIKE}


@dataclass
class Server:
    process: subprocess.Popen[bytes]
    url: str
    log: Path

    def stop(self) -> None:
        if self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(10)


def start_server(settings: Settings, log_dir: Path, name: str, workers: int = 1, **env: str) -> Server:
    """`analytics api` as its own process (workers > 1: uvicorn's supervisor and its worker processes)."""
    port = free_port()
    variables = {
        **os.environ,
        "ANALYTICS_REDIS_URL": settings.redis_url,
        "ANALYTICS_REDIS_KEY_PREFIX": settings.redis_key_prefix,
        "ANALYTICS_WAREHOUSE_PATH": str(settings.warehouse_path),
        "ANALYTICS_TENANTS_DB": str(settings.tenants_db),
        "ANALYTICS_CACHE_DIR": str(settings.cache_dir),
        "ANALYTICS_API_WORKERS": str(workers),
        **env,
    }
    log = log_dir / f"{name}.log"
    analytics = str(Path(sys.executable).with_name("analytics"))
    with log.open("wb") as out:
        process = subprocess.Popen(
            [analytics, "api", "--port", str(port), "--log-level", "warning"],
            cwd=ROOT,
            env=variables,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    server = Server(process, f"http://127.0.0.1:{port}", log)
    try:
        wait_ready(server.url, timeout=120)
    except AssertionError:
        server.stop()
        raise AssertionError(f"{name} did not start: {log.read_text()[-3000:]}") from None
    return server


@pytest.mark.slow
def test_processes_serve_each_others_cached_answers_across_workers_and_a_restart(
    lake: Settings, realtime: None, tmp_path: Path
) -> None:
    """One process with two workers and one with one; then the second restarted: every hit is 200, same bytes."""
    settings = lake  # the module's Redis prefix: its realtime keys (an answer without them is not cached)
    asked = [(tenant, {**body, "limit": 9_999}) for tenant, body in shapes()]  # questions no other test asked
    two = start_server(settings, tmp_path, "two-workers", workers=2)
    one = start_server(settings, tmp_path, "one-worker")
    try:
        misses: dict[int, httpx.Response] = {}
        for i, (tenant, body) in enumerate(asked):
            misses[i] = ask(two.url, tenant, body)
            same_answer(misses[i], ask(one.url, tenant, body))  # stored by the other process
            for _ in range(6):  # new connections: both workers of `two` answer some of these
                same_answer(misses[i], ask(two.url, tenant, body))
        one.stop()
        again = start_server(settings, tmp_path, "restarted")
        try:
            for i, (tenant, body) in enumerate(asked):
                same_answer(misses[i], ask(again.url, tenant, body))  # stored before this process existed
        finally:
            again.stop()
        assert "subsection not found" not in two.log.read_text()
    finally:
        two.stop()
        one.stop()


# -- finding 5: a real value named like the top-N rest stays distinct ------------------------------------------


@pytest.mark.parametrize("dimension", ["country", "page"])  # rollups, raw events
def test_a_real_value_named_other_is_not_merged_into_the_top_n_rest(api: str, dimension: str) -> None:
    body = {
        "metrics": ["events"],
        "start": iso(TODAY - timedelta(days=3)),
        "end": iso(TODAY),
        "granularity": "day",
        "group_by": [dimension],
    }
    every = ask(api, "tenant_h", body).json()["rows"]
    top = ask(api, "tenant_h", {**body, "top_n": 1}).json()["rows"]
    by_value: dict[tuple[str, str | None], float] = {}
    for row in top:
        key = (row["bucket"], row["dimensions"][dimension])
        assert key not in by_value, key  # one row per bucket and group
        by_value[key] = row["values"]["events"]
    buckets = {row["bucket"] for row in every}
    for bucket in buckets:
        mine = [r for r in every if r["bucket"] == bucket]
        real = sum(r["values"]["events"] for r in mine if r["dimensions"][dimension] == OTHER_LIKE)
        rest = sum(r["values"]["events"] for r in mine if r["dimensions"][dimension] != OTHER_LIKE)
        assert by_value[(bucket, OTHER_LIKE)] == real  # the real value, alone: the top group
        assert by_value[(bucket, None)] == rest  # the rest, marked by null
    assert [r["dimensions"][dimension] for r in top if r["bucket"] == min(buckets)] == [OTHER_LIKE, None]


# -- findings 2 and 3: costs judged from the parameters; impossible inputs are 400s ----------------------------


def _three_filters(per_dimension: int) -> list[dict[str, Any]]:
    values = {
        "event_type": ["page_view", "purchase", "add_to_cart"],
        "country": ["US", "DE", "FR"],
        "device": ["mobile", "desktop", "tablet"],
    }
    return [
        {"dimension": d, "op": "in", "values": known + [f"{d}-{i}" for i in range(per_dimension - len(known))]}
        for d, known in values.items()
    ]


def test_filter_values_on_three_dimensions_cost_their_count_not_their_product(api: str) -> None:
    """Finding: 200 `in` values on each of three dimensions took 1.6 s and 540 MB (their 8M combinations)."""
    body = {
        "metrics": ["events", "revenue"],  # additive: rollups by all three dimensions, then Redis
        "start": iso(SPAN_FROM),
        "end": iso(NOW + timedelta(hours=1)),
        "granularity": "hour",
        "group_by": ["event_type", "country", "device"],
    }
    began = time.perf_counter()
    answer = ask(api, "tenant_a", {**body, "filters": _three_filters(333)})
    elapsed = time.perf_counter() - began
    assert answer.status_code == 200, answer.text
    assert answer.json()["provenance"]["realtime"] is True  # the realtime path ran, with its filters
    assert elapsed < BUDGET_SECONDS
    plain = ask(api, "tenant_a", {**body, "filters": _three_filters(3)}).json()
    assert answer.json()["rows"] == plain["rows"]  # the made-up values match nothing
    too_many = ask(api, "tenant_a", {**body, "filters": _three_filters(400)})
    assert too_many.status_code == 400
    assert (too_many.json()["field"], too_many.json()["rule"]) == ("filters", "max_filter_values")


BAD = [
    ({"timezone": "America"}, "timezone", "iana_zone"),
    ({"timezone": "Europe/" + "x" * 300}, "timezone", "iana_zone"),
    ({"timezone": "../../../../etc/passwd"}, "timezone", "iana_zone"),
    ({"limit": 18446744073709551616}, "limit", "max_rows"),
    ({"limit": -(2**70)}, "limit", "greater_than_equal"),
    ({"top_n": 2**80, "group_by": ["country"]}, "top_n", "less_than_equal"),
    (
        {"start": "9999-12-30", "end": "9999-12-31T23:59:59", "timezone": "Pacific/Kiritimati"},
        "start",
        "supported_range",
    ),
    ({"start": "0001-01-01T00:00:00", "timezone": "Asia/Tokyo"}, "start", "supported_range"),
    ({"end": "9999-12-31T23:59:59-14:00"}, "end", "supported_range"),
    ({"start": 1_700_000_000}, "start", "iso_8601"),
    ({"filters": [{"dimension": "country", "op": "eq", "values": ["\ud800"]}]}, "filters[0].values[0]", "utf8"),
    ({"metrics": ["\ud800"]}, "metrics[0]", "catalogue_metric"),
    ({"\ud800": 1}, "body", "string_unicode"),  # a key no UTF-8 text can hold
    ({"filters": [{"dimension": "country", "op": "in", "values": []}]}, "filters[0].values", "too_short"),
    ({"group_by": ["page"], "start": "2026-03-01", "end": "2026-06-03"}, "end", "max_raw_range_days"),
    ({"granularity": "minute", "start": "2026-03-01", "end": "2026-03-08"}, "granularity", "max_buckets"),
    ({"start": "2020-01-01", "end": "2026-01-01"}, "end", "max_range_days"),
]


@pytest.mark.parametrize(("change", "field", "rule"), BAD, ids=[f"{f}-{r}" for _, f, r in BAD])
def test_impossible_or_costly_requests_answer_400_naming_field_and_rule(
    api: str, change: dict[str, Any], field: str, rule: str
) -> None:
    body = {"metrics": ["events"], "start": "2026-03-05", "end": "2026-03-07", **change}
    answer = ask(api, "tenant_a", body)
    assert answer.status_code == 400, answer.text
    error = answer.json()
    assert (error["field"], error["rule"]) == (field, rule), error
    assert answer.headers["content-type"] == "application/json"


@pytest.mark.parametrize("content", [b'{"metrics": [', b"\x06\xff", b'{"metrics": ["\xc3\x28"]}'])
def test_a_body_that_is_no_json_names_the_body(api: str, content: bytes) -> None:
    answer = httpx.post(
        f"{api}/api/v1/query",
        content=content,
        headers={"Authorization": f"Bearer {KEYS['tenant_a']}", "Content-Type": "application/json"},
        timeout=10,
    )
    assert answer.status_code == 400, answer.text
    assert (answer.json()["field"], answer.json()["rule"]) == ("body", "json_invalid")


def test_old_minutes_in_a_half_hour_zone_beyond_the_raw_range_are_refused(api: str) -> None:
    """Kolkata hours before the minute retention come from raw events: the raw range limit holds there too.

    (Kolkata days of that time are hour rollups plus their half hours at each end from raw events.)
    """
    end = TODAY - timedelta(days=10)
    body = {"metrics": ["events"], "end": iso(end), "granularity": "hour", "timezone": "Asia/Kolkata"}
    fits = ask(api, "tenant_a", {**body, "start": iso(end - timedelta(days=93))})
    assert fits.status_code == 200, fits.text
    assert {p["source"] for p in fits.json()["provenance"]["parts"]} == {"raw"}
    too_long = ask(api, "tenant_a", {**body, "start": iso(end - timedelta(days=94))})
    assert too_long.status_code == 400
    assert (too_long.json()["field"], too_long.json()["rule"]) == ("end", "max_raw_range_days")
    days = ask(api, "tenant_a", {**body, "granularity": "day", "start": iso(end - timedelta(days=400))})
    assert days.status_code == 200, days.text
    assert {p["source"] for p in days.json()["provenance"]["parts"]} == {"rollup_hour", "raw"}


def test_more_cells_than_the_cap_are_refused_after_reading_at_most_the_cap(api: str) -> None:
    body = {
        "metrics": ["events"],
        "start": iso(TODAY - timedelta(days=2)),
        "end": iso(NOW),
        "granularity": "minute",
        "group_by": ["event_type", "country", "device"],
    }
    answer = ask(api, "tenant_d", body)
    assert answer.status_code == 400, answer.text[:500]
    assert (answer.json()["field"], answer.json()["rule"]) == ("group_by", "max_cells")


# -- finding 4: the document is what the API answers -----------------------------------------------------------


def test_the_served_document_matches_the_answers(api: str) -> None:
    document = httpx.get(f"{api}/openapi.json", timeout=10).json()
    query = document["paths"]["/api/v1/query"]["post"]["responses"]
    assert "422" not in query and {"400", "401", "413", "429", "503"} <= set(query)
    bad = ask(api, "tenant_a", {"metrics": ["events"], "start": "2026-03-05", "end": "2026-03-05"})
    assert bad.status_code == 400 and set(bad.json()) == {"error", "field", "rule"}
    metrics = httpx.get(f"{api}/metrics", timeout=10)
    assert metrics.headers["content-type"].startswith("text/plain")
    assert set(document["paths"]["/metrics"]["get"]["responses"]["200"]["content"]) == {"text/plain"}
    catalogue = httpx.get(f"{api}/api/v1/metrics", headers={"Authorization": f"Bearer {KEYS['tenant_a']}"}, timeout=10)
    assert catalogue.json()["limits"]["max_filter_values"] == 1000
    unauthorised = httpx.post(f"{api}/api/v1/query", json={}, timeout=10)
    assert unauthorised.status_code == 401 and "401" in query


# -- finding 6: queries per read key ---------------------------------------------------------------------------


def test_a_read_key_asking_too_fast_gets_429_across_processes_and_others_do_not(lake: Settings) -> None:
    settings = lake.model_copy(
        update={
            "redis_key_prefix": f"{lake.redis_key_prefix}rl{uuid.uuid4().hex[:6]}:",
            "api_rate_limit_queries": 6,  # a bucket of 6, refilled one query every 2 s
            "api_rate_limit_window_s": 12.0,
        }
    )
    body = {"metrics": ["events"], "start": "2026-03-05", "end": "2026-03-07"}
    try:
        with serve(create_app(settings)) as first, serve(create_app(settings)) as second:
            statuses = [ask(url, "tenant_a", body).status_code for url in (first, second) * 3]
            assert statuses == [200] * 6  # six in all, three on each app: one bucket in Redis
            refused = ask(second, "tenant_a", body)
            assert refused.status_code == 429, refused.text
            assert 1 <= int(refused.headers["retry-after"]) <= 2
            assert "read key" in refused.json()["error"]
            assert ask(first, "tenant_h", body).status_code == 200  # another key has its own bucket
            time.sleep(int(refused.headers["retry-after"]))
            assert ask(first, "tenant_a", body).status_code == 200  # refilled
    finally:
        _drop_prefix(settings)


def test_without_redis_the_rate_limit_lets_queries_through(lake: Settings) -> None:
    settings = lake.model_copy(update={"redis_url": f"redis://127.0.0.1:{free_port()}/0", "api_rate_limit_queries": 1})
    body = {"metrics": ["events"], "start": "2026-03-05", "end": "2026-03-07"}
    with serve(create_app(settings)) as url:
        assert [ask(url, "tenant_a", body).status_code for _ in range(3)] == [200, 200, 200]


# -- the budget: the worst request each limit allows -----------------------------------------------------------


def _status(pid: int) -> dict[str, int]:
    """VmRSS and VmHWM (peak RSS) of a process, in bytes."""
    out = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, value = line.partition(":")
        if name in ("VmRSS", "VmHWM"):
            out[name] = int(value.split()[0]) * 1024
    return out


def _reset_peak(pid: int) -> int:
    """Set the process's peak RSS back to its RSS now (Linux: clear_refs 5); that RSS, in bytes."""
    Path(f"/proc/{pid}/clear_refs").write_text("5")
    return _status(pid)["VmRSS"]


def worst_requests() -> list[tuple[str, str, dict[str, Any], int]]:
    """(limit, tenant, body, expected status): each limit at its value, on the data that makes it heaviest."""
    minutes = NOW + timedelta(minutes=1) - timedelta(minutes=10_000)
    return [
        (
            "max_filter_values (1,000 over three dimensions, realtime path)",
            "tenant_a",
            {
                "metrics": ["events", "revenue"],
                "start": iso(TODAY - timedelta(days=1)),
                "end": iso(NOW + timedelta(hours=1)),
                "granularity": "hour",
                "group_by": ["event_type", "country", "device"],
                "filters": [*_three_filters(333), {"dimension": "device", "op": "not_in", "values": ["x"]}],
            },
            200,
        ),
        (
            "max_buckets and max_rows (10,000 minutes, 10,000 rows)",
            "tenant_d",
            {
                "metrics": ["events", "revenue", "active_users"],
                "start": iso(minutes),
                "end": iso(NOW + timedelta(minutes=1)),
                "granularity": "minute",
                "group_by": ["device"],
                "limit": 10_000,
            },
            200,
        ),
        (
            "max_cells (refused after reading at most the cap)",
            "tenant_d",
            {
                "metrics": ["events", "revenue"],
                "start": iso(TODAY - timedelta(days=2)),
                "end": iso(NOW),
                "granularity": "minute",
                "group_by": ["event_type", "country", "device"],
            },
            400,
        ),
        (
            "max_range_days (1,098 New York days, hour sketches merged, by country, top 1,000)",
            "tenant_a",
            {
                "metrics": ["events", "active_users", "conversion_rate"],
                "start": iso(NOW - timedelta(days=1098)),
                "end": iso(NOW),
                "granularity": "day",
                "timezone": "America/New_York",
                "group_by": ["country"],
                "top_n": 1000,
            },
            200,
        ),
        (
            "max_raw_range_days and max group_by (93 days of raw events by all six dimensions)",
            "tenant_d",
            {
                "metrics": ["events", "revenue", "active_users", "conversion_rate"],
                "start": iso(NOW - timedelta(days=93)),
                "end": iso(NOW),
                "granularity": "hour",
                "group_by": ["event_type", "country", "device", "page", "experiment_key", "experiment_variant"],
                "top_n": 1000,
            },
            200,
        ),
    ]


@pytest.mark.slow
def test_the_worst_request_each_limit_allows_stays_within_the_budget(lake: Settings, tmp_path: Path) -> None:
    settings = lake.model_copy(update={"redis_key_prefix": f"{lake.redis_key_prefix}b{uuid.uuid4().hex[:6]}:"})
    server = start_server(settings, tmp_path, "budget")
    try:
        # Warm up: every path once with a small question (imports, the replica, DuckDB's first buffers).
        for tenant in ("tenant_a", "tenant_d"):
            for group_by in (["country"], ["page"]):
                body = {
                    "metrics": ["events", "active_users"],
                    "start": iso(TODAY - timedelta(days=1)),
                    "end": iso(NOW),
                    "group_by": group_by,
                }
                assert ask(server.url, tenant, body).status_code == 200
        report = []
        for name, tenant, body, status in worst_requests():
            rss = _reset_peak(server.process.pid)
            began = time.perf_counter()
            answer = ask(server.url, tenant, body)
            elapsed = time.perf_counter() - began
            growth = (_status(server.process.pid)["VmHWM"] - rss) / MB
            report.append(f"{name}: {answer.status_code} in {elapsed:.2f} s, peak RSS +{growth:.1f} MB")
            assert answer.status_code == status, (name, answer.text[:500])
            if status == 200:
                rows = answer.json()["rows"]
                assert rows and len(rows) <= 10_000
            assert elapsed < BUDGET_SECONDS and growth < BUDGET_RSS_MB, "\n".join(report)
        print("\n".join(report))
    finally:
        server.stop()
        _drop_prefix(settings)
