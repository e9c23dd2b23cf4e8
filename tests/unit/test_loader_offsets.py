"""Offsets move only together with their rows, and only from the value the loader last saw (fencing)."""

from __future__ import annotations

import pyarrow as pa
import pytest

from analytics_core import warehouse
from analytics_core.settings import Settings
from loaders.offsets import NO_OFFSET, Fenced, commit_batch, stored_offsets
from tests.unit.raw_rows import raw_rows


def test_commit_moves_offsets_with_rows_and_fences_a_stale_writer(lake: Settings) -> None:
    a, b = warehouse.connect(lake), warehouse.connect(lake)
    assert stored_offsets(a, "lake", "t") == {}
    commit_batch(a, "lake", "t", raw_rows(10, 0, 0), {}, {0: 10})
    assert stored_offsets(b, "lake", "t") == {0: 10}
    # b still believes partition 0 is unloaded: its batch must be refused, not added.
    with pytest.raises(Fenced):
        commit_batch(b, "lake", "t", raw_rows(10, 0, 0), {0: NO_OFFSET}, {0: 10})
    commit_batch(b, "lake", "t", raw_rows(5, 0, 10), {0: 10}, {0: 15})
    commit_batch(a, "lake", "t", raw_rows(5, 1, 0), {0: 15}, {1: 5})
    assert stored_offsets(a, "lake", "t") == {0: 15, 1: 5}
    assert a.execute(
        "SELECT count(*), count(DISTINCT (_kafka_partition, _kafka_offset)) FROM lake.raw_events"
    ).fetchone() == (20, 20)


def test_a_failed_insert_moves_no_offset(lake: Settings) -> None:
    con = warehouse.connect(lake)
    broken = raw_rows(3, 0, 0).set_column(10, "properties", pa.array(["{}", "not json", "{}"], pa.large_string()))
    with pytest.raises(Exception, match="JSON"):
        commit_batch(con, "lake", "t", broken, {}, {0: 3})
    assert stored_offsets(con, "lake", "t") == {}
    assert con.execute("SELECT count(*) FROM lake.raw_events").fetchone() == (0,)
