"""An answer's rows as the API writes them: every bucket labelled with its own start and UTC offset, and groups
without a dimension value (null) told apart from the top-N rest (`rest: true`).

api.models.dump writes each bucket's text once. It used to remember the text by the datetime, and two aware
datetimes of one zone with the same wall time compare and hash equal whatever their fold: on a fall-back day
the second 01:00 of New York (-05:00) was written with the first one's text (-04:00), two buckets one label.
The buckets here come from the engine (validate, build_result) and are checked against ones computed from
the wall clock alone (tests/wall_buckets.py).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import orjson
import pytest

from analytics_core.catalogue import get_catalogue
from analytics_core.settings import Settings
from api.cache import render, template
from api.engine.answer import OTHER, Answer, build_result
from api.engine.validation import Query, validate
from api.models import CacheInfo, Part, Provenance, QueryRequest, QueryResult, Row, dump
from tests.wall_buckets import bucket_starts, local_midnight

SETTINGS = Settings(_env_file=None)  # type: ignore[call-arg]

# The days clocks change in 2026 (local dates): New York -1 h / +1 h, Lord Howe -30 min / +30 min. Kathmandu
# (+05:45) keeps its offset all year: its quarter-hour offset on the same days.
CHANGES = [
    ("America/New_York", date(2026, 3, 8)),
    ("America/New_York", date(2026, 11, 1)),
    ("Australia/Lord_Howe", date(2026, 4, 5)),
    ("Australia/Lord_Howe", date(2026, 10, 4)),
    ("Asia/Kathmandu", date(2026, 3, 8)),
    ("Asia/Kathmandu", date(2026, 11, 1)),
]
GRAINS = ["minute", "hour", "day"]


def local_range(day: date, grain: str) -> tuple[date, date]:
    """The changing day (minute, hour), or the day before it to the day after (day)."""
    return (day, day + timedelta(days=1)) if grain != "day" else (day - timedelta(days=1), day + timedelta(days=2))


def query_of(zone: str, day: date, grain: str, **extra: object) -> Query:
    """A query over local_range, as a client asks it: local dates in the zone."""
    first, last = local_range(day, grain)
    body = {"metrics": ["events"], "start": first.isoformat(), "end": last.isoformat(), "granularity": grain}
    return validate(
        "tenant_a", QueryRequest.model_validate({**body, "timezone": zone, **extra}), get_catalogue(), SETTINGS
    )


def answered(query: Query, fill: Callable[[Answer, int], None]) -> dict[str, object]:
    """The answer JSON of the query, as the API sends it (dump, the cache template, render)."""
    answer = Answer()
    for bucket in range(query.buckets.count):
        fill(answer, bucket)
    result = build_result(query, get_catalogue(), answer, None, 1.0)
    return orjson.loads(render(template(dump(result)), False, 0.0, 60, 1.0))


@pytest.mark.parametrize("grain", GRAINS)
@pytest.mark.parametrize(("zone", "day"), CHANGES, ids=[f"{z}-{d}" for z, d in CHANGES])
def test_every_bucket_has_its_own_label_and_offset(zone: str, day: date, grain: str) -> None:
    tz = ZoneInfo(zone)
    query = query_of(zone, day, grain, group_by=["country"])

    def fill(answer: Answer, bucket: int) -> None:  # two groups a bucket: the rows of a bucket share its label
        answer.add(bucket, ("DE",), "events", float(bucket + 1))
        answer.add(bucket, ("US",), "events", 1.0)

    rows = answered(query, fill)["rows"]
    assert isinstance(rows, list)
    labels = [row["bucket"] for row in rows[::2]]
    assert [row["bucket"] for row in rows[1::2]] == labels
    assert [row["values"]["events"] for row in rows[::2]] == [float(i + 1) for i in range(len(labels))]
    starts = [datetime.fromisoformat(label) for label in labels]
    first, last = (local_midnight(d, tz) for d in local_range(day, grain))
    want = list(bucket_starts(first, last, grain, tz).values())
    assert len(set(labels)) == len(labels) == len(want)  # distinct
    assert all(a.timestamp() < b.timestamp() for a, b in itertools.pairwise(starts))  # in order
    assert [s.timestamp() for s in starts] == [w.timestamp() for w in want]  # each its bucket's first instant
    assert [s.utcoffset() for s in starts] == [w.astimezone(tz).utcoffset() for w in want]  # with its own offset
    assert [s.replace(tzinfo=None) for s in starts] == [w.astimezone(tz).replace(tzinfo=None) for w in want]


def test_the_repeated_new_york_hour_is_labelled_minus_five() -> None:
    """The case of the report: 00:00 to 04:00 on 2026-11-01, hours: five buckets, 01:00 twice."""
    request = QueryRequest.model_validate(
        {
            "metrics": ["events"],
            "start": "2026-11-01T00:00",
            "end": "2026-11-01T04:00",
            "granularity": "hour",
            "timezone": "America/New_York",
        }
    )
    query = validate("tenant_a", request, get_catalogue(), SETTINGS)
    rows = answered(query, lambda answer, bucket: answer.add(bucket, (), "events", 1.0))["rows"]
    assert [row["bucket"] for row in rows] == [  # type: ignore[union-attr]
        "2026-11-01T00:00:00-04:00",
        "2026-11-01T01:00:00-04:00",
        "2026-11-01T01:00:00-05:00",
        "2026-11-01T02:00:00-05:00",
        "2026-11-01T03:00:00-05:00",
    ]


@pytest.mark.parametrize(("zone", "day"), CHANGES[:4], ids=[f"{z}-{d}" for z, d in CHANGES[:4]])
def test_dump_writes_equal_datetimes_of_different_folds_apart(zone: str, day: date) -> None:
    """Rows whose buckets are distinct objects, equal as datetimes (same wall time, other fold): each its offset."""
    tz = ZoneInfo(zone)
    base = datetime.combine(day, datetime.min.time(), tz).timestamp()
    instants = [base + i * 60 for i in range(26 * 60)]
    buckets = [datetime.fromtimestamp(t, tz) for t in instants]
    rows = [Row(b, {}, {"events": 1.0}) for b in buckets]
    result = QueryResult(
        metrics=["events"],
        granularity="minute",
        timezone=zone,
        start=buckets[0],
        end=datetime.fromtimestamp(instants[-1] + 60, tz),
        group_by=[],
        rows=rows,
        provenance=Provenance(parts=[], watermark=None, realtime=False),
    )
    written = [row["bucket"] for row in dump(result)["rows"]]  # type: ignore[index]
    assert [datetime.fromisoformat(w).timestamp() for w in written] == instants
    assert len(set(written)) == len(written)
    expected = result.model_copy(deep=True)
    expected.provenance.cache = CacheInfo(hit=False, age_s=0.0, ttl_s=60)
    assert render(template(dump(result)), False, 0.0, 60, 0.0) == expected.model_dump_json().encode()


# -- a group without a value is null; the top-N rest is marked -------------------------------------------------


def test_a_missing_value_is_null_and_the_rest_row_is_marked() -> None:
    query = query_of("UTC", date(2026, 3, 8), "day", group_by=["page"], top_n=2)

    def fill(answer: Answer, bucket: int) -> None:
        answer.add(bucket, ("/b",), "events", 3.0)
        answer.add(bucket, (None,), "events", 5.0)  # events without a page: in the top 2
        answer.add(bucket, OTHER, "events", 7.0)  # the rest: /c, /d, ...
        answer.add(bucket, ("",), "events", 1.0)  # a real empty value, unlike no value

    rows = answered(query, fill)["rows"]
    first = [r for r in rows if r["bucket"] == rows[0]["bucket"]]  # type: ignore[index]
    assert [(r["dimensions"], r["values"]["events"], r["rest"]) for r in first] == [
        ({"page": ""}, 1.0, False),
        ({"page": "/b"}, 3.0, False),
        ({"page": None}, 5.0, False),  # after the values
        ({"page": None}, 7.0, True),  # last in its bucket
    ]


def test_two_dimensions_with_missing_values_and_the_rest() -> None:
    query = query_of("UTC", date(2026, 3, 8), "day", group_by=["page", "experiment_variant"], top_n=3)

    def fill(answer: Answer, bucket: int) -> None:
        answer.add(bucket, OTHER, "events", 9.0)
        answer.add(bucket, (None, None), "events", 4.0)
        answer.add(bucket, ("/a", None), "events", 2.0)
        answer.add(bucket, (None, "control"), "events", 3.0)
        answer.add(bucket, ("/a", "control"), "events", 1.0)

    rows = answered(query, fill)["rows"]
    first = [r for r in rows if r["bucket"] == rows[0]["bucket"]]  # type: ignore[index]
    assert [(r["dimensions"], r["values"]["events"], r["rest"]) for r in first] == [
        ({"page": "/a", "experiment_variant": "control"}, 1.0, False),
        ({"page": "/a", "experiment_variant": None}, 2.0, False),
        ({"page": None, "experiment_variant": "control"}, 3.0, False),
        ({"page": None, "experiment_variant": None}, 4.0, False),
        ({"page": None, "experiment_variant": None}, 9.0, True),
    ]


def test_rows_without_group_by_are_no_rest() -> None:
    query = query_of("UTC", date(2026, 3, 8), "day")
    rows = answered(query, lambda answer, bucket: answer.add(bucket, (), "events", 2.0))["rows"]
    assert [(r["dimensions"], r["rest"]) for r in rows] == [({}, False)] * 3  # type: ignore[index]


def test_parts_are_ordered_by_instant_through_the_repeated_hour() -> None:
    """01:15 EDT comes before 01:00 EST: provenance parts sort by instant, not by wall time."""
    tz = ZoneInfo("America/New_York")
    query = query_of("America/New_York", date(2026, 11, 1), "minute")
    answer = Answer()
    est = datetime(2026, 11, 1, 6, 0, tzinfo=UTC).timestamp()  # 01:00 EST
    edt = datetime(2026, 11, 1, 5, 15, tzinfo=UTC).timestamp()  # 01:15 EDT, 45 minutes earlier
    answer.part(query, "realtime", est, est + 600, 10, [])
    answer.part(query, "rollup_minute", edt, est, 45, [])
    answer.sort_parts()
    assert [p.source for p in answer.parts] == ["rollup_minute", "realtime"]
    assert [p.start.astimezone(tz).utcoffset() for p in answer.parts] == [timedelta(hours=-4), timedelta(hours=-5)]


def test_part_json_keeps_the_offset() -> None:
    tz = ZoneInfo("America/New_York")
    start = datetime.fromtimestamp(datetime(2026, 11, 1, 6, 0, tzinfo=UTC).timestamp(), tz)
    part = Part(source="raw", start=start, end=start + timedelta(hours=1), buckets=1)
    assert orjson.loads(part.model_dump_json())["start"] == "2026-11-01T01:00:00-05:00"
