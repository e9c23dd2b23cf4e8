"""What the realtime layer must hold, computed one event at a time in plain Python, and what Redis holds.

Shared by the unit, integration and end-to-end tests of realtime/; nothing here uses realtime/.
"""

from __future__ import annotations

import json
import math
import time
import uuid
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import redis
from confluent_kafka import TopicPartition

from analytics_core import hll
from analytics_core.catalogue import Catalogue
from analytics_core.clients import kafka_consumer
from analytics_core.hll import Sketch
from analytics_core.realtime_keys import SUM_SCALE, RealtimeKeys, counter_field
from analytics_core.registry import TopicSchemaStore
from analytics_core.serde import EventDeserializer, WireFormatError
from analytics_core.settings import Settings
from analytics_core.topics import EVENTS_SUBJECT, Topics

Counters = dict[tuple[str, int], dict[str, int]]
Uniques = dict[tuple[str, int, str], set[str]]  # (tenant, minute, field) → users: sketches are per minute only


def naive(catalogue: Catalogue, events: list[dict[str, Any]]) -> tuple[Counters, Uniques]:
    """Minute counters and minute unique-user sets, one event at a time, from the rules of the dbt rollups."""
    dims = [name for name, d in catalogue.dimensions.items() if d.rollup]
    counters: dict[tuple[str, int], dict[str, int]] = defaultdict(lambda: defaultdict(int))
    uniques: dict[tuple[str, int, str], set[str]] = defaultdict(set)
    for e in events:
        seconds = e["timestamp"] // 1_000_000
        values = {d: e[d] if e[d] is not None else "unknown" for d in dims}
        user = e["user_id"] if e["user_id"] is not None else e["anonymous_id"]
        for name, m in catalogue.metrics.items():
            # `purchase` among a metric's event types: the event's tenant's purchase event types.
            wanted = catalogue.purchases.expand(m.event_types, e["tenant_id"])
            if (m.humans_only and e["is_bot"]) or (wanted and e["event_type"] not in wanted):
                continue
            if m.kind in ("count", "sum"):
                amount = 1 if m.kind == "count" else round((e[m.column or ""] or 0.0) * SUM_SCALE)
                for dset in catalogue.dimension_sets:
                    set_name = ",".join(d for d in dims if d in dset)
                    f = counter_field(name, set_name, [values[d] if d in dset else "*" for d in dims])
                    counters[(e["tenant_id"], seconds - seconds % 60)][f] += amount
            elif m.kind == "unique" and user is not None:
                for dset in catalogue.sketch_dimension_sets:
                    set_name = ",".join(d for d in dims if d in dset)
                    f = counter_field(name, set_name, [values[d] if d in dset else "*" for d in dims])
                    uniques[(e["tenant_id"], seconds - seconds % 60, f)].add(user)
    nonzero = {k: {f: v for f, v in cell.items() if v} for k, cell in counters.items()}
    return {k: cell for k, cell in nonzero.items() if cell}, dict(uniques)


@dataclass
class Expected:
    counters: Counters
    uniques: Uniques
    applied: int = 0
    duplicates: int = 0
    too_old: int = 0
    undecodable: int = 0
    out_of_range: int = 0
    offsets: dict[str, dict[int, int]] = field(default_factory=dict)  # tenant → partition → last applied
    events: list[dict[str, Any]] = field(default_factory=list)


def expected_from(
    catalogue: Catalogue, records: list[tuple[int, int, dict[str, Any] | None]], now: float, retention_s: int
) -> Expected:
    """Records (partition, offset, event or None when undecodable) → what Redis must hold.

    First copy of each (tenant, event id) in offset order (copies share their key, so their partition);
    events older than now - retention_s are skipped; so are events outside the bounds (default
    settings: see `plausible`), counted as out_of_range, and events whose properties are not JSON and
    tenant ids with a brace (not a Redis hash tag), counted as undecodable.
    """
    seen: set[tuple[str, str]] = set()
    out = Expected({}, {})
    for part, off, e in sorted(records, key=lambda r: (r[0], r[1])):
        if e is None:
            out.undecodable += 1
            continue
        if not plausible(e):
            out.out_of_range += 1
            continue
        if not _is_json_object(e["properties"]) or "{" in e["tenant_id"] or "}" in e["tenant_id"]:
            out.undecodable += 1
            continue
        if e["timestamp"] < (now - retention_s) * 1_000_000:
            out.too_old += 1
            continue
        if (e["tenant_id"], e["event_id"]) in seen:
            out.duplicates += 1
            continue
        seen.add((e["tenant_id"], e["event_id"]))
        out.applied += 1
        out.events.append(e)
        last = out.offsets.setdefault(e["tenant_id"], {})
        last[part] = max(last.get(part, -1), off)
    out.counters, out.uniques = naive(catalogue, out.events)
    return out


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_LOW_US = (datetime(1900, 1, 1, tzinfo=UTC) - _EPOCH) // timedelta(microseconds=1)
_HIGH_US = (datetime(2200, 1, 1, tzinfo=UTC) - _EPOCH) // timedelta(microseconds=1)
_DAY_US = 86_400_000_000


def plausible(e: dict[str, Any], max_revenue: float = 1e9, max_age_days: int = 366, future_s: int = 86_400) -> bool:
    """The documented bounds (docs/COLLECTOR.md), one event in plain Python: revenue finite with |r| <= 1e9;
    every time in [1900, 2200) UTC; the event time at most 366 days before and 24 h after receipt."""
    r = e.get("revenue")
    if r is not None and not (math.isfinite(r) and abs(r) <= max_revenue):
        return False
    times = [e[k] for k in ("timestamp", "received_at", "original_timestamp", "sent_at") if e.get(k) is not None]
    if any(not _LOW_US <= t < _HIGH_US for t in times):
        return False
    return -max_age_days * _DAY_US <= e["timestamp"] - e["received_at"] <= future_s * 1_000_000


def _is_json_object(text: str) -> bool:
    try:
        return isinstance(json.loads(text), dict)
    except ValueError:
        return False


def read_records(settings: Settings, timeout: float = 30.0) -> list[tuple[int, int, dict[str, Any] | None]]:
    """Every record of tracking.events up to the current end: (partition, offset, decoded event or None)."""
    topic = Topics.from_settings(settings).events
    store = TopicSchemaStore(settings)
    decode = EventDeserializer(store.ids_for(EVENTS_SUBJECT))
    store.close()
    consumer = kafka_consumer(settings, f"test.{uuid.uuid4().hex}")
    try:
        parts = consumer.list_topics(topic, timeout=timeout).topics[topic].partitions
        ends = {p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=timeout)[1] for p in parts}
        consumer.assign([TopicPartition(topic, p, 0) for p in parts])
        out: list[tuple[int, int, dict[str, Any] | None]] = []
        done = {p for p, end in ends.items() if end == 0}
        deadline = time.monotonic() + timeout
        while len(done) < len(ends):
            if time.monotonic() > deadline:
                raise AssertionError(f"reading back {topic}: partitions {set(ends) - done} not read to the end")
            for msg in consumer.consume(num_messages=5_000, timeout=0.5):
                if msg.error() is not None:
                    raise AssertionError(f"reading back {topic}: {msg.error()}")
                part, off = msg.partition() or 0, msg.offset() or 0
                try:
                    event: dict[str, Any] | None = decode(msg.value() or b"")
                except WireFormatError:
                    event = None
                out.append((part, off, event))
                if off + 1 >= ends[part]:
                    done.add(part)
        return out
    finally:
        consumer.close()


def redis_counters(client: redis.Redis, prefix: str, cells: Any) -> Counters:
    """The minute-counters hashes of these (tenant, minute) cells that exist: (tenant, minute) → field → integer.

    The cells are named rather than found with SCAN, which walks every key of a shared Redis.
    """
    keys = RealtimeKeys(prefix)
    cells = sorted(set(cells))
    pipe = client.pipeline(transaction=False)
    for tenant, minute in cells:
        pipe.hgetall(keys.counters(tenant, minute))
    found = zip(cells, pipe.execute(), strict=True)
    return {cell: {f.decode(): int(v) for f, v in stored.items()} for cell, stored in found if stored}


def written_keys(prefix: str, want: Expected) -> list[str]:
    """Every key the consumer writes for these events (named: SCAN walks every key of a shared Redis)."""
    keys = RealtimeKeys(prefix)
    hours = {(e["tenant_id"], e["received_at"] // 3_600_000_000 * 3600) for e in want.events}
    return [
        *(keys.counters(t, m) for t, m in want.counters),
        *(keys.uniques(t, "minute", m, f) for t, m, f in want.uniques),
        *(keys.seen(t, h) for t, h in hours),
        *(keys.offsets(t) for t in want.offsets),
        keys.stats,
        keys.alive,
    ]


def coarser_uniques_keys(prefix: str, uniques: Uniques) -> list[str]:
    """The hour and day uniques keys of the same users and fields, which the consumer no longer writes (the API
    joins the warehouse's sketch before the watermark to the minute sketches after it)."""
    keys = RealtimeKeys(prefix)
    out = {keys.uniques(t, "hour", m - m % 3600, f) for t, m, f in uniques}
    out |= {keys.uniques(t, "day", m - m % 86400, f) for t, m, f in uniques}
    return sorted(out)


def hash_of(client: redis.Redis, key: str) -> dict[str, str]:
    """A Redis hash as text (redis-py's types also allow its asyncio client)."""
    stored: Any = client.hgetall(key)
    return {k.decode(): v.decode() for k, v in stored.items()}


def sketches_of(client: redis.Redis, names: list[str]) -> list[bytes | None]:
    """The values of uniques keys (GET, pipelined)."""
    pipe = client.pipeline(transaction=False)
    for name in names:
        pipe.get(name)
    return list(pipe.execute())


def assert_sketches_match(client: redis.Redis, prefix: str, uniques: Uniques) -> None:
    """Every uniques key holds the sketch of exactly its expected users (the same set or registers as
    analytics_core/hll.py's Sketch.from_keys of them), and its count is exact up to SPARSE_MAX users, within
    4 standard errors above (and within 1 % summed over those keys)."""
    keys = RealtimeKeys(prefix)
    names = [keys.uniques(t, "minute", m, f) for t, m, f in uniques]
    dense_true = dense_est = 0.0
    for k, value in zip(uniques, sketches_of(client, names), strict=True):
        assert value is not None, f"{k}: no sketch"
        got = Sketch.from_bytes(value)
        users = uniques[k]
        assert got == Sketch.from_keys(sorted(users)), f"{k}: not the sketch of its {len(users)} users"
        if len(users) <= hll.SPARSE_MAX:
            assert got.is_sparse and got.estimate() == len(users)
        else:
            assert not got.is_sparse and abs(got.estimate() - len(users)) <= 4 * hll.STANDARD_ERROR * len(users)
            dense_true += len(users)
            dense_est += got.estimate()
    assert abs(dense_est - dense_true) <= 0.01 * dense_true
