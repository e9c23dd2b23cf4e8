"""Time buckets of a query in its IANA time zone, as UTC instants (epoch seconds).

Rollups and Redis keys are UTC, so the engine works with UTC instants throughout and only labels
rows in the query's zone. A day there is 23 or 25 hours long on a daylight-saving change; an hour
in Asia/Kolkata starts at :30 UTC.

The buckets cover exactly the range asked, [start, end): a start or end inside a bucket cuts it,
and that edge bucket is `partial` (it starts at `start`, or ends at `end`). `align="buckets"`
widens the range to whole buckets instead, [floor(start), ceil(end)), as the answer then says.
Granularity "total" is one bucket, the whole range.
"""

from __future__ import annotations

import functools
import math
from bisect import bisect_right
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError, available_timezones

from analytics_core.catalogue import Granularity
from analytics_core.realtime_keys import GRAIN_SECONDS
from api.engine.errors import QueryError

BucketGrain = Literal["minute", "hour", "day", "total"]  # "total": one bucket, the whole range
Align = Literal["exact", "buckets"]

AUTO_MINUTE_UP_TO_S = 3 * 3600  # granularity auto: minute buckets up to 3 hours
AUTO_HOUR_UP_TO_S = 7 * 86400  # hour buckets up to 7 days, day buckets beyond


MAX_ZONE_NAME = 255  # IANA names are at most ~30 characters; longer is never a zone (nor a file name)
# Instants a query may name: bucket arithmetic in any zone (offsets up to ±26 h, days widened to whole days)
# stays far inside datetime's years 1 to 9999 between these.
MIN_INSTANT = datetime(1900, 1, 1, tzinfo=UTC)
MAX_INSTANT = datetime(9999, 1, 1, tzinfo=UTC)


@functools.cache
def known_zones() -> frozenset[str]:
    """The IANA names of the zone database (zoneinfo.available_timezones: the system's and the tzdata package's)."""
    return frozenset(available_timezones())


def zone(name: str) -> ZoneInfo:
    """The zone of an IANA name; QueryError for anything else (a directory such as `America`, a path, a
    name too long for a file, a file that is no zone): only names of the zone database are opened."""
    refused = QueryError("timezone", "iana_zone", f"{name[:64]!r} is not an IANA time zone (e.g. Europe/Berlin)")
    if not name or len(name) > MAX_ZONE_NAME or name not in known_zones():
        raise refused
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError, UnicodeError) as exc:  # OSError: directory, name too long
        raise refused from exc


def instant(value: datetime, tz: ZoneInfo, field: str = "start") -> float:
    """Epoch seconds of a datetime; a naive one is read in `tz` (a repeated wall time: its first occurrence).

    QueryError naming `field` for a time outside MIN_INSTANT .. MAX_INSTANT (a year-1 wall time in Tokyo is
    in year 0 in UTC: datetime cannot even say so).
    """
    refused = QueryError(
        field,
        "supported_range",
        f"{field} must lie between {MIN_INSTANT.date().isoformat()} and {MAX_INSTANT.date().isoformat()} (UTC)",
    )
    try:
        t = (value if value.tzinfo is not None else value.replace(tzinfo=tz)).timestamp()
    except (OverflowError, ValueError) as exc:
        raise refused from exc
    if not MIN_INSTANT.timestamp() <= t < MAX_INSTANT.timestamp():
        raise refused
    return t


def auto_granularity(seconds: float) -> Granularity:
    if seconds <= AUTO_MINUTE_UP_TO_S:
        return "minute"
    return "hour" if seconds <= AUTO_HOUR_UP_TO_S else "day"


def _midnight(day: date, tz: ZoneInfo) -> int:
    # fold=0: a midnight skipped by a clock change maps to the instant of the change, the day's first.
    return int(datetime.combine(day, time(0), tzinfo=tz).timestamp())


def floor_bucket(t: float, grain: Granularity, tz: ZoneInfo) -> int:
    """Start of the bucket of this grain, in `tz`, that holds instant t."""
    local = datetime.fromtimestamp(math.floor(t), tz)
    if grain == "day":
        return _midnight(local.date(), tz)
    if grain == "hour":
        return int(local.replace(minute=0, second=0).timestamp())
    return int(local.replace(second=0).timestamp())


def next_bucket(start: int, grain: Granularity, tz: ZoneInfo) -> int:
    """Start of the bucket after the one starting at `start`."""
    if grain == "day":
        return _midnight(datetime.fromtimestamp(start, tz).date() + timedelta(days=1), tz)
    nxt = floor_bucket(start + GRAIN_SECONDS[grain], grain, tz)
    return nxt if nxt > start else start + GRAIN_SECONDS[grain]  # offsets changing by part of an hour


@dataclass(frozen=True)
class Segment:
    """Consecutive buckets of one size: bucket index = first + (t - start) // size."""

    start: int
    end: int
    size: int
    first: int


@dataclass(frozen=True)
class Buckets:
    grain: BucketGrain
    zone: ZoneInfo
    bounds: tuple[int, ...]  # n + 1 UTC epoch seconds: bucket i is [bounds[i], bounds[i + 1])
    # The first and the last bucket cut by the range (shorter than their grain's bucket there).
    first_partial: bool = False
    last_partial: bool = False

    def partial(self, i: int) -> bool:
        return (i == 0 and self.first_partial) or (i == self.count - 1 and self.last_partial)

    @property
    def count(self) -> int:
        return len(self.bounds) - 1

    @property
    def start(self) -> int:
        return self.bounds[0]

    @property
    def end(self) -> int:
        return self.bounds[-1]

    def index(self, t: float) -> int:
        """Bucket holding instant t (t within the range)."""
        return bisect_right(self.bounds, t) - 1

    def labels(self) -> list[datetime]:
        return [datetime.fromtimestamp(b, self.zone) for b in self.bounds[:-1]]

    def segments(self) -> list[Segment]:
        """The buckets as runs of equal size (one run unless clocks change or days are asked)."""
        out: list[Segment] = []
        bounds = self.bounds
        for i in range(self.count):
            size = bounds[i + 1] - bounds[i]
            last = out[-1] if out else None
            if last and last.size == size and last.end == bounds[i]:
                out[-1] = Segment(last.start, bounds[i + 1], size, last.first)
            else:
                out.append(Segment(bounds[i], bounds[i + 1], size, i))
        return out


def check_bucket_count(start: float, end: float, grain: BucketGrain, tz: ZoneInfo, max_buckets: int) -> int:
    """QueryError when [start, end) needs more than `max_buckets` (by arithmetic, nothing built); the first bucket.

    Buckets of a grain are at most its UTC length apart, less one on a clock change (a 23-hour day).
    """
    if grain == "total":
        return int(start)
    first = floor_bucket(start, grain, tz)
    estimate = math.ceil((end - first) / GRAIN_SECONDS[grain])
    if estimate > max_buckets + 1:
        raise _too_many(estimate, grain, max_buckets)
    return first


def make_buckets(
    start: float, end: float, grain: BucketGrain, tz: ZoneInfo, max_buckets: int, align: Align = "exact"
) -> Buckets:
    """The buckets covering [start, end) (whole buckets with align "buckets"); QueryError past `max_buckets`."""
    if grain == "total":
        return Buckets(grain, tz, (int(start), int(end)))
    first = check_bucket_count(start, end, grain, tz, max_buckets)
    bounds = [first]
    while bounds[-1] < end:
        bounds.append(next_bucket(bounds[-1], grain, tz))
    if len(bounds) - 1 > max_buckets:
        raise _too_many(len(bounds) - 1, grain, max_buckets)
    if align == "buckets":
        return Buckets(grain, tz, tuple(bounds))
    cut_first, cut_last = bounds[0] < start, bounds[-1] > end
    bounds[0], bounds[-1] = int(start), int(end)
    return Buckets(grain, tz, tuple(bounds), cut_first, cut_last)


def _too_many(count: int, grain: BucketGrain, max_buckets: int) -> QueryError:
    return QueryError(
        "granularity",
        "max_buckets",
        f"{count} {grain} buckets asked, at most {max_buckets}: use a coarser granularity or a shorter range",
    )
