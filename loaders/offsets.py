"""Kafka offsets kept in the warehouse, written in the same DuckLake transaction as the rows they cover."""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass

import duckdb
import pyarrow as pa

from analytics_core.warehouse import OFFSETS, RAW_EVENTS

NO_OFFSET = -1  # a partition the warehouse holds nothing of yet
RETRIES = 20


class Fenced(RuntimeError):
    """The stored offsets moved under us: another loader owns the partition now; the batch is dropped."""


@dataclass(frozen=True)
class PartitionLag:
    partition: int
    stored_offset: int  # next offset to load; NO_OFFSET when nothing is loaded yet
    high_watermark: int

    @property
    def lag(self) -> int:
        return self.high_watermark - max(self.stored_offset, 0)


def stored_offsets(con: duckdb.DuckDBPyConnection, alias: str, topic: str) -> dict[int, int]:
    """Next offset to load per partition, as committed in the warehouse."""
    sql = f"SELECT kafka_partition, max(next_offset) FROM {alias}.{OFFSETS} WHERE topic = ? GROUP BY 1"
    return {int(p): int(o) for p, o in con.execute(sql, [topic]).fetchall()}


def _retryable(exc: duckdb.Error) -> bool:
    # SQLite answers "database is locked" when another writer committed since our transaction began;
    # DuckLake raises a TransactionException on a logical conflict. Both mean: redo on fresh state.
    text = str(exc).lower()
    return isinstance(exc, duckdb.TransactionException) or "locked" in text or "conflict" in text


def commit_batch(
    con: duckdb.DuckDBPyConnection,
    alias: str,
    topic: str,
    rows: pa.Table,
    expected: dict[int, int],
    next_offsets: dict[int, int],
) -> None:
    """INSERT the rows and move the offsets in one transaction, if the stored offsets still equal `expected`.

    Raises Fenced when they do not (another loader committed these partitions meanwhile); retries
    commit conflicts, each time checking the offsets again.
    """
    parts = sorted(next_offsets)
    offsets = pa.table({"p": pa.array(parts, pa.int32()), "o": pa.array([next_offsets[p] for p in parts], pa.int64())})
    delay = 0.05
    for attempt in range(RETRIES):
        try:
            con.execute("BEGIN")
            stored = stored_offsets(con, alias, topic)
            moved = {
                p: stored.get(p, NO_OFFSET) for p in parts if stored.get(p, NO_OFFSET) != expected.get(p, NO_OFFSET)
            }
            if moved:
                con.execute("ROLLBACK")
                raise Fenced(f"offsets of {topic} moved to {moved} (expected {expected})")
            con.register("_loader_rows", rows)
            con.register("_loader_offsets", offsets)
            con.execute(f"INSERT INTO {alias}.{RAW_EVENTS} SELECT * FROM _loader_rows")
            # UPDATE-like delete + insert: two loaders moving one partition conflict, so one of them is fenced.
            con.execute(
                f"DELETE FROM {alias}.{OFFSETS} WHERE topic = ? AND kafka_partition IN (SELECT p FROM _loader_offsets)",
                [topic],
            )
            con.execute(f"INSERT INTO {alias}.{OFFSETS} SELECT ?, p, o, now() FROM _loader_offsets", [topic])
            con.execute("COMMIT")
            return
        except duckdb.Error as exc:
            _rollback(con)
            if not _retryable(exc) or attempt == RETRIES - 1:
                raise
            time.sleep(delay)
            delay = min(delay * 1.5, 1.0)
        finally:
            for view in ("_loader_rows", "_loader_offsets"):
                con.unregister(view)


def _rollback(con: duckdb.DuckDBPyConnection) -> None:
    with contextlib.suppress(duckdb.Error):  # no transaction open: the failed statement ended it
        con.execute("ROLLBACK")
