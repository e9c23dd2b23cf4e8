"""Unique users past the warehouse watermark on the real stack, when the realtime layer missed some of the day.

The warehouse holds the day's early events (loaded and rolled up by dbt) before `analytics realtime` ever
runs; it starts with a 300 s retention window, so its first start replays only the events Kafka received in
the last 300 s and never sees the early users. More events are then posted to the collector (users seen
early, users seen by both, new users) and left out of the warehouse. `analytics api` must count today's
active users and purchasers, by day and by hour, as the union of the warehouse's sketches and Redis's:
exactly what plain SQL over the raw events says (first copies, no bots). Then Redis loses the test's keys
and the consumer is restarted: after it rebuilt its window from Kafka, the answers are exact again.
"""

from __future__ import annotations

import json
import random
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import pytest
import redis

from analytics_core.catalogue import ALL, get_catalogue
from analytics_core.clients import kafka_producer, redis_client
from analytics_core.hll import Sketch, merge
from analytics_core.realtime_keys import RealtimeKeys, counter_field, uniques_sketch
from analytics_core.registry import register_event_schema
from analytics_core.serde import EventSerializer
from analytics_core.settings import Settings
from analytics_core.topics import Topics, ensure_topics
from collector.app import create_app as create_collector
from loaders.warehouse_loader import WarehouseLoader
from tenants import TenantStore, create_tenant_with_keys
from tests.conftest import delete_topics
from tests.e2e.test_api_pipeline import TENANTS, LiveStream, Pipeline, bearer, query
from tests.integration.dbt_runs import lake_query, run_dbt
from tests.integration.test_api_hardening import Server, start_server
from tests.integration.test_query_engine import FIRST_COPIES
from tests.pipeline_env import QUICK_LOADER, isolated, pipeline_env
from tests.realtime_expected import hash_of, redis_counters, sketches_of
from tests.servers import serve

pytestmark = [pytest.mark.integration, pytest.mark.slow]
ROOT = Path(__file__).resolve().parents[2]
TENANT = "tenant_1"
RETENTION_S = 300  # the smallest realtime retention: the consumer's first start replays 5 minutes of Kafka
METRICS = ["active_users", "purchasers", "events"]
UNIQUE = ["active_users", "purchasers"]
DAY_S = 86_400
# Early events end this long before they are produced, so they were received before any retention window
# the consumer can start with; they begin EARLY_SPAN_S before that (at midnight UTC at the earliest).
EARLY_END_S = 360
EARLY_SPAN_S = 90 * 60
BRIDGE_S = 75  # the last seconds before the load: received by Kafka inside the window, in the warehouse too
# Past the watermark Redis must still hold the minutes: with a 300 s retention the queries must be asked
# within about 230 s of the load (docs/API.md, "Where the numbers come from": else `incomplete`).
QUERY_BY_S = 200


def iso(epoch_s: float) -> str:
    return datetime.fromtimestamp(epoch_s, UTC).isoformat()


def micros(epoch_s: float) -> int:
    return round(epoch_s * 1_000_000)


def canonical(user: str, kind: str, at: float, received: float, rng: random.Random, bot: bool = False) -> dict:
    """A canonical event (analytics_core/events.py) as the collector would have produced it.

    A user key starting with `anon-` has no user id (its key is the anonymous id)."""
    anonymous = user.startswith("anon-")
    event: dict[str, Any] = {
        "event_id": uuid.UUID(int=rng.getrandbits(128)).hex,
        "tenant_id": TENANT,
        "message_type": "track",
        "event_type": kind,
        "anonymous_id": user if anonymous else f"device-{user}",
        "timestamp": micros(at),
        "original_timestamp": micros(at),
        "received_at": micros(received),
        "properties": "{}",
        "library": "e2e-test/1",
        "is_bot": bot,
        "device": "bot" if bot else rng.choice(["desktop", "mobile", "tablet"]),
    }
    if not anonymous:
        event["user_id"] = user
    if (country := rng.choice(["DE", "FR", "US", None])) is not None:
        event["country"] = country
    if kind == "purchase":
        revenue = rng.randint(100, 20_000) / 100
        event.update(revenue=revenue, currency="EUR", properties=json.dumps({"revenue": revenue, "currency": "EUR"}))
    return event


# What each event type's schema (schemas/events) requires of its properties; revenue added to purchases.
PROPERTIES: dict[str, dict[str, Any]] = {
    "page_view": {"path": "/pricing"},
    "add_to_cart": {"product_id": "sku-0001"},
    "purchase": {"currency": "EUR"},
}


def user_of(event: dict) -> str:
    return str(event.get("user_id") or event["anonymous_id"])


def kind_of(rng: random.Random) -> str:
    return rng.choices(["page_view", "add_to_cart", "purchase"], weights=[70, 15, 15])[0]


def produce(settings: Settings, events: list[dict]) -> None:
    """Events to tracking.events in receipt order, each Kafka record timestamped with its receipt time
    (as if the collector had produced it then): the realtime consumer finds its window by these."""
    topic = Topics.from_settings(settings).events
    serialize = EventSerializer(register_event_schema(settings))
    producer = kafka_producer(settings)
    failed: list[Any] = []
    for event in sorted(events, key=lambda e: e["received_at"]):
        producer.produce(
            topic,
            key=f"{TENANT}:{user_of(event)}",
            value=serialize(event),
            timestamp=event["received_at"] // 1000,
            on_delivery=lambda err, _msg: failed.append(err) if err else None,
        )
        producer.poll(0)
    assert producer.flush(60) == 0 and not failed, failed[:3]


@dataclass
class Scenario:
    pipeline: Pipeline
    day: int  # today, 00:00 in `zone` (epoch seconds)
    zone: str  # UTC, or Asia/Tokyo when UTC's day has begun less than 3 hours ago or ends within 3 hours
    loaded_at: float  # when the early events were produced: the end of what the warehouse holds
    early_only: set[str]  # users of the early events only: in the warehouse, never seen by the realtime layer
    realtime_users: set[str]  # human users of the events the realtime layer applied
    realtime_minutes: set[int]  # minutes of the events it applied (bots' too)
    applied: int  # events it applied: each event id once
    api: Server | None = None
    consumer: subprocess.Popen | None = None
    late_posted: bool = False
    truth: dict[str, dict[int, dict[str, float]]] = field(default_factory=dict)

    @property
    def settings(self) -> Settings:
        return self.pipeline.settings

    def start_consumer(self) -> None:
        analytics = str(Path(sys.executable).with_name("analytics"))
        env = {**pipeline_env(self.settings), "ANALYTICS_REALTIME_RETENTION_S": str(RETENTION_S)}
        self.consumer = subprocess.Popen([analytics, "realtime"], cwd=ROOT, env=env)

    def stop_consumer(self) -> None:
        if self.consumer is not None and self.consumer.poll() is None:
            self.consumer.terminate()
            self.consumer.wait(30)


def delete_keys(conn: redis.Redis, prefix: str) -> int:
    keys = list(conn.scan_iter(match=prefix + "*", count=1000))
    deleted: Any = conn.delete(*keys) if keys else 0
    return int(deleted)


@pytest.fixture(scope="module")
def scenario(kafka_settings: Settings, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Scenario]:
    now = time.time()
    # "Today" must hold the early events (from up to 96 minutes ago) and the next minutes: near midnight UTC
    # the test asks about today in Tokyo (+09:00, no clock changes), where it is then 06:00 to 12:00.
    zone = "UTC" if 3 <= datetime.fromtimestamp(now, UTC).hour < 21 else "Asia/Tokyo"
    local = datetime.fromtimestamp(now, ZoneInfo(zone))
    day = int(local.replace(hour=0, minute=0, second=0, microsecond=0).timestamp())
    base = tmp_path_factory.mktemp("unique_users")
    settings = isolated(kafka_settings, base, topics=True, realtime_retention_s=RETENTION_S, **QUICK_LOADER)
    ensure_topics(settings)
    create_tenant_with_keys(TenantStore(settings.tenants_db), TENANT, *TENANTS[TENANT])
    conn = redis_client(settings)
    rng = random.Random(16)

    # Early: 300 users (30 anonymous), 1,400 events, 40 resent copies, and a crawler, all received more than
    # 300 s before the consumer starts. Bridge: the last 75 s before the load, 60 new users and 10 early ones.
    early_users = [f"early-{i:03d}" for i in range(270)] + [f"anon-early-{i:02d}" for i in range(30)]
    start, end = max(day, now - EARLY_END_S - EARLY_SPAN_S), now - EARLY_END_S
    early = []
    for _ in range(1_400):
        at = rng.uniform(start, end)
        early.append(canonical(rng.choice(early_users), kind_of(rng), at, at + rng.uniform(0, 3), rng))
    early += [canonical("crawler-early", "page_view", at, at, rng, bot=True) for at in (start, end - 5, end)]
    for copy in rng.sample(early, 40):  # an SDK's resend, received later: the warehouse keeps the first copy
        early.append({**copy, "received_at": copy["received_at"] + 20_000_000})
    bridge_users = [f"bridge-{i:02d}" for i in range(60)] + rng.sample(early_users, 10)
    bridge = []
    for _ in range(300):
        at = rng.uniform(now - BRIDGE_S, now - 3)
        bridge.append(canonical(rng.choice(bridge_users), kind_of(rng), at, at + rng.uniform(0, 1.5), rng))
    produce(settings, early + bridge)
    WarehouseLoader(settings).run(idle_exit_s=3.0, handle_signals=False)
    run_dbt(settings, "build", "--exclude-resource-type", "unit_test")
    # The watermark is past every early event (so the minutes from it on hold none) and within the window.
    ((watermark,),) = lake_query(
        settings,
        "SELECT epoch(complete_until) FROM {lake}.fct_warehouse_watermarks WHERE tenant_id = ? AND granularity = ?",
        [TENANT, "minute"],
    )
    assert now - BRIDGE_S < watermark < now, (watermark, now)

    scenario = Scenario(
        pipeline=Pipeline(settings, "", ""),  # the servers' addresses once they run
        day=day,
        zone=zone,
        loaded_at=now,
        early_only={user_of(e) for e in early if not e["is_bot"]} - {user_of(e) for e in bridge},
        realtime_users={user_of(e) for e in bridge},
        realtime_minutes={e["timestamp"] // 60_000_000 * 60 for e in bridge},
        applied=len(bridge),
    )
    try:
        scenario.start_consumer()
        wait_applied(scenario, conn)
        api = scenario.api = start_server(settings, base, "api", ANALYTICS_REALTIME_RETENTION_S=str(RETENTION_S))
        with serve(create_collector(settings)) as collector:
            scenario.pipeline = Pipeline(settings, api.url, collector)
            yield scenario
    finally:
        scenario.stop_consumer()
        if scenario.api is not None:
            scenario.api.stop()
        delete_topics(settings)
        delete_keys(conn, settings.redis_key_prefix)
        conn.close()


def wait_applied(scenario: Scenario, conn: redis.Redis, timeout: float = 60.0) -> None:
    """Until the realtime consumer has applied exactly the events it can see (rt:stats `applied`)."""
    stats = RealtimeKeys.from_settings(scenario.settings).stats
    deadline = time.monotonic() + timeout
    while (applied := int(hash_of(conn, stats).get("applied", 0))) < scenario.applied:
        assert scenario.consumer is not None and scenario.consumer.poll() is None, "the realtime consumer exited"
        assert time.monotonic() < deadline, f"the consumer applied {applied} of {scenario.applied} events"
        time.sleep(0.1)
    time.sleep(0.3)  # nothing more comes
    assert int(hash_of(conn, stats)["applied"]) == scenario.applied


def redis_sketch(scenario: Scenario, conn: redis.Redis, metric: str) -> Sketch:
    """The union of the realtime layer's minute sketches of `metric` over today up to now."""
    keys = RealtimeKeys.from_settings(scenario.settings)
    name = counter_field(metric, "", [ALL] * len(get_catalogue().rollup_dimensions))
    minutes = range(scenario.day, int(time.time()) // 60 * 60 + 60, 60)
    names = [keys.uniques(TENANT, "minute", m, name) for m in minutes]
    return merge(s for key, v in zip(names, sketches_of(conn, names), strict=True) if (s := uniques_sketch(v, key)))


def assert_realtime_holds_only_what_it_saw(scenario: Scenario, conn: redis.Redis) -> None:
    """Redis holds the users and minutes of the events the consumer applied, and nothing of the early events."""
    active = redis_sketch(scenario, conn, "active_users")
    assert active == Sketch.from_keys(sorted(scenario.realtime_users))
    unseen = scenario.early_only - scenario.realtime_users  # the early users who did not come back (yet)
    found = set(Sketch.from_keys(sorted(unseen)).hashes) & set(active.hashes)
    assert unseen and not found, f"{len(found)} of {len(unseen)} users of the early events are in Redis"
    minutes = range(scenario.day, int(time.time()) // 60 * 60 + 60, 60)
    with_counters = {
        m for _, m in redis_counters(conn, scenario.settings.redis_key_prefix, [(TENANT, m) for m in minutes])
    }
    assert with_counters == scenario.realtime_minutes
    # The early events were never even read: they were received before the retention window.
    assert int(hash_of(conn, RealtimeKeys.from_settings(scenario.settings).stats).get("too_old", 0)) == 0


def post_late_events(scenario: Scenario, conn: redis.Redis) -> None:
    """Through the collector: 40 early-only users come back, 30 new ones (5 anonymous), 10 bridge users, and a
    crawler; part of the batch is sent twice (an SDK's retry: counted once). Not loaded into the warehouse."""
    if scenario.late_posted:
        return
    rng = random.Random(61)
    users = [
        *rng.sample(sorted(scenario.early_only), 40),
        *(f"late-{i:02d}" for i in range(25)),
        *(f"anon-late-{i:02d}" for i in range(5)),
        *rng.sample(sorted(scenario.realtime_users), 10),
    ]
    batch: list[dict[str, Any]] = []
    times: list[float] = []

    def track(user: str, kind: str, at: float, **extra: Any) -> None:
        ident = "anonymousId" if user.startswith("anon-") else "userId"
        message = {"type": "track", "event": kind, "messageId": uuid.uuid4().hex, ident: user, "timestamp": iso(at)}
        batch.append({**message, "context": {"ip": "127.0.0.1"}, **extra})
        times.append(at)

    for user in users:
        for _ in range(rng.randint(1, 3)):
            kind = kind_of(rng)
            props = PROPERTIES[kind] | ({"revenue": rng.randint(100, 9_000) / 100} if kind == "purchase" else {})
            track(user, kind, time.time() - rng.uniform(0, 2), properties=props)
    googlebot = "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)"
    for _ in range(5):
        track("crawler-late", "page_view", time.time(), context={"ip": "127.0.0.1", "userAgent": googlebot})
    url = f"{scenario.pipeline.collector}/v1/batch"
    for body in (
        {"writeKey": TENANTS[TENANT][0], "batch": batch},
        {"writeKey": TENANTS[TENANT][0], "batch": batch[:7]},
    ):
        answer = httpx.post(url, json=body, timeout=30)
        assert answer.status_code == 200, answer.text
    scenario.late_posted = True
    scenario.applied += len(batch)
    scenario.realtime_users |= set(users)
    scenario.realtime_minutes |= {int(t) // 60 * 60 for t in times}
    wait_applied(scenario, conn)


def ask(scenario: Scenario) -> dict[str, dict[str, Any]]:
    """Today in the scenario's zone, by day and by hour."""
    out = {}
    for granularity in ("day", "hour"):
        body = {
            "metrics": METRICS,
            "start": iso(scenario.day),
            "end": iso(scenario.day + DAY_S),
            "granularity": granularity,
            "timezone": scenario.zone,
        }
        answer = query(scenario.pipeline, TENANT, body)
        assert answer.status_code == 200, answer.text
        out[granularity] = answer.json()
    elapsed = time.time() - scenario.loaded_at
    assert elapsed < QUERY_BY_S, f"asked {elapsed:.0f} s after the load: the 300 s retention no longer covers it"
    return out


def truth(scenario: Scenario) -> dict[str, dict[int, dict[str, float]]]:
    """Today's numbers by plain SQL over the lake's raw events (first copies, no bots), once every event is in
    it: the late events are loaded now (not rolled up: the rollups and the watermark stay as they were)."""
    if scenario.truth:
        return scenario.truth
    WarehouseLoader(scenario.settings).run(idle_exit_s=2.0, handle_signals=False)
    for granularity, size in (("day", DAY_S), ("hour", 3600)):
        rows = lake_query(
            scenario.settings,
            f"""
            SELECT ({scenario.day} + floor((epoch(ts) - {scenario.day}) / {size}) * {size})::BIGINT AS bucket,
                count(*) AS events,
                count(DISTINCT user_key) AS active_users,
                count(DISTINCT user_key) FILTER (WHERE event_type = 'purchase') AS purchasers
            FROM ({FIRST_COPIES}) AS first_copies
            WHERE tenant_id = ? AND NOT is_bot AND ts >= to_timestamp(?) AND ts < to_timestamp(?)
            GROUP BY 1
            """,
            [TENANT, scenario.day, scenario.day + DAY_S],
        )
        scenario.truth[granularity] = {
            int(b): {"events": events, "active_users": users, "purchasers": buyers} for b, events, users, buyers in rows
        }
    return scenario.truth


def assert_exact(scenario: Scenario, answers: dict[str, dict[str, Any]]) -> None:
    want = truth(scenario)
    for granularity, answer in answers.items():
        prov = answer["provenance"]
        assert prov["realtime"] is True, prov
        assert prov["incomplete"] == [], prov["incomplete"]
        assert not set(prov["approximate"]) & set(UNIQUE), prov["approximate"]
        assert any(part["source"] == "realtime" for part in prov["parts"]), prov["parts"]
        got = {
            int(datetime.fromisoformat(row["bucket"]).timestamp()): {m: row["values"][m] or 0 for m in METRICS}
            for row in answer["rows"]
        }
        assert set(want[granularity]) <= set(got), granularity
        zero = dict.fromkeys(METRICS, 0)
        assert got == {b: want[granularity].get(b, zero) for b in got}, granularity
    # The day reaches past the watermark; counted from Redis alone its users would be fewer.
    (day_numbers,) = want["day"].values()
    assert day_numbers["active_users"] > len(scenario.realtime_users)
    assert day_numbers["active_users"] == len(scenario.realtime_users | scenario.early_only)


def test_realtime_started_late_unique_users_are_the_union_and_exact(scenario: Scenario) -> None:
    conn = redis_client(scenario.settings)
    try:
        assert_realtime_holds_only_what_it_saw(scenario, conn)
        live = LiveStream(f"{scenario.pipeline.api}/api/v1/live", bearer(TENANT))
        try:
            frame = live.next_counters(timeout=10)
        finally:
            live.close()
        assert frame is not None, "no counters frame from /api/v1/live"
        assert frame["users"]["active_users"] == len(scenario.realtime_users)
        post_late_events(scenario, conn)
        assert_realtime_holds_only_what_it_saw(scenario, conn)
        answers = ask(scenario)
    finally:
        conn.close()
    assert_exact(scenario, answers)


def test_after_redis_lost_its_keys_and_a_restart_unique_users_are_exact_again(scenario: Scenario) -> None:
    conn = redis_client(scenario.settings)
    keys = RealtimeKeys.from_settings(scenario.settings)
    try:
        post_late_events(scenario, conn)
        scenario.stop_consumer()
        assert delete_keys(conn, scenario.settings.redis_key_prefix) > 0
        assert conn.get(keys.alive) is None and redis_sketch(scenario, conn, "active_users") == Sketch.empty()
        scenario.start_consumer()
        wait_applied(scenario, conn)  # its first assignment found rt:alive gone and replayed the window
        assert conn.get(keys.alive) is not None
        assert_realtime_holds_only_what_it_saw(scenario, conn)
        answers = ask(scenario)
    finally:
        conn.close()
    assert_exact(scenario, answers)
