"""The shared batch decoder (analytics_core/decoding.py) counting the records it cannot use, not dead-lettering them.

The loader already sends those records to tracking.events_dlq; the realtime layer only has to skip
exactly the same ones (undecodable, out of the bounds of analytics_core/bounds.py, or `properties`
that are not JSON), so its counters match the warehouse's.
"""

from __future__ import annotations

from typing import cast

import duckdb
import numpy as np
import pyarrow as pa
from confluent_kafka import Message, Producer

from analytics_core.bounds import Bounds
from analytics_core.columnar import SCHEMA, decode_columns
from analytics_core.deadletter import Reason
from analytics_core.decoding import BatchDecoder, Record
from analytics_core.registry import SchemaStore


class CountingDecoder(BatchDecoder):
    """Columnar decoding with the reference decoder as judge; refused records are counted and skipped.

    `decode_usable` is the loader's `decode` without its per-record Python: the consumer's batch
    already holds every record's partition and offset as arrays.
    """

    source = "realtime"
    dropped = "skipped (the loader dead-letters them)"

    def __init__(self, store: SchemaStore, bounds: Bounds | None = None) -> None:
        super().__init__(store, cast(Producer, None), dlq_topic="", bounds=bounds)
        # DuckDB's JSON parser is the one the warehouse INSERT uses: the same rows fail here.
        self._con = duckdb.connect()
        self._con.execute("SET threads = 1")
        # DuckDB imports pandas the first time an Arrow table is registered (~0.5 s): at start, not in a batch.
        self._con.register("_warm_up", pa.table({"x": [1]}))
        self._con.unregister("_warm_up")

    def dead_letter(self, record: Record, reason: Reason, detail: str, tenant_id: str | None = None) -> None:
        self.dead_lettered += 1
        self.by_reason[reason] += 1

    def decode_usable(self, records: list[Message], partitions: np.ndarray, offsets: np.ndarray) -> pa.Table:
        """The rows of the records the warehouse loader would load, in Kafka order, with _kafka_partition and
        _kafka_offset (`partitions` and `offsets` are the records')."""
        raw = list(map(Message.value, records))
        values = [v or b"" for v in raw] if None in raw else cast("list[bytes]", raw)
        table, bad = decode_columns(values, self.known_ids)
        index = np.flatnonzero(~bad)
        if bad.any():
            table = table.filter(pa.array(~bad))
            rescued, rescued_index = self.slow_path(cast("list[Record]", records), values, np.flatnonzero(bad))
            if rescued:
                table = pa.concat_tables([table, pa.Table.from_pylist(rescued, schema=SCHEMA)])
                index = np.concatenate([index, np.asarray(rescued_index, dtype=np.int64)])
                order = np.argsort(index, kind="stable")  # the rescued rows back in their place
                table, index = table.take(pa.array(order)), index[order]
        table, index = self.drop_out_of_bounds(table, cast("list[Record]", records), index)
        table = table.append_column("_kafka_partition", pa.array(partitions[index].astype(np.int32)))
        table = table.append_column("_kafka_offset", pa.array(offsets[index]))
        return self.drop_invalid_json(self._con, table, cast("list[Record]", records))

    def close(self) -> None:
        self._con.close()
