"""`analytics loader` with warehouse_target=bigquery on the real broker, BigQuery replaced by a fake client
that keeps the tables' state: it resumes from loader_offsets, dead-letters invalid JSON, loads every other
record once, opens no DuckLake and runs no compaction; `--lag` reads the same offsets.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from analytics_core.clients import kafka_producer
from analytics_core.registry import register_event_schema
from analytics_core.serde import EventSerializer
from analytics_core.settings import Settings
from analytics_core.topics import Topics
from bench.events import iter_events
from generator.config import GeneratorConfig
from generator.run import run
from generator.sinks import KafkaSink
from loaders.lag import loader_lag
from loaders.warehouse_loader import WarehouseLoader
from tests.fake_bigquery import FakeWarehouse
from tests.integration.helpers import read_dead_letters

pytestmark = pytest.mark.integration
TRAFFIC = GeneratorConfig(seed=21, days=1, events_per_day=3_000, tenants=2, invalid_share=0.0)
RESUME_AT = 10  # partition 0's stored offset before the loader starts


def test_loader_writes_to_bigquery_from_the_stored_offsets(own_topics: Settings, tmp_path: Path) -> None:
    run(TRAFFIC, KafkaSink(own_topics))
    topic = Topics.from_settings(own_topics).events
    serialize = EventSerializer(register_event_schema(own_topics))
    producer = kafka_producer(own_topics)
    for text in ("{not json", '{"price": NaN}'):  # DuckDB's parser takes the second, PARSE_JSON does not
        event = {**next(iter(iter_events(1))), "properties": text}
        producer.produce(topic, serialize(event), key=b"t:u", partition=1)
    producer.flush(10)
    settings = own_topics.model_copy(
        update={
            "warehouse_target": "bigquery",
            "bigquery_project": "acme",
            "warehouse_path": tmp_path / "warehouse",
            "loader_batch_events": 1_000,
            "loader_batch_seconds": 0.5,
            "loader_compact_every_s": 0.001,  # DuckLake would compact on every pass of the loop
        }
    )
    client = FakeWarehouse()
    client.offsets[(topic, 0)] = RESUME_AT

    stats = WarehouseLoader(settings, bigquery_client=client).run(idle_exit_s=3.0, handle_signals=False)
    assert len(client.named("create_dataset")) == 1  # ensure_tables, once

    highs = {p.partition: p.high_watermark for p in loader_lag(settings, bigquery_client=client)}
    assert highs[0] > RESUME_AT
    bad = {(1, highs[1] - 2), (1, highs[1] - 1)}
    expected = {(p, o) for p, high in highs.items() for o in range(high)} - bad
    expected -= {(0, o) for o in range(RESUME_AT)}  # already loaded: the loader seeked past them
    assert set(client.raw) == expected and stats.loaded == len(expected)
    assert {(t, p): o for (t, p), o in client.offsets.items()} == {(topic, p): h for p, h in highs.items()}
    assert stats.dead_lettered == 2 and stats.fenced == 0 and stats.compactions == 0
    letters = read_dead_letters(own_topics, lambda d: d.source == "loader", 2)
    assert sorted(d.detail.split(":")[0] for d in letters) == [f"partition {p} offset {o}" for p, o in sorted(bad)]
    assert {d.reason for d in letters} == {"schema_violation"}
    assert len(client.named("load")) >= 1
    assert client.staged == {}  # every staging table dropped
    assert all(p.lag == 0 for p in loader_lag(settings, bigquery_client=client))
    assert not settings.warehouse_path.exists()  # no DuckLake catalog or data files

    # A restart reads the offsets back from loader_offsets and loads nothing twice.
    again = WarehouseLoader(settings, bigquery_client=client).run(idle_exit_s=3.0, handle_signals=False)
    assert again.loaded == 0 and set(client.raw) == expected
