"""The engine's in-memory replica of the rollups (api/engine/replica/) on a real DuckLake built and rebuilt by dbt.

The lake is test_query_engine's (the same generated events and cases). The replica must equal the
lake table for table, answer every case as raw SQL does, follow a dbt run that restates buckets
with late events, never show a query half a refresh, and keep serving, saying how old it is, when
the lake cannot be read.

Once engines are running, the lake is written by other processes, as in production (the loader,
dbt): warehouse.connect opens the SQLite catalog with Python's sqlite3, whose close in this process
would delete the catalog's -wal and -shm files under the engines' open connections (see
api.engine.query_engine.attach_lake). The test reads the lake through attach_lake for the same reason.
"""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb
import pytest

from analytics_core import warehouse
from analytics_core.settings import Settings
from api.engine.query_engine import QueryEngine, attach_lake
from api.engine.replica import Replica, ReplicaNotReady
from api.models import QueryResult
from tests import replica_checks
from tests.integration.dbt_runs import run_dbt
from tests.integration.query_lake import insert_block
from tests.integration.test_query_engine import CASES, FIRST_COPIES, NY, RECENT, Case, build_lake, check, expected

pytestmark = pytest.mark.integration
REPLICA = "lake_replica"
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def lake(tmp_path_factory: pytest.TempPathFactory) -> Settings:
    """test_query_engine's lake: two tenants' generated events loaded as the loader would, then dbt."""
    settings = Settings(
        warehouse_path=tmp_path_factory.mktemp("replica") / "warehouse",
        api_replica_refresh_s=0.1,
        _env_file=None,  # type: ignore[call-arg]
    )
    return build_lake(settings)


@pytest.fixture(scope="module")
def engine(lake: Settings) -> Iterator[QueryEngine]:
    engine = QueryEngine(lake)
    status = engine.wait_replica(120)
    assert status is not None and status.ready, status
    yield engine
    engine.close()


@pytest.fixture(scope="module")
def lake_engine(lake: Settings) -> Iterator[QueryEngine]:
    """The engine reading the lake, as before the replica."""
    engine = QueryEngine(lake.model_copy(update={"api_replica": False}))
    assert engine.replica_status() is None
    yield engine
    engine.close()


def truth_of(settings: Settings) -> duckdb.DuckDBPyConnection:
    """The test's own view of every event in the lake now: first copies, in an in-memory table."""
    con = attach_lake(settings)
    con.execute(f"CREATE TABLE truth AS {FIRST_COPIES.format(lake=settings.warehouse_alias)}")
    return con


def differences(engine: QueryEngine) -> dict[str, int]:
    return replica_checks.differences(engine._connection(), REPLICA)


def current_snapshot(engine: QueryEngine) -> int:
    return replica_checks.current_snapshot(engine._connection())


def caught_up(engine: QueryEngine, timeout: float = 60.0) -> None:
    snapshot = current_snapshot(engine)
    status = engine.wait_replica(timeout, snapshot)
    assert status is not None and status.snapshot_id == snapshot, status


def rows_of(result: QueryResult) -> tuple[Any, ...]:
    return tuple((r.bucket, tuple(sorted(r.dimensions.items())), tuple(sorted(r.values.items()))) for r in result.rows)


NO_DIFFERENCES = replica_checks.NO_DIFFERENCES


def test_the_replica_equals_the_lake(engine: QueryEngine) -> None:
    caught_up(engine)
    assert differences(engine) == NO_DIFFERENCES
    status = engine.replica_status()
    assert status is not None and status.rows["fct_metrics_hour"] > 1000 and status.error is None


@pytest.fixture(scope="module")
def truth(lake: Settings) -> Iterator[duckdb.DuckDBPyConnection]:
    con = truth_of(lake)
    yield con
    con.close()


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_replica_answers_equal_raw_sql_and_the_lakes(
    engine: QueryEngine, lake_engine: QueryEngine, truth: duckdb.DuckDBPyConnection, case: Case
) -> None:
    assert engine._rollup_alias() == REPLICA
    result = engine.run(case.tenant, case.request())
    check(result, expected(truth, case, result.granularity), case)
    assert not result.provenance.incomplete
    from_lake = lake_engine.run(case.tenant, case.request())
    assert result.provenance.parts == from_lake.provenance.parts
    assert result.provenance.watermark == from_lake.provenance.watermark
    assert [(r.bucket, r.dimensions) for r in result.rows] == [(r.bucket, r.dimensions) for r in from_lake.rows]
    for mine, theirs in zip(result.rows, from_lake.rows, strict=True):
        assert mine.values.keys() == theirs.values.keys()
        for metric, value in mine.values.items():
            other = theirs.values[metric]
            assert value == other or value == pytest.approx(other, rel=1e-9, abs=1e-9), (case.id, mine.bucket, metric)


def test_until_the_replica_has_loaded_queries_read_the_lake(
    lake: Settings, truth: duckdb.DuckDBPyConnection, monkeypatch: pytest.MonkeyPatch
) -> None:
    def never(self: Replica, cursor: duckdb.DuckDBPyConnection) -> bool:
        raise ReplicaNotReady("held back by the test")

    monkeypatch.setattr(Replica, "_rebuild", never)
    engine = QueryEngine(lake)
    try:
        time.sleep(0.3)
        status = engine.replica_status()
        assert status is not None and not status.ready and "held back" in (status.error or "")
        assert engine._rollup_alias() == "lake"
        case = CASES[4]
        result = engine.run(case.tenant, case.request())
        check(result, expected(truth, case, result.granularity), case)
    finally:
        engine.close()


def test_an_unreadable_lake_is_served_from_the_replica_saying_how_old_it_is(
    lake: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    engine = QueryEngine(lake.model_copy(update={"api_replica_stale_s": 0.5, "api_replica_refresh_s": 0.05}))
    try:
        assert engine.wait_replica(60) is not None
        case = CASES[1]
        fresh = engine.run(case.tenant, case.request())
        assert not fresh.provenance.incomplete
        replica = engine._replica
        assert replica is not None

        def unreadable(cursor: duckdb.DuckDBPyConnection) -> int:
            raise duckdb.IOException("catalog unreachable (test)")

        # Neither the catalog's latest snapshot id (read outside a transaction: None when it fails)
        # nor the lake's current snapshot can be read.
        monkeypatch.setattr(replica, "_latest", lambda cursor: None)
        monkeypatch.setattr(replica, "_current", unreadable)
        deadline = time.monotonic() + 10
        while (replica.status().age_s() or 0) <= 0.6 and time.monotonic() < deadline:
            time.sleep(0.05)
        status = replica.status()
        assert status.ready and "catalog unreachable" in (status.error or "")
        stale = engine.run(case.tenant, case.request())
        assert rows_of(stale) == rows_of(fresh)
        caveats = " ".join(stale.provenance.incomplete)
        assert "could not be read" in caveats and f"snapshot {status.snapshot_id}" in caveats, caveats

        monkeypatch.undo()
        deadline = time.monotonic() + 30  # failed refreshes back off, up to 10 s apart
        while replica.status().error is not None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not engine.run(case.tenant, case.request()).provenance.incomplete
    finally:
        engine.close()


# -- the lake changes: late events and dbt (these tests change the module's lake) --------------


def child(warehouse_path: str, action: str, salt: str) -> None:
    """In another process: add late events (`late`) or run dbt (`dbt`) on the lake."""
    settings = Settings(warehouse_path=Path(warehouse_path), _env_file=None)  # type: ignore[call-arg]
    if action == "late":
        add_late_events(settings, salt)
    else:
        run_dbt(settings, "run")


def in_another_process(settings: Settings, action: str, salt: str = "") -> None:
    code = "import sys; from tests.integration.test_query_replica import child; child(*sys.argv[1:])"
    done = subprocess.run(
        [sys.executable, "-c", code, str(settings.warehouse_path), action, salt],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, f"{action} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"


def add_late_events(settings: Settings, salt: str) -> None:
    """Late events (new Kafka offsets, old event times) in buckets every grain already has rows for."""
    con = warehouse.connect(settings)
    try:
        row = con.execute("SELECT max(_kafka_offset) + 1 FROM lake.main.raw_events WHERE _kafka_partition = 0")
        offset = int((row.fetchone() or (0,))[0])
        late = (
            (datetime(2026, 3, 6, 5, tzinfo=UTC), datetime(2026, 3, 6, 7, tzinfo=UTC), 40),  # UTC days, hours
            (datetime(2026, 3, 8, 12, tzinfo=UTC), datetime(2026, 3, 8, 14, tzinfo=UTC), 40),  # New York's DST day
            (RECENT + timedelta(hours=10), RECENT + timedelta(hours=11, minutes=30), 60),  # minutes
        )
        for i, (start, end, n) in enumerate(late):
            offset = insert_block(con, "lake.main.raw_events", "tenant_a", start, end, n, f"{salt}{i}", 0, offset)
    finally:
        con.close()


def test_a_dbt_run_restating_buckets_reaches_the_replica_exactly(
    lake: Settings, engine: QueryEngine, lake_engine: QueryEngine
) -> None:
    before = engine.replica_status()
    assert before is not None
    in_another_process(lake, "late", "late")
    in_another_process(lake, "dbt")
    caught_up(engine)
    status = engine.replica_status()
    assert status is not None and status.refreshes > before.refreshes
    assert differences(engine) == NO_DIFFERENCES
    assert engine.watermark("tenant_a") == lake_engine.watermark("tenant_a")
    # The restated rollups came from DuckLake's change feed, not from copying the tables again.
    assert not {"fct_metrics_day", "fct_metrics_hour", "fct_metrics_minute"} & set(status.copied)

    truth = truth_of(lake)
    try:
        for case in CASES:
            result = engine.run(case.tenant, case.request())
            check(result, expected(truth, case, result.granularity), case)
    finally:
        truth.close()


def test_queries_during_a_dbt_run_see_the_replica_before_or_after_each_refresh(
    lake: Settings, engine: QueryEngine
) -> None:
    """A thread of queries while dbt rebuilds: no error, and each answer the old one or the new one.

    Each case reads one rollup table (UTC days: days; New York days: hours; Kolkata minutes:
    minutes), which a dbt run rewrites in one snapshot: any other answer would be half a refresh.
    """
    cases = [c for c in CASES if c.id in ("utc_days", "new_york_days_spring_forward", "kolkata_minutes")]
    assert len(cases) == 3

    def answers() -> dict[str, tuple[Any, ...]]:
        return {c.id: rows_of(engine.run(c.tenant, c.request())) for c in cases}

    old = answers()
    status = engine.replica_status()
    assert status is not None
    refreshes = status.refreshes
    in_another_process(lake, "late", "later")
    failures: list[BaseException] = []
    done = threading.Event()

    def build() -> None:
        try:
            in_another_process(lake, "dbt")
        except BaseException as exc:  # reported by the main thread
            failures.append(exc)
        finally:
            done.set()

    seen: dict[str, set[tuple[Any, ...]]] = {c.id: set() for c in cases}
    builder = threading.Thread(target=build)
    builder.start()
    asked, final = 0, None
    try:  # ask until dbt is done and the replica holds its last snapshot
        while True:
            for case_id, rows in answers().items():
                seen[case_id].add(rows)
            asked += 1
            if final is None and done.is_set():
                final = current_snapshot(engine)
            status = engine.replica_status()
            if final is not None and status is not None and (status.snapshot_id or 0) >= final:
                break
            assert asked < 100_000
    finally:
        builder.join()
    assert not failures, failures
    new = answers()
    status = engine.replica_status()
    assert status is not None and status.refreshes > refreshes
    for case in cases:
        assert new[case.id] != old[case.id], case.id  # the late events changed every case
        assert seen[case.id] == {old[case.id], new[case.id]}, (case.id, len(seen[case.id]))
    assert asked > 10
    assert differences(engine) == NO_DIFFERENCES


def test_a_new_york_day_is_the_merge_of_its_hours(engine: QueryEngine, lake_engine: QueryEngine) -> None:
    """Unique users of days made of hour sketches: merged by the API, equal from replica and lake."""
    case = Case("ny_days", ["active_users"], datetime(2026, 3, 5, tzinfo=NY), datetime(2026, 3, 11, tzinfo=NY), "day")
    request = case.request().model_copy(update={"timezone": "America/New_York"})
    mine, theirs = engine.run("tenant_a", request), lake_engine.run("tenant_a", request)
    assert {p.source for p in mine.provenance.parts} == {"rollup_hour"}
    assert rows_of(mine) == rows_of(theirs) and len(mine.rows) == 6
