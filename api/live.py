"""Live numbers of a tenant from the realtime layer, and the Server-Sent Events stream that carries them.

The realtime consumer publishes on the tenant's updates channel after every batch it applies; the
stream answers each message with fresh counters at once (so an event shows within the consumer's
batch time), and sends them every `interval` seconds when nothing happens (a heartbeat). A batch
that touched minutes already closed is followed by a `correction` event per restated minute.
"""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime
from typing import Any

import redis.asyncio

from analytics_core import hll
from analytics_core.catalogue import ALL, Catalogue
from analytics_core.realtime_keys import SUM_SCALE, RealtimeKeys, bucket_start, counter_field, uniques_sketch


def iso(epoch_s: float) -> str:
    return datetime.fromtimestamp(epoch_s, UTC).isoformat()


class LiveReader:
    """Reads the total-level counters and unique-user sketches the realtime consumer keeps for one tenant."""

    def __init__(self, catalogue: Catalogue, keys: RealtimeKeys, window_s: int) -> None:
        stars = [ALL] * len(catalogue.rollup_dimensions)
        self.additive = [(name, m.kind) for name, m in catalogue.metrics.items() if m.additive]
        self.unique = [name for name, m in catalogue.metrics.items() if m.kind == "unique"]
        self.ratios = {name: (m.numerator, m.denominator) for name, m in catalogue.metrics.items() if m.kind == "ratio"}
        self._fields = [counter_field(name, "", stars) for name, _ in self.additive]
        self._unique_fields = {name: counter_field(name, "", stars) for name in self.unique}
        self.keys = keys
        self.window_s = window_s

    def _values(self, raw: list[bytes | None]) -> dict[str, float]:
        out: dict[str, float] = {}
        for (name, kind), value in zip(self.additive, raw, strict=True):
            number = int(value) if value is not None else 0
            out[name] = number / SUM_SCALE if kind == "sum" else number
        return out

    async def minutes(self, client: redis.asyncio.Redis, tenant_id: str, minutes: list[int]) -> list[dict[str, Any]]:
        """Additive totals of these minutes (UTC starts, epoch seconds)."""
        pipe = client.pipeline(transaction=False)
        for minute in minutes:
            pipe.hmget(self.keys.counters(tenant_id, minute), self._fields)
        rows = await pipe.execute()
        return [{"minute": iso(m), **self._values(raw)} for m, raw in zip(minutes, rows, strict=True)]

    async def snapshot(self, client: redis.asyncio.Redis, tenant_id: str, now: float | None = None) -> dict[str, Any]:
        """Per-minute totals over the live window, their sums, and distinct users seen in the window
        (the union of the minutes' sketches)."""
        now = time.time() if now is None else now
        current = bucket_start(int(now), "minute")
        first = bucket_start(int(now) - self.window_s, "minute")
        minutes = list(range(first, current + 60, 60))
        series = await self.minutes(client, tenant_id, minutes)
        pipe = client.pipeline(transaction=False)
        names = [
            self.keys.uniques(tenant_id, "minute", m, self._unique_fields[u]) for u in self.unique for m in minutes
        ]
        for key in names:
            pipe.get(key)
        values = await pipe.execute()
        unions = []
        for i in range(len(self.unique)):
            part = zip(names[i * len(minutes) : (i + 1) * len(minutes)], values[i * len(minutes) :], strict=False)
            unions.append(hll.merge(s for key, v in part if (s := uniques_sketch(v, key)) is not None))
        counts = hll.estimate_many(unions)
        totals = {name: sum(row[name] for row in series) for name, _ in self.additive}
        users = {name: round(float(c)) for name, c in zip(self.unique, counts, strict=True)}
        for name, (num, den) in self.ratios.items():
            if num in users and den in users:
                totals[name] = users[num] / users[den] if users[den] else None
        return {
            "at": iso(now),
            "window_s": self.window_s,
            "window_start": iso(first),
            "totals": totals,
            "users": users,
            # Exact while a union holds at most 8,192 users (a sparse sketch), else within hll.STANDARD_ERROR.
            "approximate": {
                name: "exact" if u.is_sparse else "hyperloglog" for name, u in zip(self.unique, unions, strict=True)
            },
            "minutes": series,
        }


def sse_frame(event: str, data_json: str, event_id: int | None = None) -> bytes:
    """One SSE frame around data already encoded as JSON (the hub encodes once for all streams)."""
    lines = [f"event: {event}"]
    if event_id is not None:
        lines.append(f"id: {event_id}")
    lines.append("data: " + data_json)
    return ("\n".join(lines) + "\n\n").encode()


def sse(event: str, data: dict[str, Any], event_id: int | None = None) -> bytes:
    return sse_frame(event, json.dumps(data, separators=(",", ":")), event_id)
