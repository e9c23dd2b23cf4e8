"""Decoded raw-event rows as the loader commits them, for tests of the commit and replay paths."""

from __future__ import annotations

import pyarrow as pa

from analytics_core.columnar import decode_columns
from analytics_core.serde import EventSerializer
from bench.events import iter_events


def raw_rows(n: int, partition: int, first: int, seed: int = 7) -> pa.Table:
    """n generated events as Arrow rows with Kafka positions partition/first.. (bench.events' seed)."""
    table, _ = decode_columns([EventSerializer(1)(e) for e in iter_events(n, seed=seed)], {1})
    table = table.append_column("_kafka_partition", pa.array([partition] * n, pa.int32()))
    return table.append_column("_kafka_offset", pa.array(range(first, first + n), pa.int64()))
