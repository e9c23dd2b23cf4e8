"""Query buckets in IANA time zones, checked against boundaries computed directly with zoneinfo."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import duckdb
import pytest

from api.engine.errors import QueryError
from api.engine.sql.parts import bucket_index
from api.engine.timebuckets import auto_granularity, make_buckets, zone

NEW_YORK = ZoneInfo("America/New_York")
KOLKATA = ZoneInfo("Asia/Kolkata")


def test_new_york_days_around_both_dst_changes_are_23_and_25_hours() -> None:
    for first, long_day, hours in ((datetime(2026, 3, 6), 2, 23), (datetime(2026, 10, 30), 2, 25)):
        start = datetime(first.year, first.month, first.day, tzinfo=NEW_YORK).timestamp()
        end = (datetime(first.year, first.month, first.day, tzinfo=NEW_YORK) + timedelta(days=5)).timestamp()
        buckets = make_buckets(start, end, "day", NEW_YORK, 100)
        expected = [
            int(datetime.combine((first + timedelta(days=i)).date(), datetime.min.time(), NEW_YORK).timestamp())
            for i in range(6)
        ]
        assert list(buckets.bounds) == expected
        sizes = [(b - a) / 3600 for a, b in zip(buckets.bounds, buckets.bounds[1:], strict=False)]
        assert sizes[long_day] == hours
        assert all(s == 24 for i, s in enumerate(sizes) if i != long_day)
        assert [label.hour for label in buckets.labels()] == [0] * 5


def test_new_york_hours_through_the_fall_back_repeat_one_o_clock() -> None:
    start = datetime(2026, 11, 1, 4, tzinfo=UTC).timestamp()  # 00:00 EDT
    buckets = make_buckets(start, start + 4 * 3600, "hour", NEW_YORK, 100)
    assert [b - buckets.start for b in buckets.bounds] == [0, 3600, 7200, 10800, 14400]
    labels = buckets.labels()
    assert [(label.hour, label.utcoffset()) for label in labels] == [
        (0, timedelta(hours=-4)),
        (1, timedelta(hours=-4)),
        (1, timedelta(hours=-5)),
        (2, timedelta(hours=-5)),
    ]


def test_kolkata_hours_and_days_start_at_half_past_utc() -> None:
    start = datetime(2026, 3, 5, tzinfo=KOLKATA).timestamp()
    hours = make_buckets(start, start + 6 * 3600, "hour", KOLKATA, 100)
    assert all(datetime.fromtimestamp(b, UTC).minute == 30 for b in hours.bounds)
    days = make_buckets(start, start + 3 * 86400, "day", KOLKATA, 100)
    assert [datetime.fromtimestamp(b, UTC).strftime("%d %H:%M") for b in days.bounds] == [
        "04 18:30",
        "05 18:30",
        "06 18:30",
        "07 18:30",
    ]


def test_kathmandu_quarter_hour_offset() -> None:
    tz = zone("Asia/Kathmandu")
    start = datetime(2026, 6, 1, 10, 10, tzinfo=tz).timestamp()
    buckets = make_buckets(start, start + 3600, "hour", tz, 100, "buckets")
    assert datetime.fromtimestamp(buckets.start, UTC).minute == 15
    assert buckets.labels()[0] == datetime(2026, 6, 1, 10, tzinfo=tz)
    exact = make_buckets(start, start + 3600, "hour", tz, 100)
    assert exact.labels() == [datetime(2026, 6, 1, 10, 10, tzinfo=tz), datetime(2026, 6, 1, 11, tzinfo=tz)]
    assert datetime.fromtimestamp(exact.bounds[1], UTC).minute == 15
    assert [exact.partial(i) for i in range(exact.count)] == [True, True]


def test_a_day_whose_midnight_is_skipped_starts_at_the_clock_change() -> None:
    tz = zone("America/Santiago")  # 2026-09-06: clocks jump from 00:00 to 01:00
    start = datetime(2026, 9, 5, 12, tzinfo=tz).timestamp()
    buckets = make_buckets(start, start + 2 * 86400, "day", tz, 100)
    second = buckets.labels()[1]
    assert (second.date(), second.hour) == (datetime(2026, 9, 6).date(), 1)
    assert datetime.fromtimestamp(buckets.bounds[1] - 1, tz).date() == datetime(2026, 9, 5).date()
    assert buckets.bounds[2] - buckets.bounds[1] == 23 * 3600


def test_the_range_widens_to_whole_buckets_only_when_asked() -> None:
    start = datetime(2026, 3, 5, 10, 17, 23, tzinfo=UTC).timestamp()
    end = datetime(2026, 3, 5, 12, 17, tzinfo=UTC).timestamp()
    buckets = make_buckets(start, end, "hour", zone("UTC"), 100, "buckets")
    assert datetime.fromtimestamp(buckets.start, UTC).hour == 10
    assert datetime.fromtimestamp(buckets.end, UTC).hour == 13
    assert buckets.count == 3 and not buckets.first_partial and not buckets.last_partial
    exact = make_buckets(start, end, "hour", zone("UTC"), 100)
    assert (exact.start, exact.end, exact.count) == (start, end, 3)
    assert [exact.partial(i) for i in range(3)] == [True, False, True]
    aligned = make_buckets(start - 1043, end + 2580, "hour", zone("UTC"), 100)  # 10:00 to 13:00: whole hours
    assert aligned.count == 3 and not aligned.first_partial and not aligned.last_partial


def test_total_is_one_bucket_over_the_range() -> None:
    tz = zone("America/New_York")
    start = datetime(2026, 3, 5, 10, 17, tzinfo=tz).timestamp()
    buckets = make_buckets(start, start + 40 * 86400, "total", tz, 1)
    assert buckets.bounds == (start, start + 40 * 86400) and not buckets.partial(0)


def test_auto_granularity_thresholds() -> None:
    assert auto_granularity(3 * 3600) == "minute"
    assert auto_granularity(3 * 3600 + 1) == "hour"
    assert auto_granularity(7 * 86400) == "hour"
    assert auto_granularity(7 * 86400 + 1) == "day"


def test_too_many_buckets_and_unknown_zones_are_refused() -> None:
    with pytest.raises(QueryError) as too_many:
        make_buckets(0, 86400 * 30, "minute", zone("UTC"), 10_000)
    assert (too_many.value.field, too_many.value.rule) == ("granularity", "max_buckets")
    with pytest.raises(QueryError) as bad_zone:
        zone("Mars/Olympus_Mons")
    assert (bad_zone.value.field, bad_zone.value.rule) == ("timezone", "iana_zone")


@pytest.mark.parametrize(
    ("tz_name", "grain", "first", "days"),
    [
        ("America/New_York", "day", datetime(2026, 2, 20), 40),
        ("America/New_York", "hour", datetime(2026, 10, 30), 4),
        ("Asia/Kolkata", "hour", datetime(2026, 3, 5), 3),
        ("Europe/London", "day", datetime(2026, 3, 1), 300),
        ("UTC", "minute", datetime(2026, 3, 5), 1),
    ],
)
def test_sql_bucket_index_agrees_with_the_python_buckets(tz_name: str, grain: str, first: datetime, days: int) -> None:
    tz = zone(tz_name)
    start = first.replace(tzinfo=tz).timestamp()
    buckets = make_buckets(start, start + days * 86400, grain, tz, 10_000)  # type: ignore[arg-type]
    rng = random.Random(5)
    instants = [rng.uniform(buckets.start, buckets.end - 1e-6) for _ in range(2000)]
    instants += list(buckets.bounds[:-1]) + [b - 1e-6 for b in buckets.bounds[1:]]
    params: list = []
    expression = bucket_index("ts", buckets.segments(), params)
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    con.execute("CREATE TABLE t (i INTEGER, ts TIMESTAMPTZ)")
    con.executemany(
        "INSERT INTO t VALUES (?, make_timestamp(?::BIGINT)::TIMESTAMPTZ)",
        [(i, round(t * 1_000_000)) for i, t in enumerate(instants)],
    )
    got = dict(con.execute(f"SELECT i, {expression} FROM t", params).fetchall())
    for i, t in enumerate(instants):
        assert got[i] == buckets.index(round(t * 1_000_000) / 1_000_000), (i, datetime.fromtimestamp(t, tz))
