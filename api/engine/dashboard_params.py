"""A dashboard load's parameters: its range resolved in its time zone, its filters, and what they hash to.

A relative range (analytics_core/dashboards.py, RELATIVE_RANGES) is `count` whole units of its unit in the
zone, the current one last: last_7d at 2026-12-06T11:40 in Europe/Berlin is [2026-11-30T00:00+01:00,
2026-12-07T00:00+01:00), every load that day the same range. Its numbers are counted up to `cut`, the end of
the current minute (nothing after now is asked: no empty future buckets), so the answer changes, and is
cached anew, once a minute at most. An absolute range `<start>/<end>` is taken as asked (to the second).
A range that reaches now is `open`; its previous period (number tiles) is the same range one period earlier,
counted up to the same point: as far into it as now is into the current one.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from zoneinfo import ZoneInfo

from analytics_core.dashboards import RELATIVE_RANGES, Unit
from analytics_core.settings import Settings
from api.engine import timebuckets
from api.engine.errors import QueryError
from api.engine.validation import Condition

MAX_FILTERS = 8  # dimension filters a load may add
MAX_FILTER_LENGTH = 200  # characters of one `filter` parameter: with MAX_FILTERS, under 1,000 values in all
FILTER_OPS = ("eq", "in", "not_in")
_FILTER = re.compile(r"^([a-z_][a-z0-9_]*):(eq|in|not_in):(.*)$", re.DOTALL)
_DATE = r"\d{4}-\d{2}-\d{2}"
_TIME = _DATE + r"(?:[T ]\d{2}:\d{2}(?::\d{2}(?:\.\d{1,6})?)?(?:Z|[+-]\d{2}:\d{2})?)?"
ABSOLUTE_PATTERN = f"{_TIME}/{_TIME}"
RANGE_PATTERN = f"^(?:{'|'.join(RELATIVE_RANGES)}|{ABSOLUTE_PATTERN})$"


@dataclass(frozen=True)
class Period:
    """[start, end) in epoch seconds; numbers counted over [start, cut)."""

    expression: str
    start: int
    end: int
    cut: int
    open: bool
    unit: Unit | None  # relative ranges: their unit; None: absolute
    count: int = 0

    def previous(self, zone: ZoneInfo) -> tuple[int, int]:
        """The previous period, counted as far into it as this one is counted into itself."""
        if self.unit is None:
            length = self.end - self.start
            return self.start - length, self.cut - length
        first = shift(self.start, self.unit, -self.count, zone)
        return first, min(first + (self.cut - self.start), self.start)


def _midnight(day: date, zone: ZoneInfo) -> int:
    return int(datetime.combine(day, time(0), tzinfo=zone).timestamp())  # a skipped midnight: the change's instant


def shift(t: int, unit: Unit, n: int, zone: ZoneInfo) -> int:
    """The bucket start `n` units of `unit` from the bucket start t (n < 0: back), in the zone."""
    if unit == "minute":
        return t + 60 * n
    if unit == "hour":
        for _ in range(abs(n)):
            t = timebuckets.next_bucket(t, "hour", zone) if n > 0 else timebuckets.floor_bucket(t - 1, "hour", zone)
        return t
    local = datetime.fromtimestamp(t, zone).date()
    if unit == "day":
        return _midnight(local + timedelta(days=n), zone)
    months = local.year * 12 + local.month - 1 + n
    return _midnight(date(months // 12, months % 12 + 1, 1), zone)


def floor_unit(t: float, unit: Unit, zone: ZoneInfo) -> int:
    if unit == "month":
        return _midnight(datetime.fromtimestamp(math.floor(t), zone).date().replace(day=1), zone)
    return timebuckets.floor_bucket(t, unit, zone)


def relative(expression: str, zone: ZoneInfo, now: float) -> Period:
    """A relative range at `now`: its `count` whole units, the current one last, counted up to now's minute's end."""
    unit, count = RELATIVE_RANGES[expression]
    current = floor_unit(now, unit, zone)
    start, end = shift(current, unit, 1 - count, zone), shift(current, unit, 1, zone)
    return Period(expression, start, end, min(end, minute_end(now)), True, unit, count)


def minute_end(now: float) -> int:
    return int(now // 60 * 60 + 60)


def absolute(expression: str, zone: ZoneInfo, now: float, settings: Settings) -> Period:
    """`<start>/<end>` as asked (dates or date-times; without an offset read in the zone), to the second."""
    first, _, last = expression.partition("/")
    bounds = []
    for text in (first, last):
        try:
            value = datetime.fromisoformat(text)
        except ValueError as exc:
            raise QueryError("range", "iso_8601", f"{text[:40]!r} is not an ISO 8601 date or date-time") from exc
        try:
            bounds.append(math.floor(timebuckets.instant(value, zone, "range")))
        except QueryError as exc:
            raise QueryError("range", exc.rule, exc.message) from None
    start, end = bounds
    if end <= start:
        raise QueryError("range", "after_start", "the range's end must be after its start")
    if end - start > settings.api_max_range_days * 86400:
        raise QueryError("range", "max_range_days", f"the range may span at most {settings.api_max_range_days} days")
    reaches_now = end > now
    cut = end if not reaches_now or start >= minute_end(now) else min(end, minute_end(now))
    return Period(expression, start, end, cut, reaches_now, None)


def resolve(expression: str, zone: ZoneInfo, now: float, settings: Settings) -> Period:
    """The range of a `range` parameter; QueryError (field `range`) naming the rule it breaks."""
    if expression in RELATIVE_RANGES:
        return relative(expression, zone, now)
    if not re.fullmatch(ABSOLUTE_PATTERN, expression):
        raise QueryError(
            "range",
            "range_syntax",
            f"{expression[:60]!r} is not a range: one of {', '.join(RELATIVE_RANGES)}, or <start>/<end> in ISO 8601"
            " (e.g. 2026-11-01/2026-11-08)",
        )
    return absolute(expression, zone, now, settings)


def parse_filters(texts: list[str], dimensions: list[str], settings: Settings) -> tuple[Condition, ...]:
    """`dimension:op:values` parameters; `in` and `not_in` values comma-separated, `eq` one value (commas and all)."""
    if len(texts) > MAX_FILTERS:
        raise QueryError("filter", "max_filters", f"{len(texts)} filters, at most {MAX_FILTERS}")
    out: list[Condition] = []
    for i, text in enumerate(texts):
        field = f"filter[{i}]"
        if len(text) > MAX_FILTER_LENGTH:
            raise QueryError(field, "max_length", f"longer than {MAX_FILTER_LENGTH} characters")
        found = _FILTER.match(text)
        if found is None:
            raise QueryError(
                field, "filter_syntax", "a filter is dimension:op:values, e.g. country:eq:DE or device:in:mobile,tablet"
            )
        dimension, op, rest = found.groups()
        if dimension not in dimensions:
            raise QueryError(
                field, "catalogue_dimension", f"unknown dimension {dimension!r}; known: {', '.join(dimensions)}"
            )
        try:
            rest.encode()
        except UnicodeEncodeError as exc:
            raise QueryError(field, "utf8", "not a valid Unicode string") from exc
        values = (rest,) if op == "eq" else tuple(sorted(set(rest.split(","))))
        out.append(Condition(dimension, op, values))
    total = sum(len(c.values) for c in out)
    if total > settings.api_max_filter_values:
        raise QueryError(
            "filter", "max_filter_values", f"{total} filter values in all, at most {settings.api_max_filter_values}"
        )
    return tuple(out)


@dataclass(frozen=True)
class View:
    """What one load asks of a dashboard: the range, its zone, the filters it adds to every metric tile."""

    period: Period
    timezone: str
    zone: ZoneInfo
    filters: tuple[Condition, ...]

    def question(self) -> dict[str, object]:
        """Everything the answer depends on besides the data and the definitions: what the cache key hashes."""
        p = self.period
        return {
            "range": p.expression,
            "start": p.start,
            "end": p.end,
            "cut": p.cut,
            "open": p.open,
            "timezone": self.timezone,
            "filters": [[c.dimension, c.op, list(c.values)] for c in self.filters],
        }


def view(
    expression: str, timezone: str, filters: list[str], dimensions: list[str], now: float, settings: Settings
) -> View:
    """The parameters of one load checked and resolved, or QueryError naming the parameter and the rule."""
    zone = timebuckets.zone(timezone)
    return View(resolve(expression, zone, now, settings), timezone, zone, parse_filters(filters, dimensions, settings))
