"""Plausible ranges of the canonical event's numeric fields, shared by every stage that handles events.

The collector checks one event at a time (`revenue_rule`, `client_time_rule`, `event_time_rule`); the
warehouse loader and the realtime consumer check whole decoded batches at once (`out_of_bounds`, numpy
over the Arrow columns), so a record that bypassed the collector (produced straight onto
tracking.events, or accepted before these bounds existed) is dropped by both alike: the loader
dead-letters it (reason `out_of_range`), the realtime consumer skips and counts it.

The rules, each with its reason:

- `revenue` (the only number of the model) is finite and at most `max_abs_revenue` in absolute value.
  The hard ceiling is 2**53 micro-units (≈ 9.007e9 currency units): the largest amount a double holds
  to the micro-unit, which the warehouse's DOUBLE column, the realtime layer's integer micro-unit
  counters (analytics_core.realtime_keys.SUM_SCALE) and the query API's floats all need to agree.
- every timestamp lies in [1900-01-01, 2200-01-01) UTC: what any datetime type represents, after any
  time-zone shift (pandas' nanosecond timestamps stop at 1677 and 2262, BigQuery at years 1 and 9999,
  Python's datetime at 1 and 9999), whatever a client's clock says;
- the event time (`timestamp`, after skew correction) is at most `max_age_us` before `received_at`
  and at most `max_future_us` after it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa

from analytics_core.events import to_micros
from analytics_core.realtime_keys import SUM_SCALE

if TYPE_CHECKING:
    from analytics_core.settings import Settings

EXACT_REVENUE_LIMIT = 2**53 / SUM_SCALE  # 9_007_199_254.740992 currency units
MIN_TIME_US = to_micros(datetime(1900, 1, 1, tzinfo=UTC))
MAX_TIME_US = to_micros(datetime(2200, 1, 1, tzinfo=UTC))  # exclusive
TIME_WINDOW = "between 1900-01-01 and 2200-01-01 UTC"
# The defaults, repeated in analytics_core/settings.py (tests/unit/test_bounds.py checks they agree).
DEFAULT_MAX_ABS_REVENUE = 1e9
DEFAULT_MAX_EVENT_AGE_DAYS = 366
DEFAULT_MAX_FUTURE_SKEW_S = 24 * 3600
_DAY_US = 86_400_000_000


def _number(value: float) -> str:
    return f"{value:.15g}"


def _span(us: int) -> str:
    """A duration in words: whole days, else whole hours, else seconds."""
    if us % _DAY_US == 0 and us >= 2 * _DAY_US:
        return f"{us // _DAY_US} days"
    if us % 3_600_000_000 == 0:
        return f"{us // 3_600_000_000} h"
    return f"{us / 1_000_000:g} s"


@dataclass(frozen=True)
class Bounds:
    max_abs_revenue: float = DEFAULT_MAX_ABS_REVENUE
    max_age_us: int = DEFAULT_MAX_EVENT_AGE_DAYS * _DAY_US
    max_future_us: int = DEFAULT_MAX_FUTURE_SKEW_S * 1_000_000

    def __post_init__(self) -> None:
        if not 0 < self.max_abs_revenue <= EXACT_REVENUE_LIMIT:
            raise ValueError(f"max_abs_revenue must be in (0, {EXACT_REVENUE_LIMIT}], got {self.max_abs_revenue}")
        if self.max_age_us < 0 or self.max_future_us < 0:
            raise ValueError("max_age_us and max_future_us must not be negative")

    @classmethod
    def from_settings(cls, settings: Settings) -> Bounds:
        return cls(
            max_abs_revenue=settings.bounds_max_abs_revenue,
            max_age_us=settings.bounds_max_event_age_days * _DAY_US,
            max_future_us=settings.bounds_max_future_skew_s * 1_000_000,
        )

    # One value at a time (the collector): None when the value is fine, else the rule it breaks.

    def revenue_rule(self, value: float) -> str | None:
        if not math.isfinite(value):
            return "must be a finite number"
        if abs(value) > self.max_abs_revenue:
            limit = _number(self.max_abs_revenue)
            return f"must be between -{limit} and {limit} (bounds_max_abs_revenue)"
        return None

    @staticmethod
    def client_time_rule(us: int) -> str | None:
        """A time as a client's clock gave it (timestamp, originalTimestamp, sentAt)."""
        return None if MIN_TIME_US <= us < MAX_TIME_US else f"must be {TIME_WINDOW}"

    def event_time_rule(self, timestamp: int, received_at: int) -> str | None:
        """The skew-corrected event time against the server's receipt time."""
        if timestamp - received_at > self.max_future_us:
            return f"more than {_span(self.max_future_us)} after receivedAt"
        if received_at - timestamp > self.max_age_us:
            return f"more than {_span(self.max_age_us)} before receivedAt (bounds_max_event_age_days)"
        if not MIN_TIME_US <= timestamp < MAX_TIME_US:
            return f"must be {TIME_WINDOW}"
        return None

    # Whole batches (the loader and the realtime consumer).

    def out_of_bounds(self, table: pa.Table) -> np.ndarray:
        """Mask of the rows (canonical columns) that break a rule; vectorised, no Python per row."""
        n = table.num_rows
        bad = np.zeros(n, dtype=bool)
        if not n:
            return bad
        revenue = _numpy(table.column("revenue"), 0.0)
        bad |= ~(np.abs(revenue) <= self.max_abs_revenue)  # NaN compares False: caught too
        received, timestamp = _micros(table, "received_at"), _micros(table, "timestamp")
        for column in (received, timestamp, _micros(table, "original_timestamp"), _micros(table, "sent_at")):
            bad |= (column < MIN_TIME_US) | (column >= MAX_TIME_US)
        # A difference can wrap only for rows already marked (a time outside the window).
        bad |= (timestamp - received > self.max_future_us) | (received - timestamp > self.max_age_us)
        return bad

    def detail(self, row: dict[str, Any]) -> str:
        """`<field>: <rule>` of the first rule a row (canonical field → value, times in µs) breaks."""
        revenue = row.get("revenue")
        if revenue is not None and (rule := self.revenue_rule(revenue)) is not None:
            return f"revenue: {rule}"
        if (rule := self.client_time_rule(row["received_at"])) is not None:
            return f"received_at: {rule}"
        if (rule := self.event_time_rule(row["timestamp"], row["received_at"])) is not None:
            return f"timestamp: {rule}"
        for name in ("original_timestamp", "sent_at"):
            value = row.get(name)
            if value is not None and (rule := self.client_time_rule(value)) is not None:
                return f"{name}: {rule}"
        return "event: within the bounds"  # not reached for a row out_of_bounds() marks

    def details(self, table: pa.Table, rows: np.ndarray) -> list[str]:
        """`detail` of each of `rows` (indexes into the table): Python per bad row only."""
        names = ["revenue", "timestamp", "received_at", "original_timestamp", "sent_at"]
        picked = table.select(names).take(pa.array(rows, pa.int64()))
        columns = {name: _micros_list(picked.column(name)) for name in names[1:]}
        columns["revenue"] = picked.column("revenue").to_pylist()
        return [self.detail({name: columns[name][i] for name in names}) for i in range(len(rows))]


def _numpy(column: pa.ChunkedArray, fill: float) -> np.ndarray:
    return column.fill_null(fill).to_numpy()


def _micros(table: pa.Table, name: str) -> np.ndarray:
    """Microseconds of a timestamp column; nulls as 0 (inside every window)."""
    column = table.column(name)
    return column.cast(pa.int64()).fill_null(0).to_numpy()


def _micros_list(column: pa.ChunkedArray) -> list[int | None]:
    return column.cast(pa.int64()).to_pylist()


def describe(bounds: Bounds) -> str:
    """One line for logs: the bounds in force."""
    return (
        f"|revenue| <= {_number(bounds.max_abs_revenue)}, event time within {_span(bounds.max_age_us)} before and "
        f"{_span(bounds.max_future_us)} after receipt, every time {TIME_WINDOW}"
    )
