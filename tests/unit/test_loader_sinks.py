"""The committer over each warehouse sink: BigQuery through a fake client (no lake is opened), and invalid JSON
dead-lettered the same way on both sinks before the offsets move past it.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from analytics_core.deadletter import DeadLetter
from analytics_core.decoding import BatchDecoder
from analytics_core.serde import EventSerializer
from analytics_core.settings import Settings
from bench.events import iter_events
from loaders.batching import Batch
from loaders.committer import BatchCommitter
from loaders.sinks import WarehouseSink, open_sink
from tests.fake_bigquery import FakeWarehouse, params
from tests.unit.test_loader_committer import TOPIC, FakeConsumer, Rec, Store

EVENT = next(iter(iter_events(1)))


@dataclass
class BadJson(Rec):
    """A record whose properties are not JSON to BigQuery (and, unless DuckDB takes `text`, not to DuckDB)."""

    text: str = "{not json"

    def value(self) -> bytes:
        return EventSerializer(1)({**EVENT, "properties": self.text})


@dataclass
class DeadLetters:
    """Producer stand-in: keeps the dead letters and, per flush, how many transactions BigQuery had run."""

    client: FakeWarehouse | None = None
    letters: list[DeadLetter] = field(default_factory=list)
    unacked: int = 0
    acked_after: list[int] = field(default_factory=list)

    def __len__(self) -> int:
        return self.unacked

    def produce(self, topic: str, value: bytes, key: Any) -> None:
        self.letters.append(DeadLetter(**json.loads(value)))
        self.unacked += 1

    def flush(self, timeout: float) -> int:
        transactions = [sql for sql, _, _ in self.client.named("query") if "BEGIN" in sql] if self.client else []
        self.acked_after.append(len(transactions))
        self.unacked = 0
        return 0


def settings(tmp_path: Path, target: str) -> Settings:
    values = {"warehouse_path": tmp_path / "wh", "warehouse_target": target, "bigquery_project": "acme"}
    return Settings(_env_file=None, **values)  # type: ignore[arg-type, call-arg]


def committer(sink: WarehouseSink, dlq: DeadLetters) -> tuple[BatchCommitter, FakeConsumer, Batch]:
    consumer, batch = FakeConsumer(), Batch(100, 60.0)
    decoder = BatchDecoder(Store(), dlq, "dlq")  # type: ignore[arg-type]
    result = BatchCommitter(sink, consumer, decoder, dlq, batch)  # type: ignore[arg-type]
    result.expected.update(sink.stored_offsets())  # what assignment does
    return result, consumer, batch


def test_bigquery_sink_reads_offsets_loads_and_dead_letters_without_a_lake(tmp_path: Path) -> None:
    client = FakeWarehouse()
    client.offsets[(TOPIC, 0)] = 5  # partition 0 was loaded up to offset 5 before
    sink = open_sink(settings(tmp_path, "bigquery"), TOPIC, bigquery_client=client)
    assert len(client.named("create_dataset")) == 1  # ensure_tables, once
    dlq = DeadLetters(client)
    loader, consumer, batch = committer(sink, dlq)
    assert loader.expected == {0: 5}
    sql, job_config, _ = client.named("query")[-1]
    assert "loader_offsets" in sql and params(job_config) == {"topic": TOPIC}

    # NaN passes DuckDB's JSON check, not PARSE_JSON's: the strict check catches it.
    records = [BadJson(0, o) if o == 8 else Rec(0, o) for o in range(5, 15)]
    records += [BadJson(1, o, "NaN") if o == 2 else Rec(1, o) for o in range(5)]
    batch.add(records, loader.position())
    loader.flush()

    assert len(client.named("load")) == 1
    assert [s for s, _, _ in client.named("query") if s.startswith("BEGIN TRANSACTION")]
    assert set(client.raw) == {(r.p, r.o) for r in records} - {(0, 8), (1, 2)}
    assert client.offsets == {(TOPIC, 0): 15, (TOPIC, 1): 5} and client.staged == {}
    assert dlq.acked_after == [0]  # acknowledged before the transaction moved the offsets
    assert [(d.reason, d.source, d.tenant_id) for d in dlq.letters] == [("schema_violation", "loader", None)] * 2
    assert dlq.letters[0].detail == "partition 0 offset 8: properties: must be a JSON object (not valid JSON)"
    assert base64.b64decode(dlq.letters[1].payload) == records[-3].value()
    assert loader.stats.loaded == 13 and loader.stats.dead_lettered == 2 and consumer.commits == [{0: 15, 1: 5}]
    assert not sink.compacts
    loader.close()
    assert list(tmp_path.iterdir()) == []  # no DuckLake catalog or data files


def test_bigquery_never_fences_a_stale_commit(tmp_path: Path) -> None:
    client = FakeWarehouse()
    sink = open_sink(settings(tmp_path, "bigquery"), TOPIC, bigquery_client=client)
    loader, _, batch = committer(sink, DeadLetters())
    batch.add([Rec(0, o) for o in range(10)], loader.position())
    client.offsets[(TOPIC, 0)] = 20  # another loader took partition 0 and went further meanwhile
    loader.flush()
    assert loader.stats.fenced == 0 and loader.stats.batches == 1
    assert client.offsets == {(TOPIC, 0): 20} and len(client.raw) == 10  # offsets did not go back
    loader.close()


@pytest.mark.parametrize("target", ["duckdb", "bigquery"])
def test_both_sinks_dead_letter_invalid_json_and_commit_the_rest(tmp_path: Path, target: str) -> None:
    sink = open_sink(settings(tmp_path, target), TOPIC, bigquery_client=FakeWarehouse())
    dlq = DeadLetters()
    loader, _, batch = committer(sink, dlq)
    batch.add([BadJson(0, o) if o in (3, 7) else Rec(0, o) for o in range(10)], loader.position())
    loader.flush()
    assert [d.detail.split(":")[0] for d in dlq.letters] == ["partition 0 offset 3", "partition 0 offset 7"]
    assert {d.reason for d in dlq.letters} == {"schema_violation"}
    assert loader.stats.loaded == 8 and sink.stored_offsets() == {0: 10} and loader.expected == {0: 10}
    loader.close()
