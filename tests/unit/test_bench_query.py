"""The query bench's pure parts: percentiles, request shifting, answer comparison, and its SQL on a tiny lake."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from analytics_core import warehouse
from analytics_core.settings import Settings
from api.models import QueryRequest
from bench.bench_query import (
    DASHBOARD,
    RAW_PATH,
    TENANT,
    Answer,
    Shape,
    api_answer,
    generate,
    mismatches,
    percentile,
    raw_answer,
)

END = datetime(2026, 11, 27, tzinfo=UTC)


def test_percentile_is_nearest_rank() -> None:
    values = [float(v) for v in range(1, 101)]
    assert percentile(values, 95) == 95.0
    assert percentile(values, 50) == 50.0
    assert percentile(values, 100) == 100.0
    assert percentile([3.0], 99) == 3.0
    with pytest.raises(ValueError):
        percentile([], 50)


@pytest.mark.parametrize("shape", [*DASHBOARD, RAW_PATH], ids=lambda s: s.name)
def test_every_repetition_is_a_distinct_valid_request_of_the_same_shape(shape: Shape) -> None:
    bodies = [shape.body(END, k) for k in range(20)]
    assert len({(b["start"], b["end"]) for b in bodies}) == 20  # each misses the answer cache
    for k, body in enumerate(bodies):
        request = QueryRequest.model_validate(body)
        assert request.end - request.start == shape.span
        assert request.end == END - k * shape.step


def test_day_buckets_outside_utc_are_refused() -> None:
    with pytest.raises(ValueError, match="UTC days"):
        Shape("x", ("events",), timedelta(days=7), "day", timezone="Asia/Kolkata")


def test_answers_are_keyed_alike_from_the_api_and_from_sql() -> None:
    api = {
        "rows": [
            {"bucket": "2026-11-26T19:00:00-05:00", "dimensions": {"device": "mobile"}, "values": {"events": 3.0}},
            {"bucket": "2026-11-26T20:00:00-05:00", "dimensions": {"device": "mobile"}, "values": {"events": 1.0}},
        ]
    }
    epoch = int(datetime(2026, 11, 27, tzinfo=UTC).timestamp())
    sql = [(epoch, "mobile", 3), (epoch + 3600, "mobile", 1)]
    a, r = api_answer(api, ["device"]), raw_answer(sql, ["device"], ["events"])
    assert a == r
    assert mismatches(a, r, {"events": "count"}) == []


def test_mismatches_exact_counts_and_sums_approximate_uniques_missing_rows_are_zero() -> None:
    key: tuple[int, tuple[str, ...]] = (0, ())
    other: tuple[int, tuple[str, ...]] = (3600, ())
    api: Answer = {key: {"events": 10.0, "revenue": 5.5, "active_users": 103.0}, other: {"events": 0.0}}
    raw: Answer = {key: {"events": 10.0, "revenue": 5.5, "active_users": 100.0}}
    kinds = {"events": "count", "revenue": "sum", "active_users": "unique"}
    assert mismatches(api, raw, kinds) == []  # 3 % off a unique count is within the bound; 0 = no row
    assert len(mismatches({key: {**api[key], "events": 11.0}}, raw, kinds)) == 1
    assert len(mismatches({key: {**api[key], "revenue": 5.51}}, raw, kinds)) == 1
    assert len(mismatches({key: {**api[key], "active_users": 110.0}}, raw, kinds)) == 1
    assert "events" in mismatches({}, raw, kinds)[0]


def test_generated_events_fill_the_year_and_every_bench_query_runs_on_them(lake: Settings) -> None:
    generate(lake, 5000, 200, END + timedelta(days=1))
    con = warehouse.connect(lake, read_only=True)
    try:
        table = f"{lake.warehouse_alias}.{warehouse.RAW_EVENTS}"
        count, first, last, countries, devices, bots = (
            con.execute(
                f"SELECT count(*), min(timestamp), max(timestamp), count(DISTINCT country), count(DISTINCT device),"
                f" count(*) FILTER (WHERE is_bot) FROM {table}"
            ).fetchone()
            or ()
        )
        assert count == 5000
        assert first >= END + timedelta(days=1) - timedelta(days=365) and last < END + timedelta(days=1)
        assert countries > 10 and devices == 4 and 0 < bots < 500
        for shape in DASHBOARD:
            start, stop = shape.range(END, 0)
            rows = con.execute(shape.sql(table), {"tenant": TENANT, "start": start, "end": stop}).fetchall()
            assert rows and all(len(r) == 1 + len(shape.group_by) + len(shape.metrics) for r in rows), shape.name
    finally:
        con.close()


def test_a_kept_lake_is_built_once_per_size(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    """prepare_lake builds into the kept directory slice by slice, reuses a complete lake of the same size."""
    import bench.bench_query as bq

    written: list[tuple[int, int, int | None]] = []
    builds: list[int] = []

    def fake_generate(
        settings: Settings, n: int, users: int, end: datetime, lo: int = 0, hi: int | None = None
    ) -> None:
        if lo == 0:  # fails if an earlier lake was left in place
            (settings.warehouse_path / "data").mkdir(parents=True)
        written.append((n, lo, hi))

    monkeypatch.setattr(bq, "generate", fake_generate)
    monkeypatch.setattr(bq, "build_dbt", lambda settings, scratch: builds.append(len(written)))
    monkeypatch.setattr(bq, "BUILD_EVERY", 400)
    settings = Settings().model_copy(
        update={"warehouse_path": tmp_path / "warehouse", "tenants_db": tmp_path / "tenants.sqlite"}
    )
    first = bq.prepare_lake(settings, tmp_path, 1000, 10)
    assert written == [(1000, 0, 400), (1000, 400, 800), (1000, 800, 1200)]
    assert builds == [1, 2, 3]  # a dbt build after each slice
    assert first.hour == 0 and settings.tenants_db.exists()
    assert bq.prepare_lake(settings, tmp_path, 1000, 10) == first and len(written) == 3  # reused
    bq.prepare_lake(settings, tmp_path, 200, 10)  # another size: the old lake is cleared, then built
    assert written[3:] == [(200, 0, 400)]
    (tmp_path / bq.READY_FILE).unlink()  # an unfinished build is never reused
    bq.prepare_lake(settings, tmp_path, 200, 10)
    assert written[4:] == [(200, 0, 400)]
