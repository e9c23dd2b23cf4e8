"""Scheduled DuckLake maintenance: merge the small files micro-batches leave behind, then drop the old ones."""

from __future__ import annotations

import logging

import duckdb

log = logging.getLogger(__name__)
# Snapshots older than this are expired so the files merged away can be deleted; time travel within
# the window keeps working, and a reader that started before it still finds its files.
KEEP_SNAPSHOTS = "1 hour"


def compact(con: duckdb.DuckDBPyConnection, alias: str) -> bool:
    """Merge adjacent small files of every table and clean up; False (logged) when a writer got in the way."""
    try:
        con.execute(f"CALL ducklake_merge_adjacent_files('{alias}')")
        con.execute(f"CALL ducklake_expire_snapshots('{alias}', older_than => now() - INTERVAL '{KEEP_SNAPSHOTS}')")
        con.execute(f"CALL ducklake_cleanup_old_files('{alias}', cleanup_all => true)")
    except duckdb.Error as exc:
        # Another loader committed meanwhile (optimistic concurrency): the next run merges instead.
        log.warning("compaction of %s skipped: %s", alias, exc)
        return False
    return True


def data_files(con: duckdb.DuckDBPyConnection, alias: str, table: str) -> int:
    """Number of Parquet data files of a table in the current snapshot."""
    row = con.execute(f"SELECT count(*) FROM ducklake_list_files('{alias}', '{table}')").fetchone()
    return int(row[0]) if row else 0
