"""Which source answers which stretch of a query.

The range splits at the warehouse watermark W (the minute grain's `complete_until`, floored to
the minute) into three stages:

- complete  [start, W): rollups. Every bucket is tiled with the coarsest UTC grain that fits it
  exactly and is complete (ends before that grain's watermark): day rollups for UTC days, hours
  for whole-hour offsets and DST days, minutes at :30/:45 offsets (kept `minute_retention_days`).
  What no grain fits (part of a minute at a range edge; minutes older than their retention, at
  :30/:45 offsets or at an edge) is a "raw" piece: the staged events of that stretch.
- stale     [W, F): past the watermark but older than Redis keeps (F: the first minute Redis
  still holds); rollups only, with a caveat. Empty while the warehouse keeps up.
- live      [F, end): Redis minute counters for additive metrics; rollups (caveat) without Redis.
  An end inside the current minute reads that minute whole: the rest of it has not happened.

A bucket cut by the range (timebuckets: `partial`) is tiled like any other: its part inside the
range from the coarsest grains that fit it, down to minutes, then raw events.

Unique metrics: the warehouse's sketches and Redis's are one format (analytics_core/hll.py), so a
bucket reaching past W counts the union of its rollup sketches (everything the warehouse holds of
it) and the Redis minute sketches of its minutes from F on (`unique_minutes`); a bucket with raw
pieces adds the sketch of their users. A user in several is one user; minutes in [W, F) are in
neither whole (the stale caveat). A query whose dimensions no stored set covers, or that starts
inside a minute past W, is answered from raw events alone.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal

from analytics_core.catalogue import GRANULARITIES, Catalogue, Granularity
from analytics_core.realtime_keys import GRAIN_SECONDS
from api.engine.validation import Query, raw_only_reason

Stage = Literal["complete", "stale", "live"]
COARSEST_FIRST: tuple[Granularity, ...] = tuple(reversed(GRANULARITIES))
KEY_EXPIRY_MARGIN_S = 5  # a Redis key about to expire counts as gone: it could vanish mid-read
_NEVER = -math.inf
_ALWAYS = math.inf


PieceGrain = Granularity | Literal["raw"]  # "raw": staged events, where no rollup grain fits


@dataclass(frozen=True)
class Piece:
    grain: PieceGrain
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
    # late bucket → the minutes (UTC starts) of Redis sketches its unique counts add: from F, up to now
    unique_minutes: dict[int, list[int]] = field(default_factory=dict)

    def pieces_in(self, *stages: Stage) -> list[Piece]:
        return [p for p in self.pieces if p.stage in stages]


def _step(t: int, end: int, caps: dict[Granularity, float], minute_from: float) -> tuple[Granularity, int] | None:
    """The coarsest grain whose buckets can tile on from t (and where that run stops), or None."""
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
            return grain, stop
    return None


def _add(out: list[tuple[PieceGrain, int, int]], grain: PieceGrain, start: int, stop: int) -> None:
    if out and out[-1][0] == grain and out[-1][2] == start:
        out[-1] = (grain, out[-1][1], stop)
    else:
        out.append((grain, start, stop))


def tile(
    start: int, end: int, caps: dict[Granularity, float], minute_from: float, raw: bool = False
) -> list[tuple[PieceGrain, int, int]] | None:
    """[start, end) as runs of the coarsest UTC grain that fits; a grain's buckets must end by its cap.

    Where no grain fits (minutes needed before `minute_from`, or not whole minutes): None, or with
    `raw` a "raw" run up to the next minute (staged events answer it).
    """
    out: list[tuple[PieceGrain, int, int]] = []
    t = start
    while t < end:
        step = _step(t, end, caps, minute_from)
        if step is not None:
            _add(out, *step[:1], t, step[1])
            t = step[1]
        elif raw:
            stop = min(end, (t // 60 + 1) * 60)
            _add(out, "raw", t, stop)
            t = stop
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
    # An end inside the current minute (or later): the rest of that minute has not happened, so the
    # minute is read whole past the watermark (Redis counts whole minutes).
    bounds = list(buckets.bounds)
    if bounds[-1] % 60 and bounds[-1] >= now:
        bounds[-1] = (bounds[-1] // 60 + 1) * 60
    end_of_range = bounds[-1]
    stages: tuple[tuple[Stage, int, int], ...] = (
        ("complete", buckets.start, w),
        ("stale", w, max(f, w)),
        ("live", max(f, w), end_of_range),
    )
    for stage, lo, hi in stages:
        if lo >= hi:
            continue
        for i in range(buckets.index(lo), buckets.count):
            start, end = bounds[i], bounds[i + 1]
            if start >= hi:
                break
            a, b = max(start, lo), min(end, hi)
            # Before W, what no rollup grain fits comes from the staged events ("raw" pieces); past it
            # the staged events are incomplete, so a stretch there that fits no grain sends the whole
            # query to raw events (which then end at W).
            if stage == "complete":
                tiles = tile(a, b, complete, minute_from, raw=True)
            else:
                tiles = tile(a, b, fresh, minute_from) or tile(a, b, anyhow, _NEVER)
            if tiles is None:
                result.dimension_set = None
                result.raw_reason = "the range starts inside a minute past the watermark: Redis counts whole minutes"
                result.pieces = []
                return result
            result.pieces += [Piece(g, s, e, i, stage) for g, s, e in tiles]

    result.late_buckets = list(range(buckets.index(w), buckets.count)) if w < buckets.end else []
    last = int(now // 60 * 60)  # the current minute: later ones have no keys yet
    for i in result.late_buckets:
        minutes = list(range(max(bounds[i], f), min(bounds[i + 1], last + 60), 60))
        if minutes:
            result.unique_minutes[i] = minutes
    return result
