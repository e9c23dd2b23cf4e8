"""Query buckets computed from the wall clock alone, for tests that check the engine's (api/engine/timebuckets.py).

A bucket is the wall time cut to the grain and, below a day, the UTC offset in force: the repeated hour of a
fall-back day is a bucket of its own, a 30-minute shift (Australia/Lord_Howe) starts one, a day is one bucket
however long. Every UTC minute of a range is keyed so; a bucket starts at its first minute (the offsets and
clock changes of the zone database fall on whole minutes).
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

WallBucket = tuple[object, ...]


def wall_bucket(t: datetime, grain: str, tz: ZoneInfo) -> WallBucket:
    """The bucket an instant falls in, read from its wall clock in the zone."""
    local = t.astimezone(tz)
    if grain == "day":
        return (local.date(),)
    cut = local.replace(second=0, microsecond=0)
    if grain == "hour":
        cut = cut.replace(minute=0)
    return (cut.replace(tzinfo=None), local.utcoffset())


def bucket_starts(start: datetime, end: datetime, grain: str, tz: ZoneInfo) -> dict[WallBucket, datetime]:
    """Each bucket of [start, end) (aware datetimes) and its first instant (in UTC), in time order."""
    starts: dict[WallBucket, datetime] = {}
    t, end = start.astimezone(UTC), end.astimezone(UTC)  # in UTC: + 1 minute is one minute later, not wall time
    while t < end:
        starts.setdefault(wall_bucket(t, grain, tz), t)
        t += timedelta(minutes=1)
    return starts


def local_midnight(day: date, tz: ZoneInfo) -> datetime:
    """The first instant of a local date (fold 0: a skipped midnight is the clock change's instant)."""
    return datetime.fromtimestamp(datetime(day.year, day.month, day.day, tzinfo=tz).timestamp(), tz)
