"""Kafka records of tracking.events → the Arrow rows of raw_events, shared by the loader and the realtime layer.

`Record` is what a decoder needs of a Kafka message; `BatchDecoder` decodes a batch (columnar fast
path, analytics_core/columnar.py, with the reference decoder as judge) and dead-letters what cannot be
loaded; `invalid_json` finds the rows whose properties DuckDB refuses. The realtime layer subclasses
the decoder to skip exactly the records the loader dead-letters.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Sequence
from typing import Any, Protocol

import duckdb
import numpy as np
import pyarrow as pa
from confluent_kafka import Producer

from analytics_core.bounds import Bounds
from analytics_core.columnar import SCHEMA, decode_columns
from analytics_core.deadletter import DeadLetter, Reason
from analytics_core.registry import SchemaStore
from analytics_core.serde import EventDeserializer, UnknownSchemaIdError, WireFormatError
from analytics_core.topics import EVENTS_SUBJECT

log = logging.getLogger(__name__)


class Record(Protocol):
    """What decoding needs of a Kafka record (confluent_kafka.Message fits)."""

    def value(self) -> bytes | None: ...
    def partition(self) -> int | None: ...
    def offset(self) -> int | None: ...
    def key(self) -> Any: ...


class BatchDecoder:
    """Columnar decoding with the reference decoder as the judge of records the fast path refuses.

    Rows outside analytics_core/bounds.py (revenue 1e308, NaN, year 0001 …: records that bypassed the
    collector or predate its bounds) are dead-lettered as out_of_range, never loaded.
    """

    source = "loader"
    dropped = "dead-lettered"  # what happens to a record it cannot use, for the log

    def __init__(self, store: SchemaStore, dlq: Producer, dlq_topic: str, bounds: Bounds | None = None) -> None:
        self.store = store
        self.known_ids = store.ids_for(EVENTS_SUBJECT)
        self.dlq = dlq
        self.dlq_topic = dlq_topic
        self.bounds = Bounds() if bounds is None else bounds
        self.dead_lettered = 0
        self.by_reason: Counter[str] = Counter()  # dead letters by reason, since the start

    def decode(self, records: list[Record]) -> pa.Table:
        """raw_events rows (canonical columns, then Kafka partition and offset) of the decodable records."""
        values = [r.value() or b"" for r in records]
        table, bad = decode_columns(values, self.known_ids)
        index = np.flatnonzero(~bad)
        if bad.any():
            table = table.filter(pa.array(~bad))
            rescued, rescued_index = self.slow_path(records, values, np.flatnonzero(bad))
            if rescued:
                table = pa.concat_tables([table, pa.Table.from_pylist(rescued, schema=SCHEMA)])
                index = np.concatenate([index, np.asarray(rescued_index, dtype=np.int64)])
        table, index = self.drop_out_of_bounds(table, records, index)
        parts = np.fromiter((r.partition() or 0 for r in records), dtype=np.int32, count=len(records))
        offs = np.fromiter((r.offset() or 0 for r in records), dtype=np.int64, count=len(records))
        table = table.append_column("_kafka_partition", pa.array(parts[index]))
        return table.append_column("_kafka_offset", pa.array(offs[index]))

    def slow_path(self, records: list[Record], values: list[bytes], bad: np.ndarray) -> tuple[list[dict], list[int]]:
        """The reference decoder over records[i] for i in `bad`: (the events it accepts, their indexes); the
        records it refuses are dead-lettered as format errors."""
        rescued: list[dict] = []
        rescued_index: list[int] = []
        refreshed = False
        for i in bad.tolist():
            try:
                try:
                    event = EventDeserializer(self.known_ids)(values[i])
                except UnknownSchemaIdError:
                    if refreshed:
                        raise
                    # A schema version registered after we started: look the ids up once before rejecting.
                    refreshed = True
                    self.known_ids = self.store.ids_for(EVENTS_SUBJECT)
                    event = EventDeserializer(self.known_ids)(values[i])
            except WireFormatError as exc:
                self.dead_letter(records[i], "format", str(exc))
                continue
            rescued.append(event)
            rescued_index.append(i)
        return rescued, rescued_index

    def drop_out_of_bounds(
        self, table: pa.Table, records: Sequence[Record], index: np.ndarray
    ) -> tuple[pa.Table, np.ndarray]:
        """The rows (of records[index[i]]) within the bounds; the others are dead-lettered as out_of_range.

        Vectorised over the batch; Python runs only per bad row.
        """
        bad = self.bounds.out_of_bounds(table)
        if not bad.any():
            return table, index
        rows = np.flatnonzero(bad)
        details = self.bounds.details(table, rows)
        tenants = table.column("tenant_id").take(pa.array(rows)).to_pylist()
        for row, detail, tenant in zip(rows.tolist(), details, tenants, strict=True):
            self.dead_letter(records[int(index[row])], "out_of_range", detail, tenant)
        first = records[int(index[rows[0]])]
        log.warning(
            "%s %d record(s) out of range; the first: tenant %s, partition %s offset %s: %s",
            self.dropped,
            len(rows),
            tenants[0],
            first.partition(),
            first.offset(),
            details[0],
        )
        return table.filter(pa.array(~bad)), index[~bad]

    def drop_invalid_json(self, con: duckdb.DuckDBPyConnection, rows: pa.Table, records: list[Record]) -> pa.Table:
        """Rows whose properties DuckDB accepts as JSON; the others are dead-lettered (schema_violation)."""
        return self.drop_invalid_json_at(rows, records, invalid_json(con, rows))

    def drop_invalid_json_at(self, rows: pa.Table, records: list[Record], invalid: set[tuple[int, int]]) -> pa.Table:
        """Rows not at the (partition, offset) positions in `invalid`; those are dead-lettered as invalid JSON."""
        if not invalid:
            return rows
        by_position = {(r.partition(), r.offset()): r for r in records}
        for key in sorted(invalid):
            record = by_position[key]
            self.dead_letter(record, "schema_violation", "properties: must be a JSON object (not valid JSON)")
        positions = zip(
            rows.column("_kafka_partition").to_pylist(), rows.column("_kafka_offset").to_pylist(), strict=True
        )
        keep = [pos not in invalid for pos in positions]
        return rows.filter(pa.array(keep))

    def dead_letter(self, record: Record, reason: Reason, detail: str, tenant_id: str | None = None) -> None:
        value = record.value() or b""
        letter = DeadLetter(
            reason=reason,
            detail=f"partition {record.partition()} offset {record.offset()}: {detail}",
            tenant_id=tenant_id,
            received_at=time.time_ns() // 1000,
            payload=DeadLetter.raw_payload(value),
            source=self.source,
        )
        key: Any = record.key()
        self.dlq.produce(self.dlq_topic, letter.to_json(), key)
        self.dead_lettered += 1
        self.by_reason[reason] += 1


def invalid_json(con: duckdb.DuckDBPyConnection, rows: pa.Table) -> set[tuple[int, int]]:
    """(partition, offset) of the rows whose properties DuckDB's JSON parser refuses; any connection will do."""
    con.register("_loader_check", rows)
    try:
        sql = "SELECT _kafka_partition, _kafka_offset FROM _loader_check WHERE NOT json_valid(properties)"
        return {(int(p), int(o)) for p, o in con.execute(sql).fetchall()}
    finally:
        con.unregister("_loader_check")
