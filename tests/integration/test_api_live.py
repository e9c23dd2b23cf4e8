"""The live reader and SSE stream of the API over a real Redis holding realtime keys written by hand."""

from __future__ import annotations

import asyncio
import json
import time

import pytest
import redis

from analytics_core.catalogue import get_catalogue
from analytics_core.clients import redis_async_client
from analytics_core.hll import Sketch
from analytics_core.realtime_keys import SUM_SCALE, RealtimeKeys, counter_field
from analytics_core.settings import Settings
from api.live import LiveReader
from api.live_hub import stream

pytestmark = pytest.mark.integration
STARS = ["*", "*", "*"]


def write_minute(
    conn: redis.Redis, keys: RealtimeKeys, tenant: str, minute: int, events: int, revenue: float, users: list[str]
) -> None:
    counters = keys.counters(tenant, minute)
    conn.hset(counters, counter_field("events", "", STARS), events)
    conn.hset(counters, counter_field("traffic_events", "", STARS), events + 1)
    conn.hset(counters, counter_field("revenue", "", STARS), round(revenue * SUM_SCALE))
    conn.hset(counters, counter_field("events", "country", ["*", "DE", "*"]), events)  # not a total: ignored
    conn.set(keys.uniques(tenant, "minute", minute, counter_field("active_users", "", STARS)), sketch_of(users))


def sketch_of(users: list[str]) -> bytes:
    """A uniques key's value, as the realtime consumer keeps it (analytics_core/hll.py)."""
    return Sketch.from_keys(users).to_bytes()


def test_snapshot_sums_the_live_window_and_unions_users(
    stack_settings: Settings, redis_conn: redis.Redis, redis_prefix: str
) -> None:
    keys = RealtimeKeys(redis_prefix)
    reader = LiveReader(get_catalogue(), keys, window_s=300)
    now = 1_800_000_030  # 30 s into a minute
    current = now - 30
    write_minute(redis_conn, keys, "t1", current, 5, 10.25, ["a", "b"])
    write_minute(redis_conn, keys, "t1", current - 120, 7, 0.5, ["b", "c"])
    write_minute(redis_conn, keys, "t1", current - 600, 100, 1000.0, ["z"])  # outside the 5-minute window
    write_minute(redis_conn, keys, "t2", current, 50, 50.0, ["x"])  # another tenant

    async def take() -> dict:
        client = redis_async_client(stack_settings)
        try:
            return await reader.snapshot(client, "t1", now=now)
        finally:
            await client.aclose()

    snap = asyncio.run(take())
    assert snap["totals"]["events"] == 12
    assert snap["totals"]["traffic_events"] == 14
    assert snap["totals"]["revenue"] == pytest.approx(10.75)
    assert snap["users"]["active_users"] == 3  # a, b, c: b once
    assert snap["approximate"]["active_users"] == "exact"  # a sparse union: the count is exact
    assert snap["users"]["purchasers"] == 0
    assert len(snap["minutes"]) == 6  # the window's five whole minutes and the current one
    assert snap["minutes"][-1]["events"] == 5


def test_snapshot_unions_thousands_of_users_exactly_until_the_sketch_turns_dense_and_skips_old_hlls(
    stack_settings: Settings, redis_conn: redis.Redis, redis_prefix: str
) -> None:
    keys = RealtimeKeys(redis_prefix)
    reader = LiveReader(get_catalogue(), keys, window_s=300)
    now = 1_800_000_030
    current = now - 30
    field = counter_field("active_users", "", STARS)
    minutes = [current - 60 * i for i in range(4)]

    def snapshot() -> dict:
        async def take() -> dict:
            client = redis_async_client(stack_settings)
            try:
                return await reader.snapshot(client, "t1", now=now)
            finally:
                await client.aclose()

        return asyncio.run(take())

    # Overlapping minutes: 7,000 distinct users in all (exact), then 20,000 (dense, within 1 %).
    for i, m in enumerate(minutes):
        redis_conn.set(
            keys.uniques("t1", "minute", m, field), sketch_of([f"u{j}" for j in range(i * 1_500, 2_500 + i * 1_500)])
        )
    snap = snapshot()
    assert (snap["users"]["active_users"], snap["approximate"]["active_users"]) == (7_000, "exact")
    for i, m in enumerate(minutes):
        redis_conn.set(
            keys.uniques("t1", "minute", m, field), sketch_of([f"u{j}" for j in range(i * 5_000, 5_000 + i * 5_000)])
        )
    snap = snapshot()
    assert abs(snap["users"]["active_users"] - 20_000) <= 200 and snap["approximate"]["active_users"] == "hyperloglog"
    # A minute still in Redis's own HyperLogLog format (written before the sketches): skipped, not an error.
    redis_conn.delete(keys.uniques("t1", "minute", minutes[0], field))
    redis_conn.pfadd(keys.uniques("t1", "minute", minutes[0], field), "old-user")
    snap = snapshot()
    assert abs(snap["users"]["active_users"] - 15_000) <= 150


def test_stream_sends_counters_on_update_and_corrections_for_closed_minutes(
    stack_settings: Settings, redis_conn: redis.Redis, redis_prefix: str
) -> None:
    keys = RealtimeKeys(redis_prefix)
    reader = LiveReader(get_catalogue(), keys, window_s=300)
    closed = int(time.time()) // 60 * 60 - 180
    write_minute(redis_conn, keys, "t1", closed, 3, 0.0, ["a"])

    async def collect() -> list[tuple[str, dict]]:
        client = redis_async_client(stack_settings)
        frames = stream(reader, client, "t1", interval_s=30.0)  # no heartbeat within the test
        got: list[tuple[str, dict]] = []
        try:
            assert await anext(frames) == b"retry: 2000\n\n"
            got.append(_parse(await anext(frames)))  # the first counters, at once
            started = time.monotonic()
            redis_conn.hincrby(keys.counters("t1", closed), counter_field("events", "", STARS), 2)  # a late event
            redis_conn.publish(
                keys.updates("t1"),
                json.dumps({"applied_at": time.time(), "events": 2, "minutes": [closed], "corrections": [closed]}),
            )
            got.append(_parse(await anext(frames)))
            got.append(_parse(await anext(frames)))
            assert time.monotonic() - started < 1.0  # pushed on the update, not on the 30 s heartbeat
        finally:
            await frames.aclose()
            await client.aclose()
        return got

    (e1, first), (e2, correction), (e3, after) = asyncio.run(collect())
    assert (e1, e2, e3) == ("counters", "correction", "counters")
    assert first["totals"]["events"] == 3
    assert correction["events"] == 5 and correction["minute"].startswith(
        time.strftime("%Y-%m-%dT%H:%M", time.gmtime(closed))
    )
    assert after["totals"]["events"] == 5


def _parse(frame: bytes) -> tuple[str, dict]:
    lines = frame.decode().strip().split("\n")
    event = next(line[7:] for line in lines if line.startswith("event: "))
    data = json.loads(next(line[6:] for line in lines if line.startswith("data: ")))
    return event, data
