"""Every served number exact (issue 16), over real HTTP: events of the test's own making loaded as the loader
loads them, rolled up by dbt, answered by the query API (uvicorn, the session's Redis), and the collector.

- Buckets on the days clocks change (America/New_York, Australia/Lord_Howe's 30-minute shift, Asia/Kathmandu at
  +05:45), by minute, hour and day: distinct labels in time order, each its bucket's first instant with the
  offset in force then, and per bucket the number of events the test sent there, counted here from the events.
- A group whose events have no value for a dimension (no page, no experiment variant) is `null`, a row of its
  own, distinct from the top-N rest, which `rest: true` marks.
- A body that is not JSON answers 400 naming the line and column where it breaks, on both services.
"""

from __future__ import annotations

import itertools
import json
import random
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import orjson
import pyarrow as pa
import pytest

from analytics_core import warehouse
from analytics_core.clients import redis_client
from analytics_core.settings import Settings
from api.app import create_app
from tenants import TenantStore, create_tenant_with_keys
from tests.integration.conftest import RunningCollector
from tests.integration.dbt_runs import run_dbt
from tests.pipeline_env import isolated
from tests.replica_checks import wait_ready
from tests.servers import serve
from tests.wall_buckets import bucket_starts, local_midnight, wall_bucket

pytestmark = pytest.mark.integration

TENANT, READ_KEY = "tenant_exact", "rk_exact_answers"
# The local dates clocks change in 2026: New York -1 h / +1 h, Lord Howe -30 min / +30 min; Kathmandu keeps
# +05:45 (its quarter-hour offset, on New York's fall-back day). Events from the day before to the day after.
CHANGES = [
    ("America/New_York", date(2026, 3, 8)),
    ("America/New_York", date(2026, 11, 1)),
    ("Australia/Lord_Howe", date(2026, 4, 5)),
    ("Australia/Lord_Howe", date(2026, 10, 4)),
    ("Asia/Kathmandu", date(2026, 11, 1)),
]
EVERY_S = 157  # about 9 events an hour, at seconds that wander through the minutes
# Events without a page are the largest group, so they are in any top N; the variant is missing for half.
PAGES = [None] * 8 + ["/a"] * 5 + ["/b"] * 3 + ["/c"] * 2 + ["/d"] * 2
VARIANTS = [None, None, "control", "treatment"]
REST = ("<the top-N rest>",)  # how the test keys the rows marked `rest: true`
Key = tuple[datetime, tuple[str | None, ...]]  # (bucket start, group or REST)


def _events() -> list[dict[str, Any]]:
    """The events the test sends: every EVERY_S seconds through each change's three days; one in 11 a bot."""
    pick = random.Random(16)
    events: list[dict[str, Any]] = []
    for zone, day in CHANGES:
        tz = ZoneInfo(zone)
        t = local_midnight(day - timedelta(days=1), tz).astimezone(UTC)
        end = local_midnight(day + timedelta(days=2), tz).astimezone(UTC)
        while t < end:
            n = len(events)
            bot = n % 11 == 0
            variant = pick.choice(VARIANTS)
            events.append(
                {
                    "event_id": f"exact-{n}",
                    "tenant_id": TENANT,
                    "message_type": "track",
                    "event_type": "page_view",
                    "user_id": f"user-{n % 97}",
                    "anonymous_id": f"anon-{n % 97}",
                    "timestamp": t,
                    "original_timestamp": t,
                    "sent_at": t,
                    "received_at": t + timedelta(seconds=1),
                    "properties": "{}",
                    "page": pick.choice(PAGES),
                    "country": "US",
                    "device": "bot" if bot else "desktop",
                    "experiment_key": None if variant is None else "checkout-v2",
                    "experiment_variant": variant,
                    "library": "analytics.js 5.2.1",
                    "is_bot": bot,
                    "_kafka_partition": 0,
                    "_kafka_offset": n,
                }
            )
            t += timedelta(seconds=EVERY_S + pick.randrange(0, 40))
    return events


EVENTS = _events()
PEOPLE = [e for e in EVENTS if not e["is_bot"]]  # the `events` metric counts people only


@pytest.fixture(scope="module")
def lake(tmp_path_factory: pytest.TempPathFactory, stack_settings: Settings) -> Settings:
    base = tmp_path_factory.mktemp("exact")
    settings = isolated(stack_settings, base)
    columns = {name: [e[name] for e in EVENTS] for name in EVENTS[0]}
    sent = pa.table(
        {
            **columns,
            **{
                name: pa.array(columns[name], pa.timestamp("us", tz="UTC"))
                for name in ("timestamp", "original_timestamp", "sent_at", "received_at")
            },
        }
    )
    con = warehouse.connect(settings)
    try:
        con.register("sent", sent)
        con.execute(f"INSERT INTO {settings.warehouse_alias}.main.raw_events BY NAME SELECT * FROM sent")
    finally:
        con.close()
    run_dbt(settings, "build", "--exclude-resource-type", "unit_test")
    create_tenant_with_keys(TenantStore(settings.tenants_db), TENANT, "wk_exact_answers", READ_KEY)
    return settings


@pytest.fixture(scope="module")
def api(lake: Settings) -> Iterator[str]:
    try:
        with serve(create_app(lake)) as url:
            wait_ready(url)
            yield url
    finally:
        conn = redis_client(lake)  # the answers cached under the module's key prefix
        try:
            keys = list(conn.scan_iter(match=f"{lake.redis_key_prefix}*", count=1000))
            for i in range(0, len(keys), 1000):
                conn.delete(*keys[i : i + 1000])
        finally:
            conn.close()


def ask(url: str, body: dict[str, Any]) -> dict[str, Any]:
    answer = httpx.post(f"{url}/api/v1/query", json=body, headers={"Authorization": f"Bearer {READ_KEY}"}, timeout=60)
    assert answer.status_code == 200, answer.text
    document: dict[str, Any] = answer.json()
    return document


def post_body(url: str, content: bytes) -> httpx.Response:
    """POST these bytes as the query's JSON body, as they are (broken JSON, text that is not UTF-8)."""
    headers = {"Authorization": f"Bearer {READ_KEY}", "Content-Type": "application/json"}
    return httpx.post(f"{url}/api/v1/query", content=content, headers=headers, timeout=10)


def local_range(day: date, grain: str) -> tuple[date, date]:
    """The changing day (minute, hour), or the day before it to the day after (day)."""
    return (day, day + timedelta(days=1)) if grain != "day" else (day - timedelta(days=1), day + timedelta(days=2))


# -- finding 1: every bucket its own label, in order, with its own events ---------------------------------------


@pytest.mark.parametrize("grain", ["minute", "hour", "day"])
@pytest.mark.parametrize(("zone", "day"), CHANGES, ids=[f"{z}-{d}" for z, d in CHANGES])
def test_buckets_on_clock_change_days_are_distinct_ordered_and_exact(
    api: str, zone: str, day: date, grain: str
) -> None:
    tz = ZoneInfo(zone)
    first, last = local_range(day, grain)
    body = {"metrics": ["events"], "start": first.isoformat(), "end": last.isoformat(), "granularity": grain}
    rows = ask(api, {**body, "timezone": zone})["rows"]

    start, end = local_midnight(first, tz), local_midnight(last, tz)
    starts = bucket_starts(start, end, grain, tz)
    counted = Counter(wall_bucket(e["timestamp"], grain, tz) for e in PEOPLE if start <= e["timestamp"] < end)
    labels = [row["bucket"] for row in rows]
    instants = [datetime.fromisoformat(label) for label in labels]
    assert len(set(labels)) == len(labels) == len(starts), (len(set(labels)), len(labels), len(starts))
    assert all(a < b for a, b in itertools.pairwise(instants))  # strictly increasing instants
    assert instants == list(starts.values())  # each label is its bucket's first instant
    assert [i.utcoffset() for i in instants] == [s.astimezone(tz).utcoffset() for s in starts.values()]
    assert [row["values"]["events"] for row in rows] == [float(counted[key]) for key in starts]
    assert sum(counted.values()) > 0 and all(row["rest"] is False for row in rows)


def test_the_repeated_new_york_hour_of_the_report(api: str) -> None:
    body = {
        "metrics": ["events"],
        "start": "2026-11-01T00:00",
        "end": "2026-11-01T04:00",
        "granularity": "hour",
        "timezone": "America/New_York",
    }
    rows = ask(api, body)["rows"]
    assert [row["bucket"] for row in rows] == [
        "2026-11-01T00:00:00-04:00",
        "2026-11-01T01:00:00-04:00",
        "2026-11-01T01:00:00-05:00",
        "2026-11-01T02:00:00-05:00",
        "2026-11-01T03:00:00-05:00",
    ]
    utc_hours = [datetime(2026, 11, 1, h, tzinfo=UTC) for h in range(4, 10)]
    want = [sum(1 for e in PEOPLE if a <= e["timestamp"] < b) for a, b in itertools.pairwise(utc_hours)]
    assert [row["values"]["events"] for row in rows] == want
    assert all(n > 0 for n in want)


# -- finding 2: null for a missing value, distinct from the top-N rest -----------------------------------------

ZONE, DAY = ZoneInfo("America/New_York"), date(2026, 11, 1)


def _order(group: tuple[str | None, ...]) -> tuple[tuple[bool, str], ...]:
    return tuple((v is None, v or "") for v in group)  # values, then the missing value (null)


def expected_groups(dims: list[str], top_n: int | None = None, keep: Any = lambda e: True) -> dict[Key, float]:
    """(bucket start, group or REST) → events, counted from the events sent: New York's fall-back day, by hour."""
    start, end = local_midnight(DAY, ZONE), local_midnight(DAY + timedelta(days=1), ZONE)
    starts = bucket_starts(start, end, "hour", ZONE)
    mine = [e for e in PEOPLE if start <= e["timestamp"] < end and keep(e)]
    totals = Counter(tuple(e[d] for d in dims) for e in mine)
    top = None
    if top_n is not None and len(totals) > top_n:
        ranked = sorted(totals, key=lambda g: (-totals[g], _order(g)))
        assert totals[ranked[top_n - 1]] != totals[ranked[top_n]], "a tie at the cut: the test needs other events"
        top = set(ranked[:top_n])
    out: Counter[Key] = Counter()
    for e in mine:
        group = tuple(e[d] for d in dims)
        out[(starts[wall_bucket(e["timestamp"], "hour", ZONE)], group if top is None or group in top else REST)] += 1
    return {key: float(n) for key, n in out.items()}


def answered_groups(rows: list[dict[str, Any]], dims: list[str]) -> dict[Key, float]:
    """The answer's rows keyed as expected_groups keys them; each (bucket, group) once, in the documented order."""
    out: dict[Key, float] = {}
    for row in rows:
        assert list(row["dimensions"]) == dims
        if row["rest"]:
            assert all(value is None for value in row["dimensions"].values())
        group = REST if row["rest"] else tuple(row["dimensions"][d] for d in dims)
        key = (datetime.fromisoformat(row["bucket"]), group)
        assert key not in out, key
        out[key] = row["values"]["events"]
    order = [(k[0].timestamp(), k[1] == REST, _order(k[1])) for k in out]
    assert order == sorted(order)  # by bucket; values, then null; the rest last
    return out


def _query(**extra: Any) -> dict[str, Any]:
    body = {"metrics": ["events"], "start": DAY.isoformat(), "end": (DAY + timedelta(days=1)).isoformat()}
    return {**body, "granularity": "hour", "timezone": "America/New_York", **extra}


def test_events_without_a_page_are_a_null_group(api: str) -> None:
    answer = ask(api, _query(group_by=["page"]))
    assert {p["source"] for p in answer["provenance"]["parts"]} == {"raw"}  # page: a raw-only dimension
    got = answered_groups(answer["rows"], ["page"])
    assert got == expected_groups(["page"])
    assert any(group == (None,) for _, group in got)
    assert not any(group == ("",) for _, group in got)  # no longer ""


def test_the_null_group_in_the_top_n_and_the_rest_are_two_rows(api: str) -> None:
    answer = ask(api, _query(group_by=["page"], top_n=2))
    got = answered_groups(answer["rows"], ["page"])
    assert got == expected_groups(["page"], top_n=2)
    groups = {group for _, group in got}
    assert groups == {(None,), ("/a",), REST}  # no page: the largest group, in the top 2, beside the rest


def test_two_dimensions_with_missing_values_and_the_rest(api: str) -> None:
    dims = ["page", "experiment_variant"]
    got = answered_groups(ask(api, _query(group_by=dims, top_n=3))["rows"], dims)
    assert got == expected_groups(dims, top_n=3)
    assert (None, None) in {group for _, group in got} and REST in {group for _, group in got}


def test_filters_compare_the_empty_string_for_a_missing_value(api: str) -> None:
    """As documented: `not_in` keeps the events without a value, `eq ""` selects them."""
    kept = ask(api, _query(group_by=["page"], filters=[{"dimension": "page", "op": "not_in", "values": ["/a"]}]))
    assert answered_groups(kept["rows"], ["page"]) == expected_groups(["page"], keep=lambda e: e["page"] != "/a")
    only = ask(api, _query(group_by=["page"], filters=[{"dimension": "page", "op": "eq", "values": [""]}]))
    assert answered_groups(only["rows"], ["page"]) == expected_groups(["page"], keep=lambda e: e["page"] is None)


# -- finding 3: a body that is not JSON names its line and column ----------------------------------------------

BROKEN = [
    b'{\n  "metrics": ["events"],\n  "start": "2026-11-01" "end": "2026-11-02"\n}',
    '{\n  "timezone": "Europe/Zürich 🙂",\n  "metrics": ["événements" ]]\n}'.encode(),
    b'{"metrics": ["events"],',
    b"[1,\r\n 2,\r\n x]",
]


@pytest.mark.parametrize("content", BROKEN)
def test_the_api_names_line_and_column_of_broken_json(api: str, content: bytes) -> None:
    with pytest.raises(json.JSONDecodeError) as parsed:
        json.loads(content)
    where = f"line {parsed.value.lineno}, column {parsed.value.colno}"
    answer = post_body(api, content)
    assert answer.status_code == 400, answer.text
    assert answer.json() == {
        "error": f"body: invalid JSON at {where}: {parsed.value.msg}",
        "field": "body",
        "rule": "json_invalid",
    }


def test_the_example_of_the_report(api: str) -> None:
    answer = post_body(api, BROKEN[0])
    assert answer.json()["error"] == "body: invalid JSON at line 3, column 25: Expecting ',' delimiter"


NOT_UTF8 = [
    (b'{\n  "metrics": ["\xc3\x28"]\n}', "line 2, column 16: not UTF-8 text: byte 0xc3 (invalid continuation byte)"),
    ('{"timezone": "Zürich",\n\n "x": "'.encode() + b"\xff", "line 3, column 8: not UTF-8 text: byte 0xff"),
]


@pytest.mark.parametrize(("content", "where"), NOT_UTF8)
def test_a_body_that_is_not_utf8_names_its_bad_byte(
    api: str, collector: RunningCollector, content: bytes, where: str
) -> None:
    answer = post_body(api, content)
    assert answer.status_code == 400, answer.text
    assert (answer.json()["field"], answer.json()["rule"]) == ("body", "json_invalid")
    assert answer.json()["error"].startswith(f"body: invalid JSON at {where}"), answer.json()
    refused = httpx.post(f"{collector.url}/v1/batch", content=content, timeout=10)
    assert refused.status_code == 400, refused.text
    assert refused.json()["error"] == answer.json()["error"]  # the same words on both services


def test_an_empty_body_is_a_missing_body(api: str) -> None:
    answer = post_body(api, b"")
    assert answer.status_code == 400, answer.text
    assert (answer.json()["field"], answer.json()["rule"]) == ("body", "missing")


@pytest.mark.parametrize("path", ["/v1/batch", "/batch/"])  # Segment, PostHog
@pytest.mark.parametrize("content", BROKEN)
def test_the_collector_names_line_and_column_of_broken_json(
    collector: RunningCollector, path: str, content: bytes
) -> None:
    with pytest.raises(orjson.JSONDecodeError) as parsed:
        orjson.loads(content)
    where = f"line {parsed.value.lineno}, column {parsed.value.colno}"
    refused = httpx.post(
        f"{collector.url}{path}", content=content, headers={"Content-Type": "application/json"}, timeout=10
    )
    assert refused.status_code == 400, refused.text
    assert refused.json() == {
        "code": 400,
        "status": 0,
        "error": f"body: invalid JSON at {where}: {parsed.value.msg}",
        "results": {},
    }
