"""The warehouse loader on the real broker: counts and revenue against the truth, DLQ, restart, concurrent readers."""

from __future__ import annotations

import multiprocessing
import time
from collections import defaultdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from analytics_core import warehouse
from analytics_core.clients import kafka_producer
from analytics_core.deadletter import DeadLetter
from analytics_core.settings import Settings
from analytics_core.topics import Topics
from generator.config import GeneratorConfig
from generator.run import run
from generator.sinks import KafkaSink
from loaders.lag import loader_lag
from loaders.warehouse_loader import WarehouseLoader
from tests.integration.helpers import read_dead_letters, read_events

pytestmark = pytest.mark.integration

CONFIG = GeneratorConfig(seed=5, days=2, events_per_day=6_000, tenants=2, start_us=1_704_067_200_000_000)


def loader_settings(settings: Settings, tmp: Path, batch: int = 2_000) -> Settings:
    return settings.model_copy(
        update={
            "warehouse_path": tmp / "warehouse",
            "loader_batch_events": batch,
            "loader_batch_seconds": 0.5,
            "loader_compact_every_s": 0.0,
        }
    )


def load_all(settings: Settings) -> Any:
    return WarehouseLoader(settings).run(idle_exit_s=3.0, handle_signals=False)


def query(settings: Settings, sql: str) -> list[tuple]:
    con = warehouse.connect(settings)
    try:
        return con.execute(sql.replace("{lake}", settings.warehouse_alias)).fetchall()
    finally:
        con.close()


def revenue_cents_by_day(events: list[dict[str, Any]]) -> dict[tuple[str, str], int]:
    """Business revenue per (UTC day, tenant) computed in Python: humans, first send of each event_id."""
    seen: set[str] = set()
    out: dict[tuple[str, str], int] = defaultdict(int)
    for e in events:
        if e["is_bot"] or e["event_id"] in seen:
            continue
        seen.add(e["event_id"])
        if e["event_type"] == "purchase" and e["revenue"] is not None:
            day = datetime.fromtimestamp(e["timestamp"] / 1e6, UTC).date().isoformat()
            out[(day, e["tenant_id"])] += round(e["revenue"] * 100)
    return dict(out)


WAREHOUSE_REVENUE = """
    SELECT strftime(timestamp::DATE, '%Y-%m-%d'), tenant_id, sum(round(revenue * 100))::BIGINT
    FROM (SELECT * FROM {lake}.raw_events WHERE NOT is_bot QUALIFY row_number() OVER (PARTITION BY event_id) = 1)
    WHERE event_type = 'purchase' GROUP BY ALL
"""


def test_backfill_loads_exactly_once_and_matches_truth(own_topics: Settings, tmp_path: Path) -> None:
    result = run(CONFIG, KafkaSink(own_topics))
    delivered = result.statuses["delivered"]
    truth = result.truth.to_dict()
    settings = loader_settings(own_topics, tmp_path)

    stats = load_all(settings)
    assert stats.loaded == delivered and stats.dead_lettered == 0
    total, distinct_positions, distinct_ids = query(
        settings,
        "SELECT count(*), count(DISTINCT (_kafka_partition, _kafka_offset)), count(DISTINCT event_id) "
        "FROM {lake}.raw_events",
    )[0]
    assert total == distinct_positions == delivered  # every record once
    assert total - distinct_ids == truth["counts"]["total"]["duplicate"]  # resends kept as rows: dbt dedupes
    assert distinct_ids == truth["counts"]["total"]["valid"]

    expected = {
        (day, tenant): cells["revenue_cents"]
        for day, tenants in truth["days"].items()
        for tenant, cells in tenants.items()
    }
    expected = {k: v for k, v in expected.items() if v}
    loaded = {(d, t): int(c) for d, t, c in query(settings, WAREHOUSE_REVENUE) if c}
    independent = {
        k: v for k, v in revenue_cents_by_day(read_events(own_topics, lambda e: True, delivered)).items() if v
    }
    assert loaded == expected == independent

    # Restart: nothing new, nothing loaded twice; offsets and lag are readable.
    assert load_all(settings).loaded == 0
    assert query(settings, "SELECT count(*) FROM {lake}.raw_events")[0][0] == delivered
    lag = loader_lag(settings)
    assert sum(p.high_watermark for p in lag) == delivered and all(p.lag == 0 for p in lag)


def test_undecodable_record_goes_to_dlq_and_partition_continues(own_topics: Settings, tmp_path: Path) -> None:
    run(GeneratorConfig(seed=9, days=1, events_per_day=500, tenants=1, invalid_share=0.0), KafkaSink(own_topics))
    topic = Topics.from_settings(own_topics).events
    producer = kafka_producer(own_topics)
    producer.produce(topic, b"\x00\x00\x00\x00\x63\x00garbage", key=b"t:u", partition=0)  # unknown schema id 99
    producer.produce(topic, b"not even framed", key=b"t:u", partition=0)
    producer.flush(10)
    run(GeneratorConfig(seed=10, days=1, events_per_day=500, tenants=1, invalid_share=0.0), KafkaSink(own_topics))
    settings = loader_settings(own_topics, tmp_path)

    stats = load_all(settings)
    assert stats.dead_lettered == 2
    letters = read_dead_letters(own_topics, lambda d: d.source == "loader", 2)
    assert {d.reason for d in letters} == {"format"} and all(isinstance(d, DeadLetter) for d in letters)
    assert any("schema id 99" in d.detail for d in letters)
    highs = {p.partition: p.high_watermark for p in loader_lag(settings)}
    stored = dict(query(settings, "SELECT kafka_partition, max(next_offset) FROM {lake}.loader_offsets GROUP BY 1"))
    assert stored[0] == highs[0]  # partition 0 went on past the bad records
    assert query(settings, "SELECT count(*) FROM {lake}.raw_events")[0][0] == sum(highs.values()) - 2


def _reader(settings: Settings, seconds: float, out: Any, ready: Any) -> None:
    """Another process: read the lake over and over while the loader commits."""
    counts = []
    con = warehouse.connect(settings, create=False)
    ready.set()  # attached: the loader may start (a busy machine takes seconds to spawn and import this)
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        counts.append(con.execute(f"SELECT count(*) FROM {settings.warehouse_alias}.raw_events").fetchone()[0])
        time.sleep(0.05)
    out.put(counts)


def test_loader_commits_while_another_process_reads(own_topics: Settings, tmp_path: Path) -> None:
    run(CONFIG, KafkaSink(own_topics))
    settings = loader_settings(own_topics, tmp_path, batch=1_000)
    warehouse.connect(settings).close()  # tables exist before the reader attaches
    ctx = multiprocessing.get_context("spawn")
    out, ready = ctx.Queue(), ctx.Event()
    reader = ctx.Process(target=_reader, args=(settings, 8.0, out, ready))
    reader.start()
    assert ready.wait(60), "the reader process did not attach the lake within 60 s"
    stats = load_all(settings)
    counts = out.get(timeout=60)
    reader.join(30)
    assert stats.batches > 3
    assert counts == sorted(counts) and counts[-1] == stats.loaded  # saw the commits land, never a partial one
    assert len(set(counts)) > 2
