"""Which source answers which stretch of a query.

The range splits at the warehouse watermark W (the minute grain's `complete_until`, floored to
the minute) into three stages:

- complete  [start, W): rollups. Every bucket is tiled with the coarsest UTC grain that fits it
  exactly and is complete (ends before that grain's watermark): day rollups for UTC days, hours
  for whole-hour offsets and DST days, minutes at :30/:45 offsets (kept `minute_retention_days`).
- stale     [W, F): past the watermark but older than Redis keeps (F: the first minute Redis
  still holds); rollups only, with a caveat. Empty while the warehouse keeps up.
- live      [F, end): Redis minute counters for additive metrics; rollups (caveat) without Redis.

Unique metrics cannot add a warehouse sketch to a Redis HyperLogLog, so a bucket reaching past W
takes its unique counts from Redis for the whole bucket when Redis still holds every key that
tiles it, else from the warehouse alone (caveat). A query whose dimensions no stored set covers,
or whose buckets need minutes older than the minute retention, is answered from raw events.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Literal

from analytics_core.catalogue import GRANULARITIES, Catalogue, Granularity
from analytics_core.realtime_keys import GRAIN_SECONDS
from api.engine.validation import Query, raw_only_reason

Stage = Literal["complete", "stale", "live"]
COARSEST_FIRST: tuple[Granularity, ...] = tuple(reversed(GRANULARITIES))
KEY_EXPIRY_MARGIN_S = 5  # a Redis key about to expire counts as gone: it could vanish mid-read
_NEVER = -math.inf
_ALWAYS = math.inf


@dataclass(frozen=True)
class Piece:
    grain: Granularity
    start: int
    end: int
    bucket: int
    stage: Stage


@dataclass
class Plan:
    dimension_set: tuple[str, ...] | None  # the stored set that covers the query; None = raw events
    raw_reason: str | None
    watermark: float | None  # the minute grain's complete_until
    realtime_from: int  # W, within the range
    realtime_floor: int  # F: first minute Redis still holds, >= W
    pieces: list[Piece] = field(default_factory=list)
    late_buckets: list[int] = field(default_factory=list)  # buckets reaching past W
    unique_tiles: dict[int, list[tuple[Granularity, int]]] = field(default_factory=dict)  # late bucket → HLL keys

    def pieces_in(self, *stages: Stage) -> list[Piece]:
        return [p for p in self.pieces if p.stage in stages]


def tile(
    start: int, end: int, caps: dict[Granularity, float], minute_from: float
) -> list[tuple[Granularity, int, int]] | None:
    """[start, end) as runs of the coarsest UTC grain that fits; a grain's buckets must end by its cap.

    None when some stretch fits no grain (minutes needed before `minute_from`, or not whole minutes).
    """
    out: list[tuple[Granularity, int, int]] = []
    t = start
    while t < end:
        for grain in COARSEST_FIRST:
            size = GRAIN_SECONDS[grain]
            if t % size or (grain == "minute" and t < minute_from):
                continue
            limit = min(end, caps[grain])
            if limit - t < size:
                continue
            stop = t + int((limit - t) // size) * size
            if grain != "day":  # hand over to the coarser grain at its next boundary
                coarser = GRAIN_SECONDS["day" if grain == "hour" else "hour"]
                stop = min(stop, (t // coarser + 1) * coarser)
            if stop > t:
                if out and out[-1][0] == grain and out[-1][2] == t:
                    out[-1] = (grain, out[-1][1], stop)
                else:
                    out.append((grain, t, stop))
                t = stop
                break
        else:
            return None
    return out


def _raw_reason(query: Query, catalogue: Catalogue) -> tuple[tuple[str, ...] | None, str | None]:
    reason = raw_only_reason(query.dimensions, query.base_metrics, catalogue)
    if reason is not None:
        return None, reason
    unique = any(catalogue.metrics[m].kind == "unique" for m in query.base_metrics)
    return catalogue.covering_set(query.dimensions, unique=unique), None


def plan(
    query: Query,
    catalogue: Catalogue,
    watermarks: dict[str, float],
    now: float,
    minute_retention_days: int,
    realtime_retention_s: int,
) -> Plan:
    """The sources of every stretch of the query's buckets."""
    buckets = query.buckets
    watermark = watermarks.get("minute", max(watermarks.values(), default=None))
    w = buckets.start if watermark is None else int(watermark // 60 * 60)
    w = min(max(w, buckets.start), buckets.end)
    floor = int((now - 60 - realtime_retention_s + KEY_EXPIRY_MARGIN_S) // 60 * 60 + 60)
    f = min(max(floor, w), buckets.end)
    covering, reason = _raw_reason(query, catalogue)
    result = Plan(covering, reason, watermark, w, f)
    if reason:
        return result

    minute_from = math.ceil((now - minute_retention_days * 86400) / 60) * 60
    complete: dict[Granularity, float] = {g: watermarks.get(g, _NEVER) for g in GRANULARITIES}
    fresh = {**complete, "minute": _ALWAYS}  # past W: minutes are the freshest grain
    anyhow: dict[Granularity, float] = dict.fromkeys(GRANULARITIES, _ALWAYS)
    stages: tuple[tuple[Stage, int, int], ...] = (
        ("complete", buckets.start, w),
        ("stale", w, f),
        ("live", f, buckets.end),
    )
    for stage, lo, hi in stages:
        if lo >= hi:
            continue
        for i in range(buckets.index(lo), buckets.count):
            start, end = buckets.bounds[i], buckets.bounds[i + 1]
            if start >= hi:
                break
            a, b = max(start, lo), min(end, hi)
            tiles = tile(a, b, complete, minute_from) if stage == "complete" else tile(a, b, fresh, minute_from)
            if tiles is None and stage != "complete":
                tiles = tile(a, b, anyhow, _NEVER)
            if tiles is None:
                result.dimension_set = None
                since = datetime.fromtimestamp(minute_from, UTC).isoformat()
                result.raw_reason = (
                    f"buckets in {query.timezone} need minute rollups, kept {minute_retention_days} days"
                    f" (since {since}), for earlier times"
                )
                result.pieces = []
                return result
            result.pieces += [Piece(g, s, e, i, stage) for g, s, e in tiles]

    result.late_buckets = list(range(buckets.index(w), buckets.count)) if w < buckets.end else []
    for i in result.late_buckets:
        runs = tile(buckets.bounds[i], buckets.bounds[i + 1], anyhow, _NEVER) or []
        keys = [(g, t) for g, s, e in runs for t in range(s, e, GRAIN_SECONDS[g]) if t <= now]
        if all(now + KEY_EXPIRY_MARGIN_S < t + GRAIN_SECONDS[g] + realtime_retention_s for g, t in keys):
            result.unique_tiles[i] = keys
    return result
