"""Live numbers of a tenant from the realtime layer, and the Server-Sent Events stream that carries them.

The realtime consumer publishes on the tenant's updates channel after every batch it applies; the
stream answers each message with fresh counters at once (so an event shows within the consumer's
batch time), and sends them every `interval` seconds when nothing happens (a heartbeat). A batch
that touched minutes already closed is followed by a `correction` event per restated minute.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import redis
import redis.asyncio

from analytics_core.catalogue import ALL, Catalogue
from analytics_core.realtime_keys import SUM_SCALE, RealtimeKeys, bucket_start, counter_field

log = logging.getLogger("api.live")


def _iso(epoch_s: float) -> str:
    return datetime.fromtimestamp(epoch_s, UTC).isoformat()


class LiveReader:
    """Reads the total-level counters and HLLs the realtime consumer keeps for one tenant."""

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
        return [{"minute": _iso(m), **self._values(raw)} for m, raw in zip(minutes, rows, strict=True)]

    async def snapshot(self, client: redis.asyncio.Redis, tenant_id: str, now: float | None = None) -> dict[str, Any]:
        """Per-minute totals over the live window, their sums, and distinct users seen in the window."""
        now = time.time() if now is None else now
        current = bucket_start(int(now), "minute")
        first = bucket_start(int(now) - self.window_s, "minute")
        minutes = list(range(first, current + 60, 60))
        series = await self.minutes(client, tenant_id, minutes)
        pipe = client.pipeline(transaction=False)
        for name in self.unique:
            field = self._unique_fields[name]
            pipe.pfcount(*[self.keys.uniques(tenant_id, "minute", m, field) for m in minutes])
        counts = await pipe.execute()
        totals = {name: sum(row[name] for row in series) for name, _ in self.additive}
        users = dict(zip(self.unique, (int(c) for c in counts), strict=True))
        for name, (num, den) in self.ratios.items():
            if num in users and den in users:
                totals[name] = users[num] / users[den] if users[den] else None
        return {
            "at": _iso(now),
            "window_s": self.window_s,
            "window_start": _iso(first),
            "totals": totals,
            "users": users,
            "approximate": {name: "hyperloglog" for name in self.unique},
            "minutes": series,
        }


def sse(event: str, data: dict[str, Any], event_id: int | None = None) -> bytes:
    lines = [f"event: {event}"]
    if event_id is not None:
        lines.append(f"id: {event_id}")
    lines.append("data: " + json.dumps(data, separators=(",", ":")))
    return ("\n".join(lines) + "\n\n").encode()


async def stream(
    reader: LiveReader, client: redis.asyncio.Redis, tenant_id: str, interval_s: float
) -> AsyncIterator[bytes]:
    """SSE frames: `counters` at start, after every update and every interval; `correction` per restated minute."""
    yield b"retry: 2000\n\n"
    seq = 0
    pubsub = None
    try:
        while True:
            try:
                if pubsub is None:
                    pubsub = client.pubsub()
                    await pubsub.subscribe(reader.keys.updates(tenant_id))
                    seq += 1
                    yield sse("counters", await reader.snapshot(client, tenant_id), seq)
                message = await _next_message(pubsub, interval_s)
                corrections: set[int] = set()
                updated_at: float | None = None
                while message is not None:  # drain what queued up: one answer covers them all
                    update = json.loads(message["data"])
                    corrections.update(update.get("corrections", ()))
                    updated_at = max(updated_at or 0.0, float(update.get("applied_at", 0.0)))
                    message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=0)
                if corrections:
                    for row in await reader.minutes(client, tenant_id, sorted(corrections)):
                        seq += 1
                        yield sse("correction", row, seq)
                snapshot = await reader.snapshot(client, tenant_id)
                if updated_at is not None:
                    snapshot["updated_at"] = _iso(updated_at)
                seq += 1
                yield sse("counters", snapshot, seq)
            except (redis.RedisError, OSError) as exc:
                log.warning("live stream without Redis: %s", exc)
                if pubsub is not None:
                    await _close(pubsub)
                    pubsub = None
                seq += 1
                yield sse("unavailable", {"error": f"realtime layer unreachable: {exc}", "retry_s": interval_s}, seq)
                await asyncio.sleep(interval_s)
    finally:
        if pubsub is not None:
            await _close(pubsub)


async def _next_message(pubsub: Any, timeout: float) -> dict[str, Any] | None:
    """The next published message within `timeout`, or None; subscribe confirmations are skipped."""
    deadline = time.monotonic() + timeout
    while (left := deadline - time.monotonic()) > 0:
        message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=left)
        if message is not None:
            return dict(message)
    return None


async def _close(pubsub: Any) -> None:
    with contextlib.suppress(redis.RedisError, OSError):
        await pubsub.aclose()
