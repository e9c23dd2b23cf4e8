"""The whole read path on the real stack: history loaded and rolled up, the realtime consumer running,
the query API serving; an event posted to the collector shows in /api/v1/live and in a last-hour
query within 2 s; each read key sees its own tenant only; Redis down or no warehouse degrade clearly."""

from __future__ import annotations

import json
import queue
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from segment.analytics.client import Client as SegmentClient

from analytics_core.clients import redis_client
from analytics_core.events import to_micros
from analytics_core.realtime_keys import RealtimeKeys
from analytics_core.settings import Settings
from api.app import create_app
from collector.app import create_app as create_collector
from generator.config import GeneratorConfig
from generator.run import run
from generator.sinks import KafkaSink
from loaders.warehouse_loader import WarehouseLoader
from tenants import TenantStore, create_tenant_with_keys
from tests.integration.dbt_runs import lake_query, run_dbt
from tests.pipeline_env import QUICK_LOADER, isolated
from tests.pipeline_env import pipeline_env as _env
from tests.servers import free_port, serve

pytestmark = [pytest.mark.integration, pytest.mark.slow]
ROOT = Path(__file__).resolve().parents[2]
TENANTS = {"tenant_1": ("wk_api_one", "rk_api_one"), "tenant_2": ("wk_api_two", "rk_api_two")}
FRESH_S = 2.0


@dataclass
class Pipeline:
    settings: Settings
    api: str
    collector: str


@pytest.fixture(scope="module")
def pipeline(kafka_settings: Settings, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pipeline]:
    from analytics_core.topics import ensure_topics
    from tests.conftest import delete_topics

    base = tmp_path_factory.mktemp("api_pipeline")
    settings = isolated(kafka_settings, base, topics=True, **QUICK_LOADER)
    ensure_topics(settings)
    store = TenantStore(settings.tenants_db)
    for tenant, (write_key, read_key) in TENANTS.items():
        create_tenant_with_keys(store, tenant, write_key, read_key)
    # Two closed days of history, then a few seconds of live traffic: all loaded and rolled up.
    midnight = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    history = GeneratorConfig(
        seed=21, tenants=2, days=2, events_per_day=3_000, start_us=to_micros(midnight - timedelta(days=2))
    )
    run(history, KafkaSink(settings))
    run(GeneratorConfig(seed=22, tenants=2, rate=300.0, duration=4.0), KafkaSink(settings))
    WarehouseLoader(settings).run(idle_exit_s=3.0, handle_signals=False)
    run_dbt(settings, "build", "--exclude-resource-type", "unit_test")

    analytics = str(Path(sys.executable).with_name("analytics"))
    consumer = subprocess.Popen([analytics, "realtime"], cwd=ROOT, env=_env(settings))
    try:
        wait_until_consumer_applied(settings, consumer)
        with serve(create_collector(settings)) as collector, serve(create_app(settings)) as api:
            yield Pipeline(settings, api, collector)
    finally:
        consumer.terminate()
        consumer.wait(30)
        delete_topics(settings)


def wait_until_consumer_applied(settings: Settings, consumer: subprocess.Popen, timeout: float = 90.0) -> None:
    """Until the realtime consumer has rebuilt its live window from Kafka (the live traffic is in it)."""
    conn = redis_client(settings)
    keys = RealtimeKeys.from_settings(settings)
    deadline = time.monotonic() + timeout
    try:
        while int(conn.hget(keys.stats, "applied") or 0) == 0:
            assert consumer.poll() is None, "the realtime consumer exited"
            assert time.monotonic() < deadline, f"the realtime consumer applied nothing in {timeout:.0f} s"
            time.sleep(0.2)
    finally:
        conn.close()


def bearer(tenant: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {TENANTS[tenant][1]}"}


def post_event(pipeline: Pipeline, tenant: str) -> float:
    """One tracked event through the collector; the time its 200 came back."""
    body = {
        "writeKey": TENANTS[tenant][0],
        "batch": [
            {
                "type": "track",
                "event": "page_view",
                "messageId": uuid.uuid4().hex,
                "userId": f"fresh-{uuid.uuid4().hex[:6]}",
                "timestamp": datetime.now(UTC).isoformat(),
                "context": {"ip": "127.0.0.1"},
            }
        ],
    }
    answer = httpx.post(f"{pipeline.collector}/v1/batch", json=body, timeout=10)
    assert answer.status_code == 200, answer.text
    return time.monotonic()


HOUR_AGO = (datetime.now(UTC) - timedelta(hours=1)).replace(second=0, microsecond=0)


def last_hour(metrics: list[str], salt: int = 0, **extra: Any) -> dict[str, Any]:
    """The last hour (from a start fixed for the module) up to a little past now, in minutes.

    A different `salt` moves the end a few seconds further into the future: the same events, but a
    query the answer cache has not seen (it would hide changes for its TTL).
    """
    end = datetime.now(UTC).replace(microsecond=0) + timedelta(minutes=2, seconds=salt)
    return {"metrics": metrics, "start": HOUR_AGO.isoformat(), "end": end.isoformat(), "granularity": "minute", **extra}


def query(pipeline: Pipeline, tenant: str, body: dict[str, Any]) -> httpx.Response:
    return httpx.post(f"{pipeline.api}/api/v1/query", json=body, headers=bearer(tenant), timeout=30)


def total(answer: dict[str, Any], metric: str) -> float:
    return sum(row["values"][metric] or 0 for row in answer["rows"])


class LiveStream:
    """Reads /api/v1/live in a thread; `frames` receives (event, data) pairs."""

    def __init__(self, url: str, headers: dict[str, str]) -> None:
        self.frames: queue.Queue[tuple[str, dict[str, Any]]] = queue.Queue()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._read, args=(url, headers), daemon=True)
        self._thread.start()

    def _read(self, url: str, headers: dict[str, str]) -> None:
        with httpx.stream("GET", url, headers=headers, timeout=None) as response:
            event = "message"
            for line in response.iter_lines():
                if self._stop.is_set():
                    return
                if line.startswith("event: "):
                    event = line[7:]
                elif line.startswith("data: "):
                    self.frames.put((event, json.loads(line[6:])))

    def next_counters(self, timeout: float) -> dict[str, Any] | None:
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            try:
                event, data = self.frames.get(timeout=left)
            except queue.Empty:
                return None
            if event == "counters":
                return data
        return None

    def close(self) -> None:
        self._stop.set()


def test_a_collected_event_is_live_and_queryable_within_two_seconds(pipeline: Pipeline) -> None:
    live = LiveStream(f"{pipeline.api}/api/v1/live", bearer("tenant_1"))
    try:
        first = live.next_counters(timeout=10)
        assert first is not None, "no counters frame from /api/v1/live"
        assert query(pipeline, "tenant_1", last_hour(["traffic_events"])).status_code == 200
        seen_live, seen_query = [], []
        for round_ in range(3):
            while (frame := live.next_counters(timeout=0.01)) is not None:
                first = frame  # the latest counters before this round's event
            before_live = first["totals"]["traffic_events"]
            before_query = total(
                query(pipeline, "tenant_1", last_hour(["traffic_events"], 100 + round_)).json(), "traffic_events"
            )
            sent = post_event(pipeline, "tenant_1")
            while True:
                frame = live.next_counters(timeout=FRESH_S - (time.monotonic() - sent))
                assert frame is not None, f"event not in /api/v1/live within {FRESH_S} s"
                if frame["totals"]["traffic_events"] >= before_live + 1:
                    seen_live.append(time.monotonic() - sent)
                    first = frame
                    break
            poll = 0
            while True:
                poll += 1
                answer = query(pipeline, "tenant_1", last_hour(["traffic_events"], 1000 * (round_ + 1) + poll)).json()
                if total(answer, "traffic_events") == before_query + 1:
                    seen_query.append(time.monotonic() - sent)
                    assert answer["provenance"]["realtime"] is True
                    assert any(p["source"] == "realtime" for p in answer["provenance"]["parts"])
                    break
                assert time.monotonic() - sent < FRESH_S, f"event not in a last-hour query within {FRESH_S} s"
                time.sleep(0.05)
        assert max(seen_live) < FRESH_S and max(seen_query) < FRESH_S
    finally:
        live.close()


def expected_last_hour(settings: Settings, tenant: str, start: str) -> int:
    """traffic_events since `start` from the staged events, by raw SQL (the warehouse's share)."""
    rows = lake_query(
        settings,
        "SELECT count(*) FROM {lake}.stg_tracking__events WHERE tenant_id = ? AND event_at >= ?::TIMESTAMPTZ",
        [tenant, start],
    )
    return int(rows[0][0])


def test_each_read_key_sees_its_own_tenant_only(pipeline: Pipeline) -> None:
    # Events posted by earlier tests may still be on their way to Redis: count once the totals hold still.
    before: dict[str, float] = {}
    for salt in range(7, 57):
        body = last_hour(["traffic_events"], salt)
        seen = {t: total(query(pipeline, t, body).json(), "traffic_events") for t in TENANTS}
        if seen == before:
            break
        before = seen
        time.sleep(0.2)
    # The warehouse's share of each tenant matches raw SQL for that tenant: nothing of the other leaks in.
    for tenant in TENANTS:
        assert before[tenant] >= expected_last_hour(pipeline.settings, tenant, body["start"]) > 0
    for _ in range(3):
        post_event(pipeline, "tenant_1")
    deadline = time.monotonic() + 10
    shift = 300
    while True:
        shift += 1
        now = {
            t: total(query(pipeline, t, last_hour(["traffic_events"], shift)).json(), "traffic_events") for t in TENANTS
        }
        if now["tenant_1"] - before["tenant_1"] >= 3 or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    # tenant_1 gained its 3 new events (others may have been posted by earlier tests), tenant_2 nothing.
    assert now["tenant_1"] - before["tenant_1"] >= 3
    assert now["tenant_2"] == before["tenant_2"]


@pytest.mark.parametrize(
    ("change", "status", "field"),
    [
        ({"group_by": ["tenant_id"]}, 400, "group_by"),
        ({"filters": [{"dimension": "tenant_id", "op": "eq", "values": ["tenant_2"]}]}, 400, "filters"),
        ({"group_by": ["country; DROP TABLE x"]}, 400, "group_by"),
        ({"metrics": ["events) FROM x --"]}, 400, "metrics"),
        ({"timezone": "Mars/Olympus"}, 400, "timezone"),
        ({"tenant_id": "tenant_2"}, 400, "tenant_id"),
    ],
)
def test_parameters_cannot_reach_another_tenant_or_inject_sql(
    pipeline: Pipeline, change: dict[str, Any], status: int, field: str
) -> None:
    answer = query(pipeline, "tenant_1", {**last_hour(["events"]), **change})
    assert answer.status_code == status, answer.text
    assert field in answer.json()["field"]


def test_filter_values_are_data_not_sql(pipeline: Pipeline) -> None:
    sneaky = ["x' OR '1'='1", "'; DROP TABLE lake.main.fct_metrics_day; --", "tenant_2"]
    body = {**last_hour(["events"], 11), "filters": [{"dimension": "country", "op": "in", "values": sneaky}]}
    answer = query(pipeline, "tenant_1", body)
    assert answer.status_code == 200, answer.text
    assert total(answer.json(), "events") == 0
    assert lake_query(pipeline.settings, "SELECT count(*) > 0 FROM {lake}.fct_metrics_day")[0][0]


def test_unknown_or_missing_read_key_is_refused(pipeline: Pipeline) -> None:
    body = last_hour(["events"])
    assert httpx.post(f"{pipeline.api}/api/v1/query", json=body, timeout=10).status_code == 401
    for headers in (
        {"Authorization": "Bearer nope"},
        {"Authorization": f"Basic {TENANTS['tenant_1'][1]}"},
        {"Authorization": f"Bearer {TENANTS['tenant_1'][0]}"},
    ):  # a write key cannot read
        answer = httpx.post(f"{pipeline.api}/api/v1/query", json=body, headers=headers, timeout=10)
        assert answer.status_code == 401
        assert answer.headers["www-authenticate"] == "Bearer"


def test_second_ask_is_a_cache_hit_with_the_same_numbers(pipeline: Pipeline) -> None:
    midnight = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    body = {
        "metrics": ["events", "revenue"],
        "start": (midnight - timedelta(days=2)).isoformat(),
        "end": midnight.isoformat(),
        "granularity": "day",
        "group_by": ["country"],
    }
    first = query(pipeline, "tenant_2", body).json()
    second = query(pipeline, "tenant_2", body).json()
    assert first["provenance"]["cache"]["hit"] is False
    assert second["provenance"]["cache"]["hit"] is True
    assert second["provenance"]["cache"]["ttl_s"] == pipeline.settings.api_cache_closed_ttl_s  # a closed range
    assert second["rows"] == first["rows"]
    # The closed days equal raw SQL over the staged events.
    expected = dict(
        lake_query(
            pipeline.settings,
            "SELECT country, count(*) FROM {lake}.stg_tracking__events WHERE tenant_id = ? AND NOT is_bot"
            " AND event_at >= ?::TIMESTAMPTZ AND event_at < ?::TIMESTAMPTZ GROUP BY 1",
            ["tenant_2", body["start"], body["end"]],
        )
    )
    got: dict[str, float] = {}
    for row in first["rows"]:
        got[row["dimensions"]["country"]] = got.get(row["dimensions"]["country"], 0) + row["values"]["events"]
    assert {k: v for k, v in got.items() if v} == expected
    metrics = httpx.get(f"{pipeline.api}/metrics", timeout=10).text
    assert "api_cache_hits_total" in metrics


def test_order_completed_from_a_segment_sdk_is_a_purchase_live_and_after_the_rollups(pipeline: Pipeline) -> None:
    """Segment's e-commerce `Order Completed` (revenue, else total; a lower-case currency) counts in
    purchases and revenue: live through the realtime layer, then from the minute rollups."""
    settings, marker = pipeline.settings, uuid.uuid4().hex
    since = (datetime.now(UTC) - timedelta(minutes=1)).replace(second=0, microsecond=0)
    window = {"start": since.isoformat(), "granularity": "minute"}

    def asked(salt: int) -> tuple[float, float]:
        end = (datetime.now(UTC) + timedelta(minutes=2, seconds=salt)).replace(microsecond=0)
        body = {"metrics": ["purchases", "revenue"], **window, "end": end.isoformat()}
        answer = query(pipeline, "tenant_2", body)
        assert answer.status_code == 200, answer.text
        return total(answer.json(), "purchases"), total(answer.json(), "revenue")

    def settled(salt: int) -> tuple[float, float]:
        """The answer once two asks a second apart agree (earlier live traffic may still be arriving)."""
        last = asked(salt)
        for step in range(1, 30):
            time.sleep(1.0)
            now = asked(salt + step)
            if now == last:
                return now
            last = now
        raise AssertionError("tenant_2's purchases never held still")

    before = settled(2000)
    client = SegmentClient(TENANTS["tenant_2"][0], host=pipeline.collector, sync_mode=True, max_retries=1)
    client.track("buyer-1", "Order Completed", {"revenue": 40.0, "currency": "usd", "run": marker, "order_id": "o-1"})
    client.track("buyer-2", "Order Completed", {"total": 15.5, "currency": "EUR", "run": marker, "order_id": "o-2"})
    client.flush()
    expected = (before[0] + 2, before[1] + 55.5)
    deadline = time.monotonic() + 10
    while (live := asked(3000 + int(time.monotonic() * 10) % 1000)) != expected:
        assert time.monotonic() < deadline, f"live purchases and revenue {live}, expected {expected}"
        time.sleep(0.2)

    WarehouseLoader(settings).run(idle_exit_s=3.0, handle_signals=False)
    run_dbt(settings, "run", "--select", "stg_tracking__events", "fct_metrics_minute", "fct_warehouse_watermarks")
    staged = lake_query(
        settings,
        "SELECT revenue, currency FROM {lake}.stg_tracking__events WHERE tenant_id = 'tenant_2'"
        " AND event_type = 'Order Completed' AND properties LIKE ? ORDER BY revenue",
        [f'%"run":"{marker}"%'],
    )
    assert staged == [(15.5, "EUR"), (40.0, "USD")]
    # The minute rollups against raw SQL over the staged events, both kinds of purchase event.
    rolled = lake_query(
        settings,
        "SELECT metric, sum(value) FROM {lake}.fct_metrics_minute WHERE tenant_id = ? AND dimension_set = ''"
        " AND window_start >= ?::TIMESTAMPTZ AND metric IN ('purchases', 'revenue') GROUP BY 1",
        ["tenant_2", since.isoformat()],
    )
    ((count, revenue),) = lake_query(
        settings,
        "SELECT count(*), sum(revenue) FROM {lake}.stg_tracking__events WHERE tenant_id = ? AND NOT is_bot"
        " AND event_type IN ('purchase', 'Order Completed') AND event_at >= ?::TIMESTAMPTZ",
        ["tenant_2", since.isoformat()],
    )
    assert count >= 2 and dict(rolled) == pytest.approx({"purchases": count, "revenue": revenue})
    assert asked(5000) == expected  # warehouse and realtime together: each purchase once


def test_without_redis_answers_come_from_the_warehouse_marked_not_realtime(pipeline: Pipeline) -> None:
    settings = pipeline.settings.model_copy(update={"redis_url": f"redis://127.0.0.1:{free_port()}/0"})
    with serve(create_app(settings)) as api:
        answer = httpx.post(
            f"{api}/api/v1/query", json=last_hour(["events"], 13), headers=bearer("tenant_1"), timeout=30
        )
        assert answer.status_code == 200, answer.text
        prov = answer.json()["provenance"]
        assert prov["realtime"] is False
        assert prov["realtime_unavailable"]
        ready = httpx.get(f"{api}/readyz", timeout=10).json()
        assert ready["status"] == "ready" and ready["realtime"].startswith("unavailable")


def test_without_a_warehouse_queries_answer_503_with_retry_after(pipeline: Pipeline, tmp_path: Path) -> None:
    settings = pipeline.settings.model_copy(update={"warehouse_path": tmp_path / "missing" / "warehouse"})
    with serve(create_app(settings)) as api:
        answer = httpx.post(f"{api}/api/v1/query", json=last_hour(["events"]), headers=bearer("tenant_1"), timeout=30)
        assert answer.status_code == 503, answer.text
        assert answer.headers["retry-after"] == str(settings.api_retry_after_s)
        assert "warehouse" in answer.json()["error"]
        assert httpx.get(f"{api}/readyz", timeout=10).status_code == 503


def test_oversized_bodies_are_refused_with_413(pipeline: Pipeline) -> None:
    huge = {**last_hour(["events"]), "filters": [{"dimension": "country", "op": "in", "values": ["x" * 500] * 200}]}
    answer = query(pipeline, "tenant_1", huge)
    assert answer.status_code == 413, answer.text

    def chunks() -> Iterator[bytes]:  # no Content-Length: counted as it arrives
        yield b'{"metrics": ["events"], "padding": "'
        for _ in range(100):
            yield b"y" * 1024
        yield b'"}'

    chunked = httpx.post(f"{pipeline.api}/api/v1/query", content=chunks(), headers=bearer("tenant_1"), timeout=30)
    assert chunked.status_code == 413, chunked.text


def test_catalogue_lists_metrics_dimensions_and_limits(pipeline: Pipeline) -> None:
    answer = httpx.get(f"{pipeline.api}/api/v1/metrics", headers=bearer("tenant_2"), timeout=10).json()
    metrics = {m["name"]: m for m in answer["metrics"]}
    assert metrics["revenue"]["additive"] and metrics["active_users"]["approximate"]
    assert metrics["traffic_events"]["bots_included"] and not metrics["events"]["bots_included"]
    assert {d["name"]: d["in_rollups"] for d in answer["dimensions"]}["page"] is False
    assert answer["limits"]["max_rows"] == pipeline.settings.api_max_rows
    assert answer["granularities"] == ["minute", "hour", "day", "total", "auto"]


def test_dagster_reconciliation_check_finds_zero_drift_and_api_exposes_it(pipeline: Pipeline) -> None:
    from orchestration.defs.realtime.checks import realtime_matches_warehouse
    from orchestration.defs.warehouse.resources import WarehouseResource

    result = realtime_matches_warehouse(warehouse=WarehouseResource.from_settings(pipeline.settings))
    metadata = {k: v.value for k, v in result.metadata.items()}
    assert result.passed, metadata
    assert metadata["cells_compared"] > 0 and metadata["minutes_compared"] > 0
    assert metadata["drift/tenant_1/events"] == 0 and metadata["drift/tenant_2/revenue"] == 0
    exposed = httpx.get(f"{pipeline.api}/metrics", timeout=10).text
    assert 'realtime_drift{metric="events",tenant="tenant_1"} 0.0' in exposed
    assert "api_realtime_redis_up 1.0" in exposed
