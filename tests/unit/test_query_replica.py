"""The in-memory replica of the rollups (api/engine/replica/) on a small DuckLake written here, without dbt.

The lake gets tables shaped like the rollups and the watermarks; a writer changes them the ways dbt
and the maintenance jobs do (delete+insert of restated buckets, updates, deletions of old minutes,
a table created again, expired snapshots), and after each refresh the replica must equal the lake.
"""

from __future__ import annotations

from collections.abc import Iterator

import duckdb
import pytest

from analytics_core import warehouse
from analytics_core.settings import Settings
from api.engine.planner import Piece
from api.engine.replica import ROLLUP_TABLES, TABLES, WATERMARKS, WHOLE_AFTER_FAILURES, Replica, ReplicaNotReady
from api.engine.replica import refresh as replica_module
from api.engine.sql.rollups import RollupRead, rollup_sql
from api.engine.validation import Condition
from tests import replica_checks

ROLLUP_COLUMNS = (
    "tenant_id VARCHAR, metric VARCHAR, dimension_set VARCHAR, event_type VARCHAR, country VARCHAR,"
    " device VARCHAR, granularity VARCHAR, window_start TIMESTAMPTZ, window_end TIMESTAMPTZ, value DOUBLE,"
    " sketch BLOB, _built_at TIMESTAMPTZ"
)
WATERMARK_COLUMNS = "tenant_id VARCHAR, granularity VARCHAR, complete_until TIMESTAMPTZ, rollups_built_at TIMESTAMPTZ"


def rows(table: str, first: int, count: int, build: int = 0, tenant: str = "t1") -> str:
    """SELECT of `count` rollup rows with keys first.. (one country per key), built by run `build`."""
    return f"""
        SELECT '{tenant}' AS tenant_id, CASE WHEN i % 2 = 0 THEN 'events' ELSE 'active_users' END AS metric,
            'country' AS dimension_set, '*' AS event_type, 'c' || i AS country, '*' AS device,
            '{table}' AS granularity, TIMESTAMPTZ '2026-03-01 00:00:00+00' + i * INTERVAL 1 HOUR AS window_start,
            TIMESTAMPTZ '2026-03-01 01:00:00+00' + i * INTERVAL 1 HOUR AS window_end, i * 10.0 + {build} AS value,
            CASE WHEN i % 2 = 1 THEN unhex('10' || printf('%016x', i)) END AS sketch,
            TIMESTAMPTZ '2026-03-02 00:00:00+00' + {build} * INTERVAL 1 MINUTE AS _built_at
        FROM range({first}, {first + count}) AS r (i)
    """


@pytest.fixture()
def writer(lake: Settings) -> Iterator[duckdb.DuckDBPyConnection]:
    con = warehouse.connect(lake)
    for table in ROLLUP_TABLES:
        con.execute(f"CREATE TABLE lake.{table} ({ROLLUP_COLUMNS})")
        con.execute(f"INSERT INTO lake.{table} {rows(table, 0, 3000)}")
    con.execute(
        f"CREATE TABLE lake.{WATERMARKS} AS SELECT 't1' AS tenant_id, 'minute' AS granularity,"
        " TIMESTAMPTZ '2026-03-02 00:00:00+00' AS complete_until, now() AS rollups_built_at"
    )
    yield con
    con.close()


class Reader:
    """An engine-like connection: the lake attached read-only, the replica attached beside it."""

    def __init__(self, settings: Settings) -> None:
        self.con = warehouse.connect(settings, create=False, read_only=True)
        self.fail: Exception | None = None
        self.replica = Replica(self.connect, "lake", "lake_replica")
        self.replica.attach(self.con)

    def connect(self) -> duckdb.DuckDBPyConnection:
        if self.fail is not None:
            raise self.fail
        return self.con

    def differences(self) -> dict[str, int]:
        return replica_checks.differences(self.con)

    def current(self) -> int:
        return replica_checks.current_snapshot(self.con)


@pytest.fixture()
def reader(lake: Settings, writer: duckdb.DuckDBPyConnection) -> Iterator[Reader]:
    r = Reader(lake)
    yield r
    r.con.close()


NO_DIFFERENCES = replica_checks.NO_DIFFERENCES


def test_the_load_copies_every_table_at_one_snapshot(reader: Reader) -> None:
    assert not reader.replica.ready
    assert reader.replica.refresh()
    status = reader.replica.status()
    assert status.ready and status.snapshot_id == reader.current() and status.snapshot_time is not None
    assert status.rows == {**dict.fromkeys(ROLLUP_TABLES, 3000), WATERMARKS: 1}
    assert reader.differences() == NO_DIFFERENCES
    assert not reader.replica.refresh()  # nothing new: nothing to do


def test_a_refresh_replays_restated_buckets_updates_and_deletions(
    reader: Reader, writer: duckdb.DuckDBPyConnection
) -> None:
    reader.replica.refresh()
    day, hour, minute = (f"lake.{t}" for t in ROLLUP_TABLES)
    # dbt's delete+insert of restated buckets, twice between two refreshes (the first restatement
    # must not survive), big enough for Parquet files and small enough to be inlined in the catalog.
    for build in (1, 2):
        writer.execute(f"DELETE FROM {hour} WHERE country IN (SELECT 'c' || i FROM range(100, 1100) AS r (i))")
        writer.execute(f"INSERT INTO {hour} {rows('hour', 100, 1000, build)}")
        writer.execute(f"DELETE FROM {day} WHERE country IN ('c5', 'c6')")
        writer.execute(f"INSERT INTO {day} {rows('day', 5, 2, build)}")
    writer.execute(f"INSERT INTO {day} {rows('day', 3000, 4)}")  # new buckets
    writer.execute(f"INSERT INTO {minute} {rows('minute', 5000, 10)}")  # inserted and deleted again
    writer.execute(f"DELETE FROM {minute} WHERE country IN ('c5000', 'c5001', 'c1', 'c2')")  # and retention
    writer.execute(f"UPDATE {day} SET value = value + 0.5 WHERE country = 'c7'")
    writer.execute(f"UPDATE lake.{WATERMARKS} SET complete_until = complete_until + INTERVAL 1 MINUTE")
    writer.execute("INSERT INTO lake.raw_events SELECT * FROM lake.raw_events LIMIT 0")  # another table

    assert reader.replica.refresh()
    status = reader.replica.status()
    assert status.snapshot_id == reader.current()
    assert reader.differences() == NO_DIFFERENCES
    assert status.copied == (WATERMARKS,)  # the rollups from the change feed; the watermarks (a few rows) whole
    assert status.changes["fct_metrics_hour"] == (1000, 1000)
    assert status.changes["fct_metrics_day"] == (3, 7)  # c5, c6, c7's old rows; new c5-c7, c3000-c3003
    assert status.changes["fct_metrics_minute"] == (2, 8)
    assert status.rows["fct_metrics_day"] == 3004


def test_snapshots_of_other_tables_move_the_snapshot_and_change_nothing(
    reader: Reader, writer: duckdb.DuckDBPyConnection
) -> None:
    reader.replica.refresh()
    before = reader.replica.status()
    writer.execute("INSERT INTO lake.loader_offsets VALUES ('t', 0, 1, now())")
    assert not reader.replica.refresh()
    after = reader.replica.status()
    assert after.snapshot_id == reader.current() > (before.snapshot_id or 0)
    assert after.refreshes == before.refreshes


def test_a_table_created_again_is_copied_whole(
    reader: Reader, writer: duckdb.DuckDBPyConnection, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(replica_module, "CHECKPOINT_WAIT_S", 0.05)  # the open query below holds checkpoints off
    reader.replica.refresh()
    query = reader.con.cursor()  # a query reading the replica while it is copied again
    query.execute("BEGIN TRANSACTION")
    assert query.execute("SELECT count(*) FROM lake_replica.main.fct_metrics_day").fetchone() == (3000,)
    # dbt's `table` materialisation (the watermarks every run) and --full-refresh: a new table, same name.
    writer.execute(f"CREATE OR REPLACE TABLE lake.fct_metrics_day AS {rows('day', 10, 50, build=9)}")
    writer.execute(
        f"CREATE OR REPLACE TABLE lake.{WATERMARKS} AS SELECT * FROM lake.{WATERMARKS}"
        " UNION ALL SELECT 't2', 'minute', now(), now()"
    )
    assert reader.replica.refresh()
    status = reader.replica.status()
    assert set(status.copied) == set(TABLES)  # copied whole again, into new tables swapped in
    assert reader.differences() == NO_DIFFERENCES
    assert query.execute("SELECT count(*) FROM lake_replica.main.fct_metrics_day").fetchone() == (3000,)
    query.execute("ROLLBACK")
    assert query.execute("SELECT count(*) FROM lake_replica.main.fct_metrics_day").fetchone() == (50,)
    assert status.rows["fct_metrics_day"] == 50 and status.rows[WATERMARKS] == 2
    # Only the watermarks created again: copied alone, the rollups from the change feed.
    writer.execute(f"CREATE OR REPLACE TABLE lake.{WATERMARKS} AS SELECT * FROM lake.{WATERMARKS} LIMIT 1")
    writer.execute("DELETE FROM lake.fct_metrics_hour WHERE country = 'c3'")
    assert reader.replica.refresh()
    status = reader.replica.status()
    assert status.copied == (WATERMARKS,) and status.changes["fct_metrics_hour"] == (1, 0)
    assert reader.differences() == NO_DIFFERENCES


def test_expired_history_is_copied_whole(reader: Reader, writer: duckdb.DuckDBPyConnection) -> None:
    reader.replica.refresh()
    writer.execute("DELETE FROM lake.fct_metrics_hour WHERE country = 'c1'")
    writer.execute(f"INSERT INTO lake.fct_metrics_hour {rows('hour', 1, 1, build=3)}")
    writer.execute("CALL ducklake_expire_snapshots('lake', older_than => now())")
    assert reader.replica.refresh()
    assert set(reader.replica.status().copied) == set(TABLES)
    assert reader.differences() == NO_DIFFERENCES


def test_a_change_feed_that_keeps_failing_makes_the_replica_copy_the_lake_again(
    reader: Reader, writer: duckdb.DuckDBPyConnection, monkeypatch: pytest.MonkeyPatch
) -> None:
    reader.replica.refresh()
    writer.execute("DELETE FROM lake.fct_metrics_minute WHERE country = 'c9'")

    def broken(*_: object) -> tuple[int, int]:
        raise duckdb.BinderException("a change feed this replica cannot apply (test)")

    monkeypatch.setattr(reader.replica, "_apply_changes", broken)
    for _ in range(WHOLE_AFTER_FAILURES):
        with pytest.raises(duckdb.BinderException):
            reader.replica.refresh()
    assert reader.replica.refresh()  # the feed is still broken: copied whole instead
    assert set(reader.replica.status().copied) == set(TABLES)
    assert reader.differences() == NO_DIFFERENCES


def test_an_unreadable_lake_leaves_the_replica_serving_and_saying_since_when(
    reader: Reader, writer: duckdb.DuckDBPyConnection
) -> None:
    reader.replica.refresh()
    good = reader.replica.status()
    writer.execute("DELETE FROM lake.fct_metrics_day WHERE country = 'c1'")
    reader.fail = duckdb.IOException("catalog unreachable")
    with pytest.raises(duckdb.IOException):
        reader.replica.refresh()
    reader.replica._failed(duckdb.IOException("catalog unreachable"))  # what the refresh thread does
    status = reader.replica.status()
    assert status.ready and status.snapshot_id == good.snapshot_id and status.synced_at == good.synced_at
    assert "catalog unreachable" in (status.error or "")
    row = reader.con.execute("SELECT count(*) FROM lake_replica.main.fct_metrics_day").fetchone()
    assert row == (3000,)  # still the rows it had
    reader.fail = None
    assert reader.replica.refresh()
    assert reader.replica.status().error is None and reader.differences() == NO_DIFFERENCES


def test_rollups_not_built_yet_leave_the_replica_not_ready(lake: Settings) -> None:
    warehouse.connect(lake).close()  # raw tables only
    r = Reader(lake)
    try:
        with pytest.raises(ReplicaNotReady, match="fct_metrics_day"):
            r.replica.refresh()
        assert not r.replica.ready
    finally:
        r.con.close()


def test_a_reader_transaction_sees_the_replica_before_or_after_a_refresh(
    reader: Reader, writer: duckdb.DuckDBPyConnection
) -> None:
    reader.replica.refresh()
    count = "SELECT count(*), sum(value) FROM lake_replica.main.fct_metrics_hour"
    query = reader.con.cursor()
    query.execute("BEGIN TRANSACTION")
    before = query.execute(count).fetchone()
    writer.execute("DELETE FROM lake.fct_metrics_hour WHERE country IN (SELECT 'c' || i FROM range(2000) AS r (i))")
    assert reader.replica.refresh()
    assert query.execute(count).fetchone() == before  # the open transaction keeps its state
    query.execute("ROLLBACK")
    assert query.execute(count).fetchone() != before
    query.close()


def test_the_thread_loads_and_follows_the_lake(reader: Reader, writer: duckdb.DuckDBPyConnection) -> None:
    reader.replica.refresh_s = 0.05
    reader.replica.start()
    try:
        assert reader.replica.wait(30).ready
        writer.execute(f"INSERT INTO lake.fct_metrics_minute {rows('minute', 7000, 5)}")
        status = reader.replica.wait(30, snapshot_id=reader.current())
        assert status.snapshot_id == reader.current() and status.rows["fct_metrics_minute"] == 3005
    finally:
        reader.replica.stop()
    assert reader.differences() == NO_DIFFERENCES


@pytest.mark.parametrize("in_memory", [False, True])
@pytest.mark.parametrize("unique_alone", [False, True])
def test_rollup_sql_binds_every_value_for_the_lake_and_the_replica(in_memory: bool, unique_alone: bool) -> None:
    """The replica's SQL (sums and sketches scanned apart) binds its values as the lake's does."""
    pieces = [
        Piece("day", 1_772_323_200, 1_772_409_600, 0, "complete"),
        Piece("hour", 1_772_409_600, 1_772_413_200, 1, "complete"),
    ]
    injection = "x' OR 1=1 --"
    read = RollupRead(
        tenant_id="t' --",
        set_name="country",
        group_by=("country",),
        filters=(Condition("country", "not_in", (injection,)),),
        additive=("events",),
        unique=("active_users",),
        additive_pieces=pieces,
        unique_pieces=pieces,
        one_row_per_group=unique_alone,
        in_memory=in_memory,
    )
    for segments, top in ((None, [(injection,)]), (None, None)):
        built = rollup_sql(read, "lake_replica" if in_memory else "lake", segments, top)
        assert built is not None
        sql, params = built
        assert injection not in sql and "t' --" not in sql
        assert sql.count("?") == len(params)
        assert ("|| ''" in sql) is not in_memory  # filters pushed into in-memory scans only


def test_each_refresh_publishes_what_the_answer_cache_checks(reader: Reader, writer: duckdb.DuckDBPyConnection) -> None:
    """The replica's Versions: its snapshot, the last change of each table, every tenant's watermarks."""
    reader.replica.refresh()
    status = reader.replica.status()
    versions = status.versions
    assert versions is not None and versions.snapshot == status.snapshot_id
    mark = 1772409600.0  # 2026-03-02, the writer's watermark
    assert versions.marks == {"t1": {"minute": mark}}
    week = (int(mark) - 7 * 86400, int(mark) - 86400)  # a closed week before the watermark
    hour = versions.stamp(["rollup_hour"], *week, versions.marks["t1"])
    day = versions.stamp(["rollup_day", "realtime"], *week, versions.marks["t1"])
    writer.execute("DELETE FROM lake.fct_metrics_hour WHERE country = 'c3'")  # a restated hour
    writer.execute("INSERT INTO lake.loader_offsets VALUES ('t', 0, 1, now())")  # another table
    assert reader.replica.refresh()
    versions = reader.replica.status().versions
    assert versions is not None and versions.snapshot == reader.current()
    assert not versions.current("t1", hour) and versions.current("t1", day)
    # The watermark moves on past the week: still current; into it: not.
    writer.execute(f"UPDATE lake.{WATERMARKS} SET complete_until = complete_until + INTERVAL 1 HOUR")
    assert reader.replica.refresh()
    versions = reader.replica.status().versions
    assert versions is not None and versions.marks == {"t1": {"minute": mark + 3600}}
    assert versions.current("t1", day)
    writer.execute(f"UPDATE lake.{WATERMARKS} SET complete_until = complete_until - INTERVAL 3 DAY")
    assert reader.replica.refresh()
    versions = reader.replica.status().versions
    assert versions is not None and not versions.current("t1", day)


def test_the_catalog_tells_the_latest_snapshot_without_a_read_transaction_on_the_lake(
    reader: Reader, writer: duckdb.DuckDBPyConnection
) -> None:
    reader.replica.refresh()
    cursor = reader.con.cursor()
    assert reader.replica._latest(cursor) == reader.current()
    writer.execute(f"INSERT INTO lake.{ROLLUP_TABLES[0]} {rows('day', 4000, 2)}")
    latest = reader.replica._latest(cursor)
    assert latest == reader.current() > (reader.replica.status().snapshot_id or 0)
    assert reader.replica.refresh()
    before = reader.replica.status()
    assert before.snapshot_id == latest and reader.differences() == NO_DIFFERENCES
    assert not reader.replica.refresh()  # nothing new: confirmed current, nothing else published
    after = reader.replica.status()
    assert after.snapshot_id == before.snapshot_id and after.refreshes == before.refreshes
    assert (after.synced_at or 0) >= (before.synced_at or 0)


def test_where_the_catalog_cannot_be_read_directly_the_refresh_still_follows_the_lake(
    reader: Reader, writer: duckdb.DuckDBPyConnection, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(replica_module, "_metadata", lambda lake: f"no_such_catalog_of_{lake}")
    reader.replica.refresh()
    assert reader.replica._latest(reader.con.cursor()) is None and not reader.replica._latest_readable
    writer.execute(f"INSERT INTO lake.{ROLLUP_TABLES[1]} {rows('hour', 4000, 3)}")
    assert reader.replica.refresh()
    assert reader.replica.status().snapshot_id == reader.current()
    assert reader.differences() == NO_DIFFERENCES
