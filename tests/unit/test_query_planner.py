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


def test_kolkata_days_past_minute_retention_fall_back_to_raw() -> None:
    p = planned(start="2026-03-05", end="2026-03-07", granularity="day", timezone="Asia/Kolkata")
    assert p.dimension_set is None and p.raw_reason and "minute rollups" in p.raw_reason


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
    assert p.unique_tiles[11] == [("hour", int(datetime(2026, 11, 28, 11, tzinfo=UTC).timestamp()))]
    assert p.unique_tiles[12] == [("hour", int(datetime(2026, 11, 28, 12, tzinfo=UTC).timestamp()))]
    assert p.unique_tiles[13] == []  # the future: no key yet


def test_an_hour_watermark_behind_the_minute_one_hands_over_to_minutes() -> None:
    hour_mark = datetime(2026, 11, 28, 9, 5, tzinfo=UTC).timestamp()
    p = planned({**MARKS, "hour": hour_mark, "day": hour_mark}, start="2026-11-27", end="2026-11-28T12:00:00Z")
    nine = datetime(2026, 11, 28, 9, tzinfo=UTC).timestamp()
    assert all(x.grain == "hour" for x in p.pieces_in("complete") if x.end <= nine)
    assert all(x.grain == "minute" for x in p.pieces_in("complete") if x.start >= nine)


def test_a_lagging_warehouse_leaves_a_stale_stretch_and_old_buckets_lose_realtime_uniques() -> None:
    behind = (NOW - timedelta(hours=5)).timestamp()
    p = planned({"minute": behind, "hour": behind, "day": behind}, start="2026-11-28", end="2026-11-29")
    assert p.pieces_in("stale") and p.realtime_floor - p.realtime_from > 2 * 3600
    assert p.realtime_floor == int((NOW.timestamp() - 60 - 7200 + 5) // 60 * 60 + 60)
    first_late = p.late_buckets[0]
    assert first_late not in p.unique_tiles  # its hour key expired two hours after the hour ended
    assert max(p.unique_tiles) == 23


def test_no_watermark_means_everything_past_the_range_start_is_realtime_or_stale() -> None:
    p = planned({}, start="2026-11-28T10:00:00Z", end="2026-11-28T12:00:00Z")
    assert not p.pieces_in("complete")
    assert p.watermark is None
