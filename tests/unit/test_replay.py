"""Replay's warehouse rewind: rows at or past the Kafka offsets go, offsets move back, never forward."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from analytics_core import warehouse
from analytics_core.settings import Settings
from analytics_core.times import parse_utc
from loaders.offsets import NO_OFFSET, Fenced, commit_batch, stored_offsets
from loaders.replay import ReplayPlan, rewind_warehouse
from tests.unit.raw_rows import raw_rows

SINCE = datetime(2026, 11, 25, tzinfo=UTC)


def test_parse_utc_reads_offsets_z_and_naive_times_as_utc() -> None:
    assert parse_utc("2026-11-25T01:00:00+01:00") == SINCE
    assert parse_utc("2026-11-25T00:00:00Z") == SINCE
    assert parse_utc(" 2026-11-25 00:00:00 ") == SINCE
    assert parse_utc("2026-11-25T00:00:00Z").isoformat() == "2026-11-25T00:00:00+00:00"


def test_rewind_deletes_rows_past_the_offsets_and_moves_the_offsets_back(lake: Settings) -> None:
    con = warehouse.connect(lake)
    commit_batch(con, "lake", "t", raw_rows(10, 0, 0, seed=0), {}, {0: 10})
    commit_batch(con, "lake", "t", raw_rows(8, 1, 0, seed=1), {}, {1: 8})
    [expected_earliest] = con.execute(
        "SELECT min(timestamp) FROM lake.raw_events WHERE (_kafka_partition = 0 AND _kafka_offset >= 6) "
        "OR (_kafka_partition = 1 AND _kafka_offset >= 8)"
    ).fetchall()[0]

    # Partition 1 has nothing at or after `since` (its high watermark); partition 2 was never loaded.
    plan = rewind_warehouse(con, "lake", "t", SINCE, {0: 6, 1: 8, 2: 0})

    assert plan.rows_deleted == 4 and plan.offsets == {0: 6, 1: 8}
    assert [(p.partition, p.previous_offset, p.offset, p.rows_deleted) for p in plan.partitions] == [
        (0, 10, 6, 4),
        (1, 8, 8, 0),
        (2, NO_OFFSET, NO_OFFSET, 0),
    ]
    assert plan.earliest_deleted == expected_earliest.astimezone(UTC)
    assert stored_offsets(con, "lake", "t") == {0: 6, 1: 8}
    assert con.execute("SELECT count(*) FROM lake.loader_offsets").fetchone() == (2,)  # rewritten, not added
    assert con.execute(
        "SELECT _kafka_partition, count(*), max(_kafka_offset) FROM lake.raw_events GROUP BY 1 ORDER BY 1"
    ).fetchall() == [(0, 6, 5), (1, 8, 7)]


def test_rewind_never_moves_a_partition_forward(lake: Settings) -> None:
    con = warehouse.connect(lake)
    commit_batch(con, "lake", "t", raw_rows(5, 0, 0, seed=0), {}, {0: 5})
    plan = rewind_warehouse(con, "lake", "t", SINCE, {0: 9})  # the loader has not reached offset 9 yet
    assert plan.offsets == {0: 5} and plan.rows_deleted == 0 and plan.earliest_deleted is None
    assert plan.rebuild_from == SINCE
    assert stored_offsets(con, "lake", "t") == {0: 5}


def test_a_loader_that_loaded_past_the_rewind_is_fenced(lake: Settings) -> None:
    loader, replay = warehouse.connect(lake), warehouse.connect(lake)
    commit_batch(loader, "lake", "t", raw_rows(10, 0, 0, seed=0), {}, {0: 10})
    rewind_warehouse(replay, "lake", "t", SINCE, {0: 4})
    # The loader still believes partition 0 stands at 10: its next batch must be refused, it re-seeks.
    with pytest.raises(Fenced):
        commit_batch(loader, "lake", "t", raw_rows(3, 0, 10, seed=0), {0: 10}, {0: 13})
    commit_batch(loader, "lake", "t", raw_rows(6, 0, 4, seed=0), {0: 4}, {0: 10})
    assert loader.execute(
        "SELECT count(*), count(DISTINCT _kafka_offset), min(_kafka_offset), max(_kafka_offset) FROM lake.raw_events"
    ).fetchone() == (10, 10, 0, 9)


def test_rebuild_from_is_the_earlier_of_since_and_the_earliest_deleted_event() -> None:
    late = datetime(2026, 11, 20, tzinfo=UTC)
    assert ReplayPlan("t", SINCE, (), late).rebuild_from == late
    assert ReplayPlan("t", SINCE, (), datetime(2026, 11, 26, tzinfo=UTC)).rebuild_from == SINCE
    assert ReplayPlan("t", SINCE, (), None).rebuild_from == SINCE
