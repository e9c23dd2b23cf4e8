"""The planner's choice of sources per stretch: rollup grains by zone and watermark, Redis, raw events."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from analytics_core.catalogue import get_catalogue
from analytics_core.settings import Settings
from api.engine.planner import Plan, plan
from api.engine.validation import validate
from api.models import QueryRequest

SETTINGS = Settings(_env_file=None)  # type: ignore[call-arg]
NOW = datetime(2026, 11, 28, 12, 0, 20, tzinfo=UTC)
WATERMARK = datetime(2026, 11, 28, 11, 58, 40, tzinfo=UTC).timestamp()
MARKS = {"minute": WATERMARK, "hour": WATERMARK, "day": WATERMARK}


def planned(marks: dict[str, float] | None = None, now: datetime = NOW, **request: object) -> Plan:
    query = validate(
        "tenant_a", QueryRequest.model_validate({"metrics": ["events"], **request}), get_catalogue(), SETTINGS
    )
    return plan(query, get_catalogue(), MARKS if marks is None else marks, now.timestamp(), 7, 7200)


def sources(p: Plan) -> set[tuple[str, str]]:
    return {(piece.grain, piece.stage) for piece in p.pieces}


def test_utc_days_come_from_day_rollups() -> None:
    p = planned(start="2026-03-01", end="2026-04-01", granularity="day")
    assert p.raw_reason is None and p.dimension_set == ()
    assert sources(p) == {("day", "complete")}
    assert len(p.pieces) == 31 and not p.late_buckets


def test_new_york_days_come_from_hour_rollups_dst_days_included() -> None:
    p = planned(start="2026-03-06", end="2026-03-10", granularity="day", timezone="America/New_York")
    assert sources(p) == {("hour", "complete")}
    assert [sum(x.end - x.start for x in p.pieces if x.bucket == i) // 3600 for i in range(4)] == [24, 24, 23, 24]


def test_kolkata_days_within_minute_retention_use_minutes_at_the_half_hours() -> None:
    p = planned(start="2026-11-24", end="2026-11-26", granularity="day", timezone="Asia/Kolkata")
    assert sources(p) == {("hour", "complete"), ("minute", "complete")}
    minutes = [x for x in p.pieces if x.grain == "minute"]
    assert {x.end - x.start for x in minutes} == {1800}
    assert {datetime.fromtimestamp(x.start, UTC).minute for x in minutes} == {30, 0}


def test_kolkata_days_past_minute_retention_take_their_half_hours_from_raw_events() -> None:
    p = planned(start="2026-03-05", end="2026-03-07", granularity="day", timezone="Asia/Kolkata")
    assert p.raw_reason is None and p.dimension_set == ()
    raw = [(x.start, x.end) for x in p.pieces if x.grain == "raw"]
    # Each Kolkata day, 18:30 to 18:30 UTC: whole hours from 19:00 to 18:00, the half hours at its ends raw.
    half_hours = [datetime(2026, 3, d, h, m, tzinfo=UTC).timestamp() for d, h, m in ((4, 18, 30), (5, 18, 0))]
    half_hours += [datetime(2026, 3, d, h, m, tzinfo=UTC).timestamp() for d, h, m in ((5, 18, 30), (6, 18, 0))]
    assert raw == [(int(t), int(t) + 1800) for t in half_hours]
    assert {x.grain for x in p.pieces} == {"hour", "raw"}


def test_edges_inside_a_minute_come_from_raw_events_before_the_watermark() -> None:
    p = planned(start="2026-11-27T10:00:30Z", end="2026-11-27T12:10:10Z", granularity="hour")
    runs = [(x.grain, x.start % 3600, x.end - x.start) for x in p.pieces]
    assert runs[0] == ("raw", 30, 30) and runs[-1] == ("raw", 600, 10)
    assert {g for g, _, _ in runs[1:-1]} == {"minute", "hour"}


def test_raw_only_dimensions_and_uncovered_unique_cuts_fall_back_to_raw() -> None:
    assert "page" in (planned(start="2026-03-05", end="2026-03-06", group_by=["page"]).raw_reason or "")
    unique = planned(metrics=["active_users"], start="2026-03-05", end="2026-03-06", group_by=["country", "device"])
    assert unique.raw_reason and "unique users" in unique.raw_reason
    additive = planned(start="2026-03-05", end="2026-03-06", group_by=["country", "device"])
    assert additive.raw_reason is None and additive.dimension_set == ("event_type", "country", "device")
    filtered = planned(
        start="2026-03-05", end="2026-03-06", filters=[{"dimension": "device", "op": "eq", "values": ["mobile"]}]
    )
    assert filtered.dimension_set == ("device",)


def test_today_splits_at_the_watermark_into_rollups_and_redis() -> None:
    p = planned(start="2026-11-28", end="2026-11-29", granularity="hour")
    w = int(WATERMARK // 60 * 60)
    assert p.realtime_from == w == p.realtime_floor
    complete = p.pieces_in("complete")
    assert max(x.end for x in complete) == w
    assert {x.grain for x in complete if x.end <= datetime(2026, 11, 28, 11, tzinfo=UTC).timestamp()} == {"hour"}
    assert {x.grain for x in complete if x.start >= datetime(2026, 11, 28, 11, tzinfo=UTC).timestamp()} == {"minute"}
    assert {x.grain for x in p.pieces_in("live")} == {"minute"}
    assert p.late_buckets == list(range(11, 24))
    # Unique counts past W: the warehouse's sketches plus Redis's minute sketches from W to now.
    minute = [int(datetime(2026, 11, 28, 11, m, tzinfo=UTC).timestamp()) for m in (58, 59)]
    assert p.unique_minutes == {11: minute, 12: [int(datetime(2026, 11, 28, 12, tzinfo=UTC).timestamp())]}


def test_an_hour_watermark_behind_the_minute_one_hands_over_to_minutes() -> None:
    hour_mark = datetime(2026, 11, 28, 9, 5, tzinfo=UTC).timestamp()
    p = planned({**MARKS, "hour": hour_mark, "day": hour_mark}, start="2026-11-27", end="2026-11-28T12:00:00Z")
    nine = datetime(2026, 11, 28, 9, tzinfo=UTC).timestamp()
    assert all(x.grain == "hour" for x in p.pieces_in("complete") if x.end <= nine)
    assert all(x.grain == "minute" for x in p.pieces_in("complete") if x.start >= nine)


def test_a_lagging_warehouse_leaves_a_stale_stretch_and_redis_uniques_only_from_its_floor() -> None:
    behind = (NOW - timedelta(hours=5)).timestamp()
    p = planned({"minute": behind, "hour": behind, "day": behind}, start="2026-11-28", end="2026-11-29")
    assert p.pieces_in("stale") and p.realtime_floor - p.realtime_from > 2 * 3600
    floor = int((NOW.timestamp() - 60 - 7200 + 5) // 60 * 60 + 60)
    assert p.realtime_floor == floor
    assert p.late_buckets == list(range(7, 24))
    assert sorted(p.unique_minutes) == [10, 11, 12]  # 07:00-10:01 are stale: in no Redis key any more
    minutes = [m for ms in p.unique_minutes.values() for m in ms]
    assert minutes == list(range(floor, int(NOW.timestamp() // 60 * 60) + 60, 60))


def test_no_watermark_means_everything_past_the_range_start_is_realtime_or_stale() -> None:
    p = planned({}, start="2026-11-28T10:00:00Z", end="2026-11-28T12:00:00Z")
    assert not p.pieces_in("complete")
    assert p.watermark is None
