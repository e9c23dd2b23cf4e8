"""Redis keys of events as the realtime consumer keeps them, written straight from the key layout.

Independent of the consumer and of the query engine: a small loop over events that follows
analytics_core.realtime_keys (minute counter hashes, unique-user sketches per minute and dimension
values, and none of hour or day, as the consumer; sums in micro-units) and the catalogue's metric
definitions.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from typing import Any

import redis

from analytics_core.catalogue import ALL, Catalogue, Metric
from analytics_core.hll import Sketch
from analytics_core.realtime_keys import SUM_SCALE, RealtimeKeys, bucket_start, counter_field, expire_at


def _counts(metric: Metric, event: dict[str, Any]) -> bool:
    if metric.humans_only and event["is_bot"]:
        return False
    return not metric.event_types or event["event_type"] in metric.event_types


def write_realtime(
    conn: redis.Redis,
    keys: RealtimeKeys,
    catalogue: Catalogue,
    tenant_id: str,
    events: Iterable[dict[str, Any]],
    now: float,
    retention_s: int,
) -> list[str]:
    """Write the events' counters and sketches that would not have expired by `now`; the keys written."""
    dims = catalogue.rollup_dimensions
    counters: dict[tuple[int, str], int] = defaultdict(int)
    users: dict[tuple[int, str], set[str]] = defaultdict(set)
    for event in events:
        t = int(event["ts"].timestamp())
        for dimension_set in catalogue.dimension_sets:
            name = catalogue.dimension_set_name(dimension_set)
            values = [event[d] if d in dimension_set else ALL for d in dims]
            for metric_name, metric in catalogue.metrics.items():
                if metric.kind not in ("count", "sum") or not _counts(metric, event):
                    continue
                field = counter_field(metric_name, name, values)
                amount = 1 if metric.kind == "count" else round((event[metric.column or ""] or 0) * SUM_SCALE)
                counters[(bucket_start(t, "minute"), field)] += amount
            if dimension_set not in (catalogue.sketch_dimension_sets or catalogue.dimension_sets):
                continue
            for metric_name, metric in catalogue.metrics.items():
                if metric.kind != "unique" or not _counts(metric, event) or not event["user_key"]:
                    continue
                users[(bucket_start(t, "minute"), counter_field(metric_name, name, values))].add(event["user_key"])
    pipe = conn.pipeline(transaction=False)
    written: set[str] = {keys.alive}
    for (minute, field), amount in counters.items():
        if expire_at(minute, "minute", retention_s) > now:
            key = keys.counters(tenant_id, minute)
            pipe.hincrby(key, field, amount)
            pipe.expireat(key, expire_at(minute, "minute", retention_s))
            written.add(key)
    for (minute, field), members in users.items():
        if expire_at(minute, "minute", retention_s) > now:
            key = keys.uniques(tenant_id, "minute", minute, field)
            pipe.set(key, Sketch.from_keys(sorted(members)).to_bytes())
            pipe.expireat(key, expire_at(minute, "minute", retention_s))
            written.add(key)
    pipe.set(keys.alive, "test", ex=3600)
    pipe.execute()
    return sorted(written)
