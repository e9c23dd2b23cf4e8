"""The answer cache's check that an answer is still current (api/engine/versions.py, api/cache.py).

Versions.current on hand-made stamps (tables changed before or after, a history that starts later, watermarks
moving inside or past a range, another tenant); Stamp's encoding; LakeHistory following a small real DuckLake
(the tables dbt writes changed, another table not, a table created again, expired snapshots); cache entries of
the old format are misses.
"""

from __future__ import annotations

import asyncio
from dataclasses import replace
from typing import Any

import duckdb
import pytest

from analytics_core import warehouse
from analytics_core.settings import Settings
from api.cache import ENTRY_VERSION, QueryCache, catalogue_hash
from api.engine.versions import EVENTS_TABLE, WATCHED, WATERMARKS, LakeHistory, Stamp, Versions, clamp
from api.models import QueryRequest

DAY = 86_400
START, END = 100 * DAY, 107 * DAY  # a week
MARKS = {"minute": 200.0 * DAY, "hour": 200.0 * DAY, "day": 199.0 * DAY}  # well past the week


def versions(changed: dict[str, int] | None = None, since: int = 10, snapshot: int = 50, **marks: Any) -> Versions:
    return Versions(since=since, snapshot=snapshot, changed=changed or {}, marks={"t1": {**MARKS, **marks}})


def stamp_of(v: Versions, sources: tuple[str, ...] = ("rollup_day",), start: int = START, end: int = END) -> Stamp:
    return v.stamp(sources, start, end, v.marks["t1"])


def test_an_answer_is_current_until_a_table_it_read_changes() -> None:
    at_40 = versions({"fct_metrics_day": 30, "fct_metrics_minute": 39}, snapshot=40)
    stamp = stamp_of(at_40, ("rollup_day", "realtime"))
    assert stamp.snapshot == 40 and stamp.tables == ("fct_metrics_day",)  # realtime: Redis, bounded by its TTL
    assert at_40.current("t1", stamp)
    # Later: other tables changed (the minute rollups, staging, the watermarks table) -- still current.
    later = versions({"fct_metrics_day": 30, "fct_metrics_minute": 60, EVENTS_TABLE: 61, WATERMARKS: 62}, snapshot=70)
    assert later.current("t1", stamp)
    # The day rollups restated at 65: the answer read them at 40, before that.
    restated = versions({"fct_metrics_day": 65}, snapshot=70)
    assert not restated.current("t1", stamp)
    assert restated.current("t1", stamp_of(restated))  # computed again at 70: current
    # A stamp from a process ahead of this one (the data is newer than what this process knows): current.
    assert at_40.current("t1", stamp_of(restated))


def test_raw_answers_follow_the_staged_events() -> None:
    before = versions({EVENTS_TABLE: 20}, snapshot=30)
    stamp = stamp_of(before, ("raw",))
    assert stamp.tables == (EVENTS_TABLE,)
    assert versions({EVENTS_TABLE: 30, "fct_metrics_day": 45}, snapshot=50).current("t1", stamp)
    assert not versions({EVENTS_TABLE: 31}, snapshot=50).current("t1", stamp)


def test_funnel_and_experiment_answers_follow_their_tables_alone() -> None:
    at_40 = versions({"fct_funnel_daily": 30}, snapshot=40)
    stamp = at_40.table_stamp(["fct_funnel_daily"])
    assert Stamp.decode(stamp.encode()) == stamp and stamp.start == stamp.end
    # Watermarks and other tables moving on do not matter; the table rebuilt does.
    later = versions({"fct_metrics_day": 60, EVENTS_TABLE: 61, WATERMARKS: 62}, snapshot=70, day=300.0 * DAY)
    assert later.current("t1", stamp) and later.current("t2", stamp)
    assert not versions({"fct_funnel_daily": 41}, snapshot=70).current("t1", stamp)
    experiment = at_40.table_stamp(["fct_experiment_significance", "fct_experiment_exposures"])
    assert experiment.tables == ("fct_experiment_exposures", "fct_experiment_significance")
    assert not versions({"fct_experiment_exposures": 45}, snapshot=70).current("t1", experiment)
    assert {"fct_funnel_daily", *experiment.tables} <= set(WATCHED)


def test_funnel_and_experiment_entries_have_keys_of_their_own() -> None:
    fake = FakeRedis(None)
    cache = QueryCache(fake, "p:", "abc")  # type: ignore[arg-type]
    question = {"query": {"funnel": "checkout"}, "definition": {"window": 86400}, "table": "h"}
    funnel, experiment = cache.key("t1", question, "f"), cache.key("t1", question, "x")
    assert funnel.startswith("p:api:{t1}:f:") and experiment.startswith("p:api:{t1}:x:") and "abc" not in funnel
    assert cache.key("t2", question, "f") != funnel
    assert cache.key("t1", {**question, "table": "other"}, "f") != funnel  # another definition hash: another entry
    body = b'{"rows":[],"cache":null}'  # not a query template: kept as it is
    assert asyncio.run(cache.put("t1", question, body, 60, stamp_of(versions()).encode(), "f"))
    fake.value = fake.stored[funnel]
    got = asyncio.run(cache.get("t1", question, "f"))
    assert got is not None and got.template == body


def test_a_stamp_older_than_the_history_known_is_not_current() -> None:
    stamp = stamp_of(versions(since=10, snapshot=40))
    assert versions(since=40, snapshot=90).current("t1", stamp)  # known from 40 on: nothing changed since
    assert not versions(since=41, snapshot=90).current("t1", stamp)  # 40 -> 41 unknown (e.g. expired)


def test_watermarks_count_only_where_they_fall_inside_the_range() -> None:
    at = versions(minute=float(END - 3600), hour=float(END - 3600), day=float(END - DAY))  # inside the week
    stamp = stamp_of(at)
    assert stamp.marks == (float(END - 3600), float(END - 3600), float(END - DAY))
    assert not versions(minute=float(END - 60), hour=float(END - 3600), day=float(END - DAY)).current("t1", stamp)
    # Past the end: every later watermark plans the range the same, and the numbers it reads are the same.
    closed = stamp_of(versions())
    assert closed.marks == (float(END), float(END), float(END))
    assert versions(minute=float(300 * DAY), day=float(END)).current("t1", closed)
    assert not versions(day=float(END - DAY)).current("t1", closed)  # moved back inside: not the same plan
    # A tenant without watermarks (yet, or any more) is not the same as one with them.
    gone = Versions(since=10, snapshot=50, changed={}, marks={})
    assert not gone.current("t1", closed)
    assert clamp({}, START, END) == (None, None, None)


def test_watermarks_are_the_tenants_own() -> None:
    at = versions()
    stamp = stamp_of(at)
    other = Versions(since=10, snapshot=50, changed={}, marks={"t1": MARKS, "t2": {"minute": float(START)}})
    assert other.current("t1", stamp)
    assert not other.current("t2", stamp)


def test_a_stamp_encodes_without_the_entry_separator_and_decodes_to_itself() -> None:
    stamp = stamp_of(versions(minute=float(END - 0.125)), ("rollup_hour", "rollup_day", "raw"))
    raw = stamp.encode()
    assert b"|" not in raw
    assert Stamp.decode(raw) == stamp
    assert stamp.tables == tuple(sorted(stamp.tables))
    for bad in (b"", b"[1,2]", b'{"a": 1}', b'[1, ["t"], 2, 3, [1, 2]]', b"[true, [], 1, 2, [null, null, null]]"):
        with pytest.raises(ValueError, match="not a stamp"):
            Stamp.decode(bad)


class FakeRedis:
    def __init__(self, value: bytes | None) -> None:
        self.value = value
        self.stored: dict[str, bytes] = {}

    async def get(self, key: str) -> bytes | None:
        return self.value

    async def set(self, key: str, value: bytes, ex: int) -> None:
        self.stored[key] = value


REQUEST = QueryRequest.model_validate({"metrics": ["events"], "start": "2026-03-01", "end": "2026-03-02"})
TEMPLATE = b'{"rows":[],"provenance":{"cache":null,"elapsed_ms":null}}'


def test_entries_carry_their_stamp_and_older_formats_are_misses() -> None:
    stamp = stamp_of(versions()).encode()
    fake = FakeRedis(None)
    cache = QueryCache(fake, "p:", "abc")  # type: ignore[arg-type]
    assert asyncio.run(cache.put("t1", REQUEST, TEMPLATE, 60, stamp))
    (key, entry), *_ = fake.stored.items()
    assert key.startswith("p:api:{t1}:q:abc:") and entry.startswith(ENTRY_VERSION + b"|")
    fake.value = entry
    got = asyncio.run(cache.get("t1", REQUEST))
    assert got is not None and got.template == TEMPLATE and got.stamp == stamp and got.ttl_s == 60
    fake.value = b"2|1700000000.0|3600|" + TEMPLATE  # the format before stamps
    assert asyncio.run(cache.get("t1", REQUEST)) is None
    with pytest.raises(ValueError, match="separator"):
        asyncio.run(cache.put("t1", REQUEST, TEMPLATE, 60, b"a|b"))


def test_another_catalogue_is_another_key() -> None:
    from analytics_core.catalogue import get_catalogue

    catalogue = get_catalogue()
    changed = catalogue.model_copy(
        update={
            "metrics": {
                **catalogue.metrics,
                "events": catalogue.metrics["events"].model_copy(update={"humans_only": False}),
            }
        }
    )
    first, second = catalogue_hash(catalogue), catalogue_hash(changed)
    assert first != second and first == catalogue_hash(get_catalogue())
    assert QueryCache(None, "", first).key("t1", REQUEST) != QueryCache(None, "", second).key("t1", REQUEST)


# -- LakeHistory on a real DuckLake --------------------------------------------------------------------------


@pytest.fixture()
def writer(lake: Settings) -> Any:
    con = warehouse.connect(lake)
    for table in WATCHED:
        con.execute(f"CREATE TABLE lake.{table} (tenant_id VARCHAR, granularity VARCHAR, complete_until TIMESTAMPTZ)")
    con.execute(f"INSERT INTO lake.{WATERMARKS} VALUES ('t1', 'minute', TIMESTAMPTZ '2026-03-02 00:00:00+00')")
    yield con
    con.close()


def current(con: duckdb.DuckDBPyConnection) -> int:
    row = con.execute("SELECT id FROM lake.current_snapshot()").fetchone()
    assert row is not None
    return int(row[0])


def test_the_history_follows_the_tables_dbt_writes(writer: duckdb.DuckDBPyConnection) -> None:
    history, moved = LakeHistory("lake").follow(writer, current(writer))
    assert moved == set(WATCHED)  # a history starting: everything is new to it
    first = current(writer)
    assert history.since is not None and history.since <= first and history.until == first
    # Another table (the loader's raw events): nothing watched changed.
    writer.execute("INSERT INTO lake.raw_events SELECT * FROM lake.raw_events LIMIT 0")
    writer.execute("INSERT INTO lake.loader_offsets VALUES ('t', 0, 1, now())")
    history, moved = history.follow(writer, current(writer))
    assert moved == set()
    # dbt: a restated day (delete + insert), staged events, the watermarks created again (table materialisation).
    writer.execute("INSERT INTO lake.fct_metrics_day VALUES ('t1', 'day', now())")
    day_at = current(writer)
    writer.execute("DELETE FROM lake.fct_metrics_day")
    deleted_at = current(writer)
    writer.execute(f"INSERT INTO lake.{EVENTS_TABLE} VALUES ('t1', 'x', now())")
    writer.execute(f"CREATE OR REPLACE TABLE lake.{WATERMARKS} AS SELECT * FROM lake.{WATERMARKS}")
    marks_at = current(writer)
    writer.execute(f"INSERT INTO lake.{WATERMARKS} VALUES ('t2', 'minute', now())")  # into the new table's id
    again_at = current(writer)
    history, moved = history.follow(writer, again_at)
    assert moved == {"fct_metrics_day", EVENTS_TABLE, WATERMARKS}
    assert history.changed["fct_metrics_day"] == deleted_at > day_at
    assert history.changed[WATERMARKS] == again_at > marks_at
    view = history.versions(again_at, {})
    stamp_before = Stamp(day_at, ("fct_metrics_day",), 0, 1, (None, None, None))
    assert not view.current("t1", stamp_before) and view.current("t1", replace(stamp_before, snapshot=deleted_at))
    # Nothing new: the same history.
    assert history.follow(writer, again_at) == (history, set())


def test_expired_snapshots_start_the_history_again(writer: duckdb.DuckDBPyConnection) -> None:
    history, _ = LakeHistory("lake").follow(writer, current(writer))
    writer.execute("INSERT INTO lake.fct_metrics_hour VALUES ('t1', 'hour', now())")
    writer.execute("CALL ducklake_expire_snapshots('lake', older_than => now())")
    writer.execute("INSERT INTO lake.fct_metrics_minute VALUES ('t1', 'minute', now())")
    now = current(writer)
    later, moved = history.follow(writer, now)
    assert moved == set(WATCHED)
    assert later.since is not None and later.since > (history.until or 0)
    assert not later.versions(now, {}).current("t1", Stamp(history.until or 0, (), 0, 1, (None, None, None)))
