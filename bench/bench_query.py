"""Query API latency over HTTP against DuckDB computing the same answers from the raw events.

A fresh DuckLake gets a year of generated events for one tenant, written straight into
`raw_events` with SQL (10M events at scale small, 100M at scale large, or
ANALYTICS_BENCH_QUERY_EVENTS) in slices of 10M, a dbt build making the rollups after each slice
(ANALYTICS_BENCH_QUERY_DIR keeps the lake for later runs of the same size). The query API then runs
as a real server (`analytics api`) on that lake and the local Redis, and a keep-alive httpx client
asks it dashboard questions:

- uncached: every request distinct (each repetition shifts the range back one day, or one hour,
  keeping its shape) so it misses the answer cache; each answer must come from rollups;
- cached: one request repeated; each answer must be a cache hit;
- raw path: events by `page` (a dimension only raw events have) over 30 days, through the API
  and as the equivalent SQL run directly on the same lake.

Baseline: DuckDB answering the same questions from `raw_events` directly, in this process, timed
the same way; the first repetition's answers are checked against the API's.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import shutil
import socket
import statistics
import subprocess
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import IO, Any, cast

import duckdb
import httpx

from analytics_core import warehouse
from analytics_core.catalogue import get_catalogue
from analytics_core.clients import redis_client
from analytics_core.dbt import run_dbt, venv_tool
from analytics_core.events import to_micros
from analytics_core.settings import Settings
from bench.harness import Record, Scale, record
from tenants import TenantStore, create_tenant_with_keys

EVENTS: dict[Scale, int] = {"small": 10_000_000, "large": 100_000_000}
EVENTS_ENV = "ANALYTICS_BENCH_QUERY_EVENTS"  # overrides the scale's event count (quick runs)
# A directory kept between runs: the first run builds the lake there, later runs with the same event
# count reuse it (the 100M lake takes long to write and build); unset, each run uses a fresh temp dir.
KEEP_DIR_ENV = "ANALYTICS_BENCH_QUERY_DIR"
READY_FILE = "lake-ready.json"  # written once the lake and its rollups are complete
USERS: dict[Scale, int] = {"small": 300_000, "large": 2_000_000}
CHUNK = 5_000_000  # events per INSERT
BUILD_EVERY = 10_000_000  # events written between two dbt builds
UNCACHED_REPS = 12  # per dashboard query: 5 x 12 = 60 distinct requests
CACHED_REPS = 200
RAW_REPS = 3  # per dashboard query, the DuckDB baseline
RAW_PATH_REPS = 20  # the page query, through the API and directly
TENANT = "bench_query"
WRITE_KEY = "wk_bench_query"
READ_KEY = "rk_bench_query"
REPO = Path(__file__).resolve().parent.parent
STAGED_EVENTS = "stg_tracking__events"  # what the API's raw path reads (api/engine/sql/raw_events.py)

# One chunk [$lo, $hi) of $n events over the 365 days from $start_us: traffic doubles over the year
# (event i lands on day 365 * (sqrt(1 + 3 i / n) - 1), the inverse of a density growing 1 + t), so
# rows arrive in time order as from the loader; 30 % of the events spread over the whole day, the
# rest around 15:00 UTC. A user population with heavy users (low numbers), each with a stable
# country (40, skewed), device (3 % bots) and identity (60 % identified). Random draws are hashes of
# the row number, so a run is deterministic.
GENERATE_SQL = """
INSERT INTO {lake}.raw_events
WITH draws AS (
    SELECT
        i,
        floor(365 * (sqrt(1 + 3 * i / $n) - 1))::BIGINT AS day,
        CASE WHEN hash(i * 8 + 7) % 10 < 3 THEN (hash(i * 8 + 1) % 86400)::BIGINT
             ELSE ((hash(i * 8 + 1) % 1000000 + hash(i * 8 + 2) % 1000000 + hash(i * 8 + 3) % 1000000) / 3e6 * 86400
                   + 3 * 3600)::BIGINT % 86400 END AS second_of_day,
        hash(i * 8 + 4) % 1000 AS kind,
        floor($users * pow((hash(i * 8 + 5) % 1000000) / 1e6, 2))::BIGINT AS u,
        hash(i * 8 + 6) % 1000000 AS r
    FROM range($lo, $hi) AS t (i)
),
shaped AS (
    SELECT
        *,
        CASE WHEN kind < 800 THEN 'page_view' WHEN kind < 920 THEN 'add_to_cart' WHEN kind < 970 THEN 'checkout'
             ELSE 'purchase' END AS event_type,
        hash(u * 4 + 1) % 1000 AS ucountry,
        hash(u * 4 + 2) % 100 AS udevice,
        hash(u * 4 + 3) % 10 AS uident,
        $start_us + day * 86400000000 + second_of_day * 1000000 + i % 1000000 AS ts
    FROM draws
)
SELECT
    'q' || i AS event_id,
    $tenant AS tenant_id,
    'track' AS message_type,
    event_type,
    CASE WHEN uident < 6 THEN 'usr_' || u END AS user_id,
    'anon_' || u AS anonymous_id,
    make_timestamp(ts)::TIMESTAMPTZ AS timestamp,
    make_timestamp(ts)::TIMESTAMPTZ AS original_timestamp,
    make_timestamp(ts + 1000000)::TIMESTAMPTZ AS sent_at,
    make_timestamp(ts + 2000000)::TIMESTAMPTZ AS received_at,
    CASE WHEN event_type = 'purchase' THEN '{"revenue":' || round(5 + (r % 20000) / 100.0, 2) || '}'
         ELSE '{}' END AS properties,
    CASE WHEN event_type IN ('purchase', 'checkout') THEN '/checkout'
         WHEN event_type = 'add_to_cart' THEN '/products/' || (r % 500)
         WHEN r % 10 < 2 THEN '/'
         WHEN r % 10 < 3 THEN '/search'
         WHEN r % 10 < 4 THEN '/blog/' || (r // 10 % 100)
         ELSE '/products/' || floor(500 * pow((r // 10 % 1000) / 1000.0, 2))::INTEGER END AS page,
    ['US','GB','DE','FR','CA','IN','BR','JP','AU','NL','ES','IT','SE','PL','MX','KR','SG','ZA','TR','IE',
     'AT','BE','CH','DK','FI','NO','PT','CZ','RO','HU','GR','IL','AE','SA','AR','CL','CO','NZ','PH','ID']
        [1 + floor(40 * pow(ucountry / 1000.0, 2))::INTEGER] AS country,
    CASE WHEN udevice < 3 THEN 'bot' WHEN udevice < 48 THEN 'desktop' WHEN udevice < 90 THEN 'mobile'
         ELSE 'tablet' END AS device,
    CASE WHEN event_type = 'purchase' THEN round(5 + (r % 20000) / 100.0, 2) END AS revenue,
    CASE WHEN event_type = 'purchase' THEN 'USD' END AS currency,
    CASE WHEN r % 5 = 0 THEN 'checkout_button' END AS experiment_key,
    CASE WHEN r % 5 = 0 THEN ['control', 'green'][1 + (u % 2)::INTEGER] END AS experiment_variant,
    NULL AS ip,
    NULL AS user_agent,
    'analytics-python/2.3.4' AS library,
    udevice < 3 AS is_bot,
    (u % 6)::INTEGER AS _kafka_partition,
    i AS _kafka_offset
FROM shaped
"""

# The catalogue's metrics as plain SQL over raw events (bots, purchase filter, user key as staging has it).
_HUMAN = "NOT is_bot"
_PURCHASE = "NOT is_bot AND event_type = 'purchase'"
_USER_KEY = "coalesce(user_id, anonymous_id)"
METRIC_SQL = {
    "events": f"count(*) FILTER (WHERE {_HUMAN})",
    "traffic_events": "count(*)",
    "purchases": f"count(*) FILTER (WHERE {_PURCHASE})",
    "revenue": f"sum(revenue) FILTER (WHERE {_PURCHASE})",
    "active_users": f"count(DISTINCT {_USER_KEY}) FILTER (WHERE {_HUMAN})",
    "purchasers": f"count(DISTINCT {_USER_KEY}) FILTER (WHERE {_PURCHASE})",
}
METRIC_SQL["conversion_rate"] = f"({METRIC_SQL['purchasers']}) / nullif({METRIC_SQL['active_users']}, 0)"
DIMENSION_SQL = {
    "event_type": "event_type",
    "country": "coalesce(country, 'unknown')",
    "device": "coalesce(device, 'unknown')",
    "page": "page",  # NULL without a page: the API's null (both read as "None" by api_answer and raw_answer)
}
BUCKET_SECONDS = {"hour": 3600, "day": 86400}
# Pages a "selected pages" tile pins: the raw-path query groups by page, filtered to these.
PINNED_PAGES = ("/", "/search", "/checkout", *(f"/products/{n}" for n in range(17)))


@dataclass(frozen=True)
class Shape:
    """One dashboard question; repetition k asks it over a range shifted back k steps."""

    name: str
    metrics: tuple[str, ...]
    span: timedelta
    granularity: str
    group_by: tuple[str, ...] = ()
    timezone: str = "UTC"
    step: timedelta = timedelta(days=1)
    filters: tuple[tuple[str, tuple[str, ...]], ...] = ()  # (dimension, values): `in` filters

    def __post_init__(self) -> None:
        # The raw SQL buckets by epoch arithmetic: right for UTC days and for hours in any zone whose
        # offset is whole hours (the bench's zones), and ~10 x cheaper than date_trunc on TIMESTAMPTZ.
        if self.granularity == "day" and self.timezone != "UTC":
            raise ValueError(f"{self.name}: day buckets in the raw SQL are UTC days")

    def range(self, end: datetime, k: int) -> tuple[datetime, datetime]:
        stop = end - k * self.step
        return stop - self.span, stop

    def body(self, end: datetime, k: int, limit: int | None = None) -> dict[str, Any]:
        start, stop = self.range(end, k)
        body: dict[str, Any] = {
            "metrics": list(self.metrics),
            "start": start.isoformat(),
            "end": stop.isoformat(),
            "granularity": self.granularity,
            "group_by": list(self.group_by),
            "timezone": self.timezone,
        }
        if self.filters:
            body["filters"] = [{"dimension": d, "op": "in", "values": list(v)} for d, v in self.filters]
        if limit is not None:
            body["limit"] = limit
        return body

    def sql(self, table: str, time_column: str = "timestamp") -> str:
        """The same answer from events: (bucket epoch seconds, group-by values..., metrics...)."""
        size = BUCKET_SECONDS[self.granularity]
        cols = [f'epoch_us("{time_column}") // {size * 1_000_000} * {size} AS bucket']
        cols += [f"{DIMENSION_SQL[d]} AS {d}" for d in self.group_by]
        cols += [f"{METRIC_SQL[m]} AS {m}" for m in self.metrics]
        where = ["tenant_id = $tenant", f'"{time_column}" >= $start', f'"{time_column}" < $end']
        for dim, values in self.filters:
            listed = ", ".join("'" + v.replace("'", "''") + "'" for v in values)
            where.append(f"{DIMENSION_SQL[dim]} IN ({listed})")
        return f"SELECT {', '.join(cols)} FROM {table} WHERE {' AND '.join(where)} GROUP BY ALL"


DASHBOARD: tuple[Shape, ...] = (
    Shape("events_per_day_year", ("events",), timedelta(days=365), "day"),
    Shape("revenue_by_country_90d", ("revenue", "purchases"), timedelta(days=90), "day", ("country",)),
    Shape("active_users_30d", ("active_users",), timedelta(days=30), "day"),
    Shape(
        "device_hourly_ny_7d",
        ("traffic_events",),
        timedelta(days=7),
        "hour",
        ("device",),
        "America/New_York",
        timedelta(hours=1),
    ),
    Shape("conversion_28d", ("conversion_rate",), timedelta(days=28), "day"),
)
RAW_PATH = Shape(
    "events_by_page_30d", ("events",), timedelta(days=30), "day", ("page",), filters=(("page", PINNED_PAGES),)
)

Answer = dict[tuple[int, tuple[str, ...]], dict[str, float | None]]


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100) of a non-empty sample."""
    if not values:
        raise ValueError("percentile of no values")
    ranked = sorted(values)
    return ranked[max(1, math.ceil(q / 100 * len(ranked))) - 1]


def api_answer(answer: dict[str, Any], group_by: Sequence[str]) -> Answer:
    """An /api/v1/query answer keyed like raw_answer: (bucket epoch seconds, group-by values)."""
    out: Answer = {}
    for row in answer["rows"]:
        bucket = int(datetime.fromisoformat(row["bucket"]).timestamp())
        out[(bucket, tuple(str(row["dimensions"].get(d)) for d in group_by))] = row["values"]
    return out


def raw_answer(rows: Sequence[Sequence[Any]], group_by: Sequence[str], metrics: Sequence[str]) -> Answer:
    """Rows of Shape.sql keyed by (bucket, group-by values)."""
    width = len(group_by)
    return {
        (int(r[0]), tuple(str(v) for v in r[1 : 1 + width])): {
            m: (float(v) if v is not None else None) for m, v in zip(metrics, r[1 + width :], strict=True)
        }
        for r in rows
    }


def mismatches(api: Answer, raw: Answer, kinds: Mapping[str, str], limit: int = 5) -> list[str]:
    """Where two answers differ: counts exactly, sums to a micro-unit, unique users and ratios within 5 %.

    A row one side lacks counts as zeros (rollups store no zero rows).
    """
    out: list[str] = []
    for key in sorted(api.keys() | raw.keys()):
        a, r = api.get(key, {}), raw.get(key, {})
        for metric, kind in kinds.items():
            x, y = a.get(metric) or 0.0, r.get(metric) or 0.0
            if kind == "count":
                ok = x == y
            elif kind == "sum":
                ok = abs(x - y) <= 1e-6 + 1e-9 * abs(y)
            else:
                ok = abs(x - y) <= 0.05 * max(abs(x), abs(y)) + 1e-9
            if not ok:
                out.append(f"{metric} at {datetime.fromtimestamp(key[0], UTC).isoformat()} {key[1]}: api {x}, sql {y}")
                if len(out) >= limit:
                    return out
    return out


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def service_env(settings: Settings) -> dict[str, str]:
    """ANALYTICS_* variables that give an `analytics` subprocess this bench's settings."""
    env = {
        "ANALYTICS_KAFKA_BOOTSTRAP": settings.kafka_bootstrap,
        "ANALYTICS_REDIS_URL": settings.redis_url,
        "ANALYTICS_TOPIC_PREFIX": settings.topic_prefix,
        "ANALYTICS_REDIS_KEY_PREFIX": settings.redis_key_prefix,
        "ANALYTICS_TENANTS_DB": str(settings.tenants_db),
        "ANALYTICS_WAREHOUSE_PATH": str(settings.warehouse_path),
        "ANALYTICS_WAREHOUSE_CATALOG": settings.warehouse_catalog,
        "ANALYTICS_WAREHOUSE_DATA_PATH": settings.warehouse_data_path,
        "ANALYTICS_WAREHOUSE_TARGET": settings.warehouse_target,
        "ANALYTICS_CACHE_DIR": str(settings.cache_dir),
    }
    if settings.schema_registry_url:
        env["ANALYTICS_SCHEMA_REGISTRY_URL"] = settings.schema_registry_url
    return env


@dataclass
class Service:
    """An `analytics` subcommand run as a subprocess; its output goes to a log file."""

    name: str
    args: list[str]
    env: dict[str, str]
    log_dir: Path
    proc: subprocess.Popen[bytes] | None = field(default=None, init=False)
    _log: IO[bytes] | None = field(default=None, init=False)

    @property
    def log_path(self) -> Path:
        return self.log_dir / f"{self.name}.log"

    def start(self) -> Service:
        self._log = self.log_path.open("wb")
        self.proc = subprocess.Popen(
            [venv_tool("analytics"), *self.args],
            env={**os.environ, **self.env},
            stdout=self._log,
            stderr=subprocess.STDOUT,
            cwd=REPO,
        )
        return self

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def log_tail(self, chars: int = 3000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return ""

    def failed(self, why: str) -> RuntimeError:
        return RuntimeError(f"{self.name}: {why}; last output:\n{self.log_tail()}")

    def wait_http(self, url: str, timeout: float = 60.0) -> None:
        """Until GET url answers 200; raise with the log if the process ends or time runs out."""
        deadline = time.monotonic() + timeout
        last = "no answer"
        while time.monotonic() < deadline:
            if not self.alive():
                raise self.failed(f"exited with {self.proc.returncode if self.proc else None}")
            try:
                answer = httpx.get(url, timeout=5)
                if answer.status_code == 200:
                    return
                last = f"{answer.status_code} {answer.text[:300]}"
            except httpx.TransportError as exc:
                last = str(exc)
            time.sleep(0.2)
        raise self.failed(f"{url} did not answer 200 within {timeout:.0f} s ({last})")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        if self._log is not None:
            self._log.close()
            self._log = None

    def __enter__(self) -> Service:
        return self if self.proc is not None else self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def start_api(settings: Settings, log_dir: Path, replica: bool = True) -> tuple[Service, str]:
    """`analytics api` on a free port with these settings; (service, base URL) once /healthz answers."""
    port = free_port()
    api = Service("api", ["api", "--port", str(port), "--log-level", "warning"], service_env(settings), log_dir)
    api.start()
    url = f"http://127.0.0.1:{port}"
    try:
        api.wait_http(f"{url}/healthz")
        if replica:  # not when the rollups are built after the API started (freshness)
            wait_for_replica(url)
    except BaseException:
        api.stop()
        raise
    return api, url


def wait_for_replica(url: str, timeout: float = 900.0) -> None:
    """Until the API serves rollups from its in-memory replica (/readyz says which snapshot it holds).

    The replica of the 100M-event lake loaded in ~30 s on the 2-core VM; the limit leaves room for slower machines.
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        answer = httpx.get(f"{url}/readyz", timeout=5)
        if answer.status_code == 200 and answer.json().get("replica", "loading") != "loading":
            return
        time.sleep(0.5)
    raise RuntimeError(f"the API's rollup replica did not load within {timeout:.0f} s")


def check_redis(settings: Settings) -> None:
    try:
        redis_client(settings, socket_connect_timeout=2.0).ping()
    except Exception as exc:  # any failure: say where Redis was expected
        raise ConnectionError(f"no Redis at {settings.redis_url} (`analytics stack up`?): {exc}") from exc


def delete_redis_keys(settings: Settings, *patterns: str) -> int:
    """Delete the keys matching the patterns (the bench's own prefix); cleanup never raises."""
    deleted = 0
    try:
        client = redis_client(settings)
        for pattern in patterns:
            batch: list[bytes] = []
            for key in client.scan_iter(match=pattern, count=1000):
                batch.append(key)
                if len(batch) >= 1000:
                    deleted += cast(int, client.delete(*batch))
                    batch = []
            if batch:
                deleted += cast(int, client.delete(*batch))
    except Exception as exc:  # cleanup must not hide the result; say what was left behind
        print(f"bench cleanup: Redis keys {patterns} not deleted: {exc}")
    return deleted


def build_dbt(settings: Settings, scratch: Path) -> None:
    args = ["build", "--exclude-resource-type", "unit_test", "--exclude-resource-type", "test"]
    done = run_dbt(settings, args, scratch / "target", scratch / "logs", capture=True)
    if done.returncode != 0:
        raise RuntimeError(f"dbt {' '.join(args)} failed:\n{done.stdout[-3000:]}")


def generate(settings: Settings, n: int, users: int, end: datetime, lo: int = 0, hi: int | None = None) -> None:
    """Events [lo, hi) of the n over the 365 days before `end` into raw_events, in chunks of CHUNK."""
    con = warehouse.connect(settings)
    try:
        sql = GENERATE_SQL.replace("{lake}", settings.warehouse_alias)
        start_us = to_micros(end - timedelta(days=365))
        stop = n if hi is None else min(n, hi)
        for first in range(lo, stop, CHUNK):
            params = {
                "n": n,
                "lo": first,
                "hi": min(stop, first + CHUNK),
                "users": users,
                "start_us": start_us,
                "tenant": TENANT,
            }
            con.execute(sql, params)
    finally:
        con.close()


def post(client: httpx.Client, body: dict[str, Any], path: str = "/api/v1/query") -> tuple[float, dict[str, Any]]:
    """(seconds until the whole answer arrived, answer)."""
    t0 = time.perf_counter()
    answer = client.post(path, json=body)
    elapsed = time.perf_counter() - t0
    if answer.status_code != 200:
        raise RuntimeError(f"{path} answered {answer.status_code}: {answer.text[:500]} (body {body})")
    return elapsed, answer.json()


def _sources(answer: dict[str, Any]) -> set[str]:
    return {part["source"] for part in answer["provenance"]["parts"]}


def _check_source(shape: Shape, answer: dict[str, Any], rollup: bool) -> None:
    sources = _sources(answer)
    ok = (bool(sources) and all(s.startswith("rollup_") for s in sources)) if rollup else sources == {"raw"}
    if not ok:
        want = "rollups only" if rollup else "raw events only"
        raise RuntimeError(f"{shape.name}: answered from {sorted(sources)}, expected {want}")
    if answer["provenance"]["cache"]["hit"]:
        raise RuntimeError(f"{shape.name}: a distinct request was answered from the cache")


def _time_sql(
    con: duckdb.DuckDBPyConnection, shape: Shape, table: str, end: datetime, k: int, time_column: str = "timestamp"
) -> tuple[float, list]:
    start, stop = shape.range(end, k)
    sql = shape.sql(table, time_column)
    t0 = time.perf_counter()
    rows = con.execute(sql, {"tenant": TENANT, "start": start, "end": stop}).fetchall()
    return time.perf_counter() - t0, rows


def _compare(shape: Shape, api: dict[str, Any], rows: list) -> None:
    kinds = {m: get_catalogue().metrics[m].kind for m in shape.metrics}
    diff = mismatches(api_answer(api, shape.group_by), raw_answer(rows, shape.group_by, shape.metrics), kinds)
    if diff:
        raise RuntimeError(f"{shape.name}: the API's answer differs from SQL over raw events: " + "; ".join(diff))


def _ms(seconds: float) -> float:
    return seconds * 1000


def run(settings: Settings, scale: Scale) -> list[Record]:
    """query_rollup_cached_p95, query_rollup_uncached_p95, query_rollup_speedup, query_raw_overhead."""
    n = int(os.environ.get(EVENTS_ENV) or EVENTS[scale])
    users = USERS[scale]
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    check_redis(settings)
    with contextlib.ExitStack() as stack:
        tmp = lake_directory(stack)
        bench = lake_settings(settings, tmp, f"bench.query.{stamp}.")
        data_end = prepare_lake(bench, tmp, n, users)
        # The data ends at a midnight (UTC); every query ends a day or more before it, well behind
        # the warehouse watermark, so answers come from rollups alone and are cached as closed ranges.
        query_end = data_end - timedelta(days=1)
        try:
            api, url = start_api(bench, tmp)
            with (
                api,
                httpx.Client(base_url=url, headers={"Authorization": f"Bearer {READ_KEY}"}, timeout=300) as client,
            ):
                api.wait_http(f"{url}/readyz")
                results = _measure(bench, client, query_end)
        finally:
            delete_redis_keys(bench, f"{bench.redis_key_prefix}*")
    return _records(n, results)


def lake_settings(settings: Settings, directory: Path, redis_prefix: str) -> Settings:
    """Settings of the bench lake in `directory` (a DuckDB catalog there), its tenants, its own Redis keys."""
    return settings.model_copy(
        update={
            "warehouse_path": directory / "warehouse",
            "warehouse_catalog": "",
            "warehouse_data_path": "",
            "warehouse_target": "duckdb",
            "tenants_db": directory / "tenants.sqlite",
            "redis_key_prefix": redis_prefix,
        }
    )


def lake_directory(stack: contextlib.ExitStack) -> Path:
    """ANALYTICS_BENCH_QUERY_DIR (kept for later runs), else a temporary directory removed at the end."""
    keep = os.environ.get(KEEP_DIR_ENV)
    if keep:
        directory = Path(keep).resolve()
        directory.mkdir(parents=True, exist_ok=True)
        return directory
    return Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="bench-query-")))


def prepare_lake(settings: Settings, directory: Path, n: int, users: int) -> datetime:
    """The lake of n events in `directory`, built unless a complete one of that size is there; its data end.

    A fresh build clears what an earlier, different or unfinished one left in the directory.
    """
    ready = directory / READY_FILE
    if ready.exists():
        state = json.loads(ready.read_text())
        if state.get("events") == n and state.get("users") == users:
            print(f"query bench: reusing the lake of {n:,} events in {directory}", flush=True)
            return datetime.fromisoformat(state["data_end"])
    for stale in (ready, settings.tenants_db):
        stale.unlink(missing_ok=True)
    shutil.rmtree(settings.warehouse_path, ignore_errors=True)
    shutil.rmtree(directory / "dbt", ignore_errors=True)
    data_end = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    # As in production, dbt builds the rollups incrementally as the events arrive (the rows are in
    # time order, so each slice is a stretch of the year): one build over 100M events at once runs
    # out of memory in fct_metrics_hour on this 24 GB machine.
    writing = building = 0.0
    for lo in range(0, n, BUILD_EVERY):
        t0 = time.perf_counter()
        generate(settings, n, users, data_end, lo, lo + BUILD_EVERY)
        t1 = time.perf_counter()
        build_dbt(settings, directory / "dbt")
        writing, building = writing + t1 - t0, building + time.perf_counter() - t1
        done = min(n, lo + BUILD_EVERY)
        print(
            f"query bench: {done:,} of {n:,} events written ({writing:.0f} s) and built ({building:.0f} s)", flush=True
        )
    create_tenant_with_keys(TenantStore(settings.tenants_db), TENANT, WRITE_KEY, READ_KEY)
    ready.write_text(json.dumps({"events": n, "users": users, "data_end": data_end.isoformat()}))
    return data_end


@dataclass
class _Results:
    uncached: dict[str, list[float]] = field(default_factory=dict)  # shape → seconds, client side
    server_ms: dict[str, list[float]] = field(default_factory=dict)  # shape → provenance.elapsed_ms
    raw: dict[str, list[float]] = field(default_factory=dict)  # shape → seconds of the DuckDB baseline
    cached: list[float] = field(default_factory=list)
    cached_server_ms: list[float] = field(default_factory=list)
    page_api: list[float] = field(default_factory=list)
    page_sql: list[float] = field(default_factory=list)


def _measure(settings: Settings, client: httpx.Client, end: datetime) -> _Results:
    res = _Results()
    first: dict[str, dict[str, Any]] = {}
    for shape in DASHBOARD:  # warm-up: a repetition the timed ones do not use
        _check_source(shape, post(client, shape.body(end, UNCACHED_REPS))[1], rollup=True)
    for k in range(UNCACHED_REPS):  # interleaved, so drift in the machine's load hits every shape alike
        for shape in DASHBOARD:
            elapsed, answer = post(client, shape.body(end, k))
            _check_source(shape, answer, rollup=True)
            res.uncached.setdefault(shape.name, []).append(elapsed)
            res.server_ms.setdefault(shape.name, []).append(float(answer["provenance"]["elapsed_ms"]))
            if k == 0:
                first[shape.name] = answer

    cached = DASHBOARD[0].body(end, 0)  # asked above: in the cache now
    for _ in range(CACHED_REPS):
        elapsed, answer = post(client, cached)
        if not answer["provenance"]["cache"]["hit"]:
            raise RuntimeError(f"{DASHBOARD[0].name}: a repeated request missed the cache")
        res.cached.append(elapsed)
        res.cached_server_ms.append(float(answer["provenance"]["elapsed_ms"]))

    table = f"{settings.warehouse_alias}.{warehouse.RAW_EVENTS}"
    con = warehouse.connect(settings, read_only=True)
    try:
        for shape in DASHBOARD:
            _time_sql(con, shape, table, end, UNCACHED_REPS)  # warm-up
        for k in range(RAW_REPS):
            for shape in DASHBOARD:
                elapsed, rows = _time_sql(con, shape, table, end, k)
                res.raw.setdefault(shape.name, []).append(elapsed)
                if k == 0:
                    _compare(shape, first[shape.name], rows)

        # The raw path: the API against the same SQL run here on the table the API's raw path reads
        # (staged events, event_at), the same ranges, alternating.
        staged = f"{settings.warehouse_alias}.main.{STAGED_EVENTS}"
        _check_source(RAW_PATH, post(client, RAW_PATH.body(end, RAW_PATH_REPS))[1], rollup=False)
        _time_sql(con, RAW_PATH, staged, end, RAW_PATH_REPS, "event_at")
        for k in range(RAW_PATH_REPS):
            elapsed, answer = post(client, RAW_PATH.body(end, k))
            _check_source(RAW_PATH, answer, rollup=False)
            res.page_api.append(elapsed)
            elapsed, rows = _time_sql(con, RAW_PATH, staged, end, k, "event_at")
            res.page_sql.append(elapsed)
            if k == 0:
                _compare(RAW_PATH, answer, rows)
    finally:
        con.close()

    print(f"{'query':<26}{'API uncached ms':>16}{'server ms':>11}{'DuckDB raw ms':>15}{'speedup':>9}")
    for shape in DASHBOARD:
        api_ms = _ms(statistics.median(res.uncached[shape.name]))
        raw_ms = _ms(statistics.median(res.raw[shape.name]))
        server = statistics.median(res.server_ms[shape.name])
        print(f"{shape.name:<26}{api_ms:>16.1f}{server:>11.1f}{raw_ms:>15.1f}{raw_ms / api_ms:>8.0f}x")
    page_api, page_sql = _ms(statistics.median(res.page_api)), _ms(statistics.median(res.page_sql))
    print(f"{RAW_PATH.name:<26}{page_api:>16.1f}{'':>11}{page_sql:>15.1f}  (raw path: API / direct SQL)")
    print(
        f"cached {DASHBOARD[0].name}: p50 {_ms(percentile(res.cached, 50)):.1f} ms,"
        f" p95 {_ms(percentile(res.cached, 95)):.1f} ms, max {_ms(max(res.cached)):.1f} ms;"
        f" server p50 {percentile(res.cached_server_ms, 50):.1f} ms, p95 {percentile(res.cached_server_ms, 95):.1f} ms"
    )
    return res


def _records(n: int, res: _Results) -> list[Record]:
    uncached = [t for ts in res.uncached.values() for t in ts]
    raw = [t for ts in res.raw.values() for t in ts]
    raw_median, uncached_median = _ms(statistics.median(raw)), _ms(statistics.median(uncached))
    page_api, page_sql = _ms(statistics.median(res.page_api)), _ms(statistics.median(res.page_sql))
    return [
        record("query_events", n, "events"),  # the scale that ran: events in the lake
        record("query_raw_sql_median", raw_median, "ms"),
        record("query_rollup_uncached_median", uncached_median, "ms", baseline="query_raw_sql_median"),
        record("query_rollup_uncached_p95", _ms(percentile(uncached, 95)), "ms", target="<= 50"),
        record("query_rollup_cached_p95", _ms(percentile(res.cached, 95)), "ms", target="<= 5"),
        # Median DuckDB time over the dashboard queries / median API uncached time over the same mix.
        record("query_rollup_speedup", raw_median / uncached_median, "x", target=">= 100"),
        record("query_raw_path_sql_median", page_sql, "ms"),
        record("query_raw_path_api_median", page_api, "ms", baseline="query_raw_path_sql_median"),
        record("query_raw_overhead", page_api / page_sql, "x", target="<= 1.2"),
    ]
