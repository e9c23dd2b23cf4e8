"""What the loader needs from a warehouse (`WarehouseSink`), and its two sides: DuckLake and BigQuery.

The committer reads stored offsets, lets the sink turn away rows it would refuse (dead letters), commits
on the writer thread and, after a failed commit, asks the sink which rows to try again. `open_sink`
picks the sink from `settings.warehouse_target`; the loader and `analytics loader --lag` both use it.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from typing import TYPE_CHECKING, Any, NoReturn, Protocol

import duckdb
import pyarrow as pa

from analytics_core import warehouse
from analytics_core.decoding import BatchDecoder, Record, invalid_json
from analytics_core.settings import Settings
from analytics_core.topics import LOADER_GROUP
from analytics_core.writer_lock import Held, WriterLockBusy
from loaders import compaction, offsets

if TYPE_CHECKING:
    from loaders.bigquery_writer import BigQueryWriter

log = logging.getLogger(__name__)
# offsets.commit_batch's signature: (connection, alias, topic, rows, expected, next_offsets).
CommitBatch = Callable[[duckdb.DuckDBPyConnection, str, str, pa.Table, dict[int, int], dict[int, int]], None]
# warehouse.writer_lock for one holder: (timeout seconds or None) -> the lock held for a `with` block.
WriterLock = Callable[[float | None], AbstractContextManager[Held | None]]


class WarehouseSink(Protocol):
    """One topic's rows and stored offsets in one warehouse."""

    topic: str
    compacts: bool  # has maintenance to run every loader_compact_every_s
    lock_wait_s: float  # how long the commits waited for the warehouse writer lock (while dbt built), in all

    def stored_offsets(self) -> dict[int, int]:
        """Next offset to load per partition, as committed in the warehouse (main thread)."""
        ...

    def check(self, rows: pa.Table, records: list[Record], decoder: BatchDecoder) -> pa.Table:
        """Main thread, before the batch's dead letters are acknowledged: dead-letter and drop the rows
        the commit would refuse."""
        ...

    def commit(self, rows: pa.Table, expected: dict[int, int], next_offsets: dict[int, int]) -> None:
        """Rows and offsets in one transaction (writer thread). Raises offsets.Fenced when the sink
        fences and the stored offsets are no longer `expected`."""
        ...

    def salvage(
        self, exc: BaseException, rows: pa.Table, records: list[Record], decoder: BatchDecoder
    ) -> pa.Table | None:
        """Main thread, after commit raised `exc`: the rows to commit instead (the others dead-lettered),
        or None when `exc` stands."""
        ...

    def compact(self) -> bool:
        """Run the maintenance; False when it was skipped (another writer got in the way)."""
        ...

    def close(self) -> None: ...


class DuckLakeSink:
    """DuckLake behind the WarehouseSink seam: fenced commits, invalid JSON found by the INSERT, compaction.

    `commit_batch` writes a batch and its offsets in one transaction (loaders/offsets.py); tests pass
    one that fails or races another loader. `writer_lock` (warehouse.writer_lock for the loader) is held
    around each commit and each compaction, so they never overlap a dbt build's commits.
    """

    compacts = True

    def __init__(
        self,
        con: duckdb.DuckDBPyConnection,
        alias: str,
        topic: str,
        commit_batch: CommitBatch = offsets.commit_batch,
        writer_lock: WriterLock | None = None,
    ) -> None:
        self.con, self.alias, self.topic = con, alias, topic
        self._commit_batch = commit_batch
        self._writer_lock: WriterLock = writer_lock or _no_lock
        self.lock_wait_s = 0.0
        # One DuckDB thread: the INSERT runs beside the main thread's decoding on a 2-core machine, and
        # a second DuckDB thread doubled its CPU (Parquet writing, measured) without making it faster.
        con.execute("SET threads = 1")
        # cursor(): the same DuckDB instance and attached lake with transactions of its own, so the
        # main thread can read offsets on `con` while a commit runs.
        self._writer_con = con.cursor()

    def stored_offsets(self) -> dict[int, int]:
        return offsets.stored_offsets(self.con, self.alias, self.topic)

    def check(self, rows: pa.Table, records: list[Record], decoder: BatchDecoder) -> pa.Table:
        return rows  # the INSERT validates the JSON itself; what it refuses is salvaged afterwards

    def commit(self, rows: pa.Table, expected: dict[int, int], next_offsets: dict[int, int]) -> None:
        # Waits while a dbt build holds the lock (the main thread goes on reading Kafka meanwhile).
        with self._writer_lock(None) as held:
            if held is not None:
                self.lock_wait_s += held.waited_s
            self._commit_batch(self._writer_con, self.alias, self.topic, rows, expected, next_offsets)

    def salvage(
        self, exc: BaseException, rows: pa.Table, records: list[Record], decoder: BatchDecoder
    ) -> pa.Table | None:
        if not isinstance(exc, duckdb.ConversionException):
            return None
        # Invalid JSON in properties fails the whole INSERT: dead-letter those rows, commit the rest.
        return decoder.drop_invalid_json(self.con, rows, records)

    def compact(self) -> bool:
        try:
            with self._writer_lock(0):  # never waits: the main thread must go on reading Kafka
                return compaction.compact(self.con, self.alias)
        except WriterLockBusy as busy:
            log.info("compaction of %s skipped: the writer lock is held by %s", self.alias, busy.holder)
            return False

    def close(self) -> None:
        self._writer_con.close()
        try:
            self.con.close()
        except duckdb.Error as exc:
            log.warning("closing the warehouse: %s", exc)


def _not_json(constant: str) -> NoReturn:
    raise ValueError(f"{constant} is not JSON")


def _finite(text: str) -> float:
    value = float(text)
    if math.isinf(value):
        raise ValueError(f"{text} is out of range")
    return value


# RFC 8259 only. DuckDB's parser also takes NaN, Infinity, trailing commas and numbers beyond a double,
# which PARSE_JSON is not documented to accept; Python's also takes NaN and Infinity unless told not to.
_STRICT = json.JSONDecoder(parse_constant=_not_json, parse_float=_finite)


def _strictly_invalid(rows: pa.Table) -> set[tuple[int, int]]:
    bad = set()
    columns = (rows.column(name).to_pylist() for name in ("properties", "_kafka_partition", "_kafka_offset"))
    for text, part, offset in zip(*columns, strict=True):
        if text is None:
            continue  # NULL stays NULL through PARSE_JSON
        try:
            _STRICT.decode(text)
        except (ValueError, RecursionError):
            bad.add((part, offset))
    return bad


class BigQuerySink:
    """BigQuery behind the seam: never fences, checks the JSON before it writes, has no compaction."""

    compacts = False
    lock_wait_s = 0.0  # no writer lock: BigQuery takes concurrent writers

    def __init__(self, writer: BigQueryWriter, topic: str) -> None:
        self.writer, self.topic = writer, topic
        # In memory, no lake: only to run the same JSON check as the DuckLake path.
        self._json = duckdb.connect()
        self._json.execute("SET threads = 1")

    def stored_offsets(self) -> dict[int, int]:
        return self.writer.stored_offsets(self.topic)

    def check(self, rows: pa.Table, records: list[Record], decoder: BatchDecoder) -> pa.Table:
        # PARSE_JSON fails the whole transaction on one invalid value: find those rows first, with
        # DuckDB's parser (as the DuckLake path does) and a strict one, and dead-letter them.
        invalid = invalid_json(self._json, rows) | _strictly_invalid(rows)
        return decoder.drop_invalid_json_at(rows, records, invalid)

    def commit(self, rows: pa.Table, expected: dict[int, int], next_offsets: dict[int, int]) -> None:
        # `expected` is not needed: rows already present are skipped and offsets only move forward,
        # so a loader that lost its partitions cannot duplicate rows or rewind offsets.
        self.writer.write_batch(rows, self.topic, next_offsets)

    def salvage(
        self, exc: BaseException, rows: pa.Table, records: list[Record], decoder: BatchDecoder
    ) -> pa.Table | None:
        return None  # the rows were checked before the write; any failure stops the loader

    def compact(self) -> bool:
        return False  # BigQuery manages its own storage

    def close(self) -> None:
        self._json.close()
        close = getattr(self.writer.client, "close", None)  # a real Client holds HTTP connections
        if close is not None:
            close()


def open_sink(
    settings: Settings, topic: str, bigquery_client: Any = None, commit_batch: CommitBatch = offsets.commit_batch
) -> WarehouseSink:
    """The sink of `settings.warehouse_target`, its tables created; BigQuery opens no DuckLake.

    `bigquery_client` replaces the google.cloud.bigquery.Client built from the settings, `commit_batch`
    DuckLake's commit (tests).
    """
    if settings.warehouse_target == "bigquery":
        # Imported only here: google.cloud.bigquery takes ~0.4 s to import, which DuckLake runs skip.
        from loaders.bigquery_writer import BigQueryWriter

        writer = BigQueryWriter(settings, client=bigquery_client)
        writer.ensure_tables()
        return BigQuerySink(writer, topic)
    holder = f"loader of group {settings.topic_prefix}{LOADER_GROUP}"

    def writer_lock(timeout: float | None) -> AbstractContextManager[Held | None]:
        return warehouse.writer_lock(settings, holder, timeout)

    return DuckLakeSink(warehouse.connect(settings), settings.warehouse_alias, topic, commit_batch, writer_lock)


def _no_lock(timeout: float | None) -> AbstractContextManager[Held | None]:
    return nullcontext()
