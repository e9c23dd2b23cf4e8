"""How the in-memory replica is brought to the lake's current snapshot: the refresh logic of Replica.

Every `api_replica_refresh_s` the replica's thread calls refresh(). It reads the lake's latest
snapshot id (one query of the catalog database, outside any transaction on the lake: _latest);
when it moved, it lists the snapshots since the replica's and
applies, for each replicated table they touched, only what changed: DuckLake's change feed
(`ducklake_table_changes`) gives each changed row id's inserted and deleted rows, deletes with the
whole deleted row. Per row id the first change tells whether the row was there before (a delete:
remove that row from the replica, matched on every non-list column) and the last whether it is
there after (an insert: add it), so a bucket restated twice between two refreshes, or a row
inserted and deleted again, nets out (_apply_changes). The watermarks table, a few rows that every
dbt run creates anew, is copied whole (_apply). When the history cannot be replayed (a rollup table
created again, as `dbt --full-refresh` does, or altered; the replica's snapshot expired; a change
feed failing) the replica copies the lake whole into new tables, as it does at start, and swaps
them in (_rebuild). After a change, a checkpoint compresses what was written (_checkpoint).

Each refresh is one DuckDB transaction over all four tables, reading the lake at one snapshot: a
query (itself one read transaction, api/engine/query_engine.py) sees the replica before or after
it, never half of it, and never a watermark ahead of the rollups it reads.

Each refresh also follows the lake's history (api/engine/versions.py, LakeHistory: the last snapshot
that changed each rollup table, the watermarks and the staged events) and publishes, with the
replica's snapshot, the Versions the answer cache checks its entries against.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import duckdb

from api.engine.replica.status import ReplicaNotReady, ReplicaStatus
from api.engine.versions import ROLLUP_TABLES, WATERMARKS, LakeHistory, Marks, read_marks

log = logging.getLogger(__name__)

TABLES = (*ROLLUP_TABLES, WATERMARKS)
LOAD_ROWS = 1_000_000  # rows copied per transaction (and checkpoint) by the initial load
# Rows are written in this order (each part of the initial load, each refresh's inserts): a row
# group then holds few tenants, dimension sets and metrics, and its min/max let a scan skip it.
_ORDER = ("tenant_id", "dimension_set", "metric", "window_start")
_BORN = "change_type IN ('insert', 'update_postimage')"
_GONE = "change_type IN ('delete', 'update_preimage')"
_DELTA = "__replica_delta_"  # prefix of the tables a refresh stages a rollup's net changes in
_NEW = "__replica_new_"  # prefix of the tables a rebuild fills before swapping them in
WHOLE_AFTER_FAILURES = 3
CHECKPOINT_WAIT_S = 2.0


class _RebuildNeeded(Exception):
    """The lake's changes since the replica's snapshot cannot be replayed: copy it whole again."""


def _unreadable(exc: duckdb.Error) -> bool:
    """An error of reaching the lake (I/O, a busy or locked catalog), not of the change feed itself."""
    text = str(exc).lower()
    return isinstance(exc, duckdb.IOException | duckdb.InterruptException) or any(
        m in text for m in ("database is locked", "database is busy", "disk i/o", "could not open")
    )


@dataclass
class _Table:
    table_id: int
    columns: tuple[tuple[str, str], ...]  # (name, type), in order


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _order(table: _Table) -> str:
    """ORDER BY of the rows written to a replica table (none for a table without those columns)."""
    names = {c for c, _ in table.columns}
    return f" ORDER BY {', '.join(_ORDER)}" if all(c in names for c in _ORDER) else ""


def _metadata(lake: str) -> str:
    """The database in which DuckLake attaches the catalog of the lake `lake` (SQLite or Postgres)."""
    return _quote(f"__ducklake_metadata_{lake}")


def _memory_bytes(cursor: duckdb.DuckDBPyConnection) -> int:
    """Bytes held by in-memory tables of the whole DuckDB instance (the engine keeps no others)."""
    row = cursor.execute("SELECT sum(memory_usage_bytes) FROM duckdb_memory() WHERE tag = 'IN_MEMORY_TABLE'").fetchone()
    return int(row[0] or 0) if row else 0


class ReplicaRefresh:
    """The refresh half of Replica (api/engine/replica/__init__.py), which holds the state below and the thread.

    refresh() loads the replica or brings it to the lake's current snapshot; the rest are its steps.
    """

    # Set by Replica.__init__.
    lake: str
    alias: str
    _connect: Callable[[], duckdb.DuckDBPyConnection]
    _tables: dict[str, _Table]
    _status: ReplicaStatus
    _lock: threading.Lock
    _stop: threading.Event
    _active: duckdb.DuckDBPyConnection | None
    _feed_failures: int
    _rebuild_next: bool
    _history: LakeHistory  # the lake's history as far as the published replica has followed it
    _latest_readable: bool  # whether the catalog's latest snapshot id can be read directly (_latest)

    # Defined by Replica: publish a new status (after a good refresh, also clearing the failure counts).
    _publish: Callable[..., None]
    _succeeded: Callable[..., None]

    def refresh(self) -> bool:
        """Load the replica, or bring it to the lake's current snapshot; True when it changed."""
        with self._lock:
            cursor = self._connect().cursor()
            self._active = cursor
            try:
                if self._tables and not self._rebuild_next and self._latest(cursor) == self._status.snapshot_id:
                    # Nothing new: confirmed current without a read transaction on the lake.
                    self._succeeded(ready=True, synced_at=time.time())
                    return False
                changed = False
                if not self._tables or self._rebuild_next:
                    changed = self._rebuild(cursor)
                try:
                    # After a rebuild too: it took a while, and the replica is ready once it is current.
                    changed = self._refresh(cursor) or changed
                except _RebuildNeeded as why:
                    log.info("replica: copying the lake whole again (%s)", why)
                    self._rebuild(cursor)
                    changed = self._refresh(cursor) or True
                if changed:
                    self._checkpoint(cursor)  # compresses the rows just written, drops the deleted ones
                return changed
            finally:
                self._active = None
                cursor.close()

    def _rebuild(self, cursor: duckdb.DuckDBPyConnection) -> bool:
        """Copy the four tables as of the lake's current snapshot into new tables, then swap them in.

        The first load, and whenever the lake's history cannot be replayed (a rollup table created
        again, its columns changed, the replica's snapshot expired, the change feed failing). Rollup
        tables are copied LOAD_ROWS lake row ids at a time (DuckLake prunes by row id), each part its
        own transaction followed by a checkpoint, which compresses it: an uncompressed copy of a year
        of hour rows would hold several times the memory at once. Every part reads the same snapshot
        (time travel). Queries keep reading the old tables (or the lake) until one transaction drops
        them and renames the new ones.
        """
        seen_at = time.time()
        began = time.perf_counter()
        with _transaction(cursor):
            snapshot = self._current(cursor)
            snapshot_time = self._snapshot_time(cursor, snapshot)
            history, _ = self._history.follow(cursor, snapshot)
            ids = self._lake_ids(cursor)
            missing = [t for t in TABLES if t not in ids]
            if missing:
                raise ReplicaNotReady(f"the lake has no {', '.join(missing)} yet (dbt has not built them)")
            tables = {t: _Table(ids[t], self._columns(cursor, t)) for t in TABLES}
            spans = {}
            for name in ROLLUP_TABLES:
                span = cursor.execute(f"SELECT min(rowid), max(rowid) FROM {self.lake}.main.{name}").fetchone()
                spans[name] = (int(span[0]), int(span[1])) if span and span[0] is not None else (0, -1)
                cursor.execute(
                    f"CREATE OR REPLACE TABLE {self.alias}.main.{_NEW}{name} AS"
                    f" SELECT * FROM {self.lake}.main.{name} LIMIT 0"
                )
                cursor.execute(
                    f"CREATE OR REPLACE TABLE {self.alias}.main.{_DELTA}{name} AS"
                    f" SELECT true AS born, * FROM {self.lake}.main.{name} LIMIT 0"
                )
            cursor.execute(
                f"CREATE OR REPLACE TABLE {self.alias}.main.{_NEW}{WATERMARKS} AS"
                f" SELECT * FROM {self.lake}.main.{WATERMARKS}"
            )
            marks = read_marks(cursor, f"{self.alias}.main.{_NEW}{WATERMARKS}")
        for name in ROLLUP_TABLES:
            first, last = spans[name]
            for start in range(first, last + 1, LOAD_ROWS):
                if self._stop.is_set():
                    raise ReplicaNotReady("the engine is closing")
                with _transaction(cursor):
                    cursor.execute(
                        f"INSERT INTO {self.alias}.main.{_NEW}{name} SELECT * FROM {self.lake}.main.{name}"
                        f" AT (VERSION => {snapshot}) WHERE rowid >= ? AND rowid < ?{_order(tables[name])}",
                        [start, start + LOAD_ROWS],
                    )
                self._checkpoint(cursor)
        with _transaction(cursor):
            for name in TABLES:
                cursor.execute(f"DROP TABLE IF EXISTS {self.alias}.main.{name}")
                cursor.execute(f"ALTER TABLE {self.alias}.main.{_NEW}{name} RENAME TO {name}")
        self._checkpoint(cursor)  # frees the old tables' memory
        rows = self._counts(cursor, TABLES)
        self._tables = tables
        self._rebuild_next = False
        self._history = history
        self._publish(
            versions=history.versions(snapshot, marks),
            snapshot_id=snapshot,
            snapshot_time=snapshot_time,
            synced_at=seen_at,
            rows=rows,
            refreshes=self._status.refreshes + 1,
            changes={t: (0, n) for t, n in rows.items()},
            copied=TABLES,
        )
        log.info(
            "replica copied whole: snapshot %s, %s rows (%s), %.1f s, ~%.0f MB in memory",
            snapshot,
            sum(rows.values()),
            ", ".join(f"{t} {n}" for t, n in rows.items()),
            time.perf_counter() - began,
            _memory_bytes(cursor) / 1e6,
        )
        return True

    def _refresh(self, cursor: duckdb.DuckDBPyConnection) -> bool:
        """Apply what changed in the lake since the replica's snapshot, in one transaction."""
        seen_at = time.time()
        began = time.perf_counter()
        old = self._status.snapshot_id
        assert old is not None
        with _transaction(cursor):
            # In a transaction DuckLake reads every table, and the change feed, at the snapshot it began at.
            snapshot = self._current(cursor)
            if snapshot == old:
                self._succeeded(ready=True, synced_at=seen_at)
                return False
            changed, snapshot_time, feed = self._changed_tables(cursor, old, snapshot)
            if changed is None:
                raise _RebuildNeeded(f"snapshot {old} has expired from the lake")
            tables: dict[str, _Table] = {}
            counts: dict[str, tuple[int, int]] = {}
            copied: list[str] = []
            if changed:
                ids = self._lake_ids(cursor)
                missing = [t for t in TABLES if t not in ids]
                if missing:
                    raise ReplicaNotReady(f"the lake no longer has {', '.join(missing)}")
                # A table created again keeps its name but not its id.
                changed |= {t for t in TABLES if self._tables[t].table_id != ids[t]}
                tables = {t: _Table(ids[t], self._columns(cursor, t)) for t in changed}
                renewed = [
                    t
                    for t, table in tables.items()
                    if table.columns != self._tables[t].columns
                    or (t in ROLLUP_TABLES and table.table_id != self._tables[t].table_id)
                ]
                if renewed:
                    raise _RebuildNeeded(f"{', '.join(renewed)} created again or altered")
                for name in TABLES:
                    if name in changed:
                        counts[name] = self._apply(cursor, name, tables[name], old, snapshot, copied)
            rows = {**self._status.rows, **self._counts(cursor, counts)}
            history, _ = self._history.follow(cursor, snapshot, feed if self._history.until == old else None)
            known = self._status.versions
            marks: Mapping[str, Marks] = (
                known.marks
                if known is not None and WATERMARKS not in counts
                else read_marks(cursor, f"{self.alias}.main.{WATERMARKS}")
            )
        self._tables.update(tables)
        self._history = history
        more = {"refreshes": self._status.refreshes + 1, "changes": counts, "copied": tuple(copied)} if counts else {}
        self._succeeded(
            ready=True,
            snapshot_id=snapshot,
            snapshot_time=snapshot_time,
            synced_at=seen_at,
            rows=rows,
            versions=history.versions(snapshot, marks),
            **more,
        )
        if counts:
            log.info(
                "replica refreshed: snapshot %s -> %s, %s, %.0f ms",
                old,
                snapshot,
                ", ".join(f"{t} -{d} +{i}" for t, (d, i) in counts.items()),
                (time.perf_counter() - began) * 1000,
            )
        return bool(counts)

    def _checkpoint(self, cursor: duckdb.DuckDBPyConnection) -> bool:
        """Checkpoint the replica: compress what was written, drop deleted rows, free dropped tables.

        Queries keep reading meanwhile, except that none may be older than the replica's last DDL
        (the tables a rebuild creates and swaps): such a query ends within milliseconds, so the
        checkpoint is tried again a little while. False when it could not run (the next one will).
        """
        deadline = time.monotonic() + CHECKPOINT_WAIT_S
        while True:
            try:
                cursor.execute(f"CHECKPOINT {self.alias}")
                return True
            except duckdb.TransactionException:
                if time.monotonic() > deadline or self._stop.is_set():
                    log.debug("replica checkpoint skipped: queries older than its last DDL still running")
                    return False
                time.sleep(0.01)

    def _latest(self, cursor: duckdb.DuckDBPyConnection) -> int | None:
        """The lake's latest snapshot id, read from its catalog database as DuckLake attached it (None: unknown).

        One catalog query, outside any transaction on the lake: `current_snapshot()` in a read
        transaction costs the lake's whole snapshot setup (3-4 ms of CPU, against ~1 ms), which
        the refresh thread paid every second. Any error (the catalog busy, a DuckLake that names
        its catalog database otherwise) leaves the answer to the read transaction of _refresh().
        """
        if not self._latest_readable:
            return None
        try:
            row = cursor.execute(f"SELECT max(snapshot_id) FROM {_metadata(self.lake)}.ducklake_snapshot").fetchone()
        except duckdb.CatalogException:
            self._latest_readable = False  # not how this DuckLake names it: do not try again
            return None
        except duckdb.Error:
            return None
        return int(row[0]) if row and row[0] is not None else None

    def _current(self, cursor: duckdb.DuckDBPyConnection) -> int:
        row = cursor.execute(f"SELECT id FROM {self.lake}.current_snapshot()").fetchone()
        assert row is not None
        return int(row[0])

    def _snapshot_time(self, cursor: duckdb.DuckDBPyConnection, snapshot: int) -> datetime | None:
        row = cursor.execute(
            f"SELECT snapshot_time FROM ducklake_snapshots('{self.lake}') WHERE snapshot_id = ?", [snapshot]
        ).fetchone()
        return row[0] if row else None

    def _counts(self, cursor: duckdb.DuckDBPyConnection, names: Iterable[str]) -> dict[str, int]:
        out = {}
        for name in names:
            row = cursor.execute(f"SELECT count(*) FROM {self.alias}.main.{name}").fetchone()
            out[name] = int(row[0]) if row else 0
        return out

    def _changed_tables(
        self, cursor: duckdb.DuckDBPyConnection, old: int, snapshot: int
    ) -> tuple[set[str] | None, datetime | None, list[tuple[int, Any]]]:
        """Replicated tables that snapshots (old, snapshot] changed (None: that history is expired); commit time;
        the snapshots [old, snapshot] and their changes (for the history the answer cache checks)."""
        rows = cursor.execute(
            f"SELECT snapshot_id, snapshot_time, changes FROM ducklake_snapshots('{self.lake}')"
            " WHERE snapshot_id >= ? AND snapshot_id <= ? ORDER BY snapshot_id",
            [old, snapshot],
        ).fetchall()
        snapshot_time = rows[-1][1] if rows and rows[-1][0] == snapshot else None
        feed = [(int(snapshot_id), changes) for snapshot_id, _, changes in rows]
        if not rows or rows[0][0] != old:  # the replica's snapshot expired: its changes are gone
            return None, snapshot_time, feed
        touched: set[str] = set()
        for _, _, changes in rows[1:]:
            for values in (changes or {}).values():
                touched.update(str(v) for v in values or ())
        changed = set()
        for name, table in self._tables.items():
            # Tables are named by id (inserted into, deleted from, merged) or by schema.name (created).
            if {str(table.table_id), name, f"main.{name}"} & touched:
                changed.add(name)
        return changed, snapshot_time, feed

    def _lake_ids(self, cursor: duckdb.DuckDBPyConnection) -> dict[str, int]:
        rows = cursor.execute(
            f"SELECT table_name, table_id FROM ducklake_table_info('{self.lake}') WHERE list_contains(?, table_name)",
            [list(TABLES)],
        ).fetchall()
        return {str(name): int(table_id) for name, table_id in rows}

    def _columns(self, cursor: duckdb.DuckDBPyConnection, name: str) -> tuple[tuple[str, str], ...]:
        return tuple((str(r[0]), str(r[1])) for r in cursor.execute(f"DESCRIBE {self.lake}.main.{name}").fetchall())

    def _apply(
        self, cursor: duckdb.DuckDBPyConnection, name: str, lake: _Table, old: int, snapshot: int, copied: list[str]
    ) -> tuple[int, int]:
        """Bring one table to the snapshot: a rollup by its change feed, the watermarks (a few rows) copied whole.

        (rows removed, rows added)
        """
        if name != WATERMARKS:
            try:
                return self._apply_changes(cursor, name, lake, old, snapshot)
            except duckdb.Error as exc:
                if _unreadable(exc):
                    raise
                # A feed that cannot be applied (whatever the cause) is not retried for ever.
                self._feed_failures += 1
                if self._feed_failures >= WHOLE_AFTER_FAILURES:
                    self._rebuild_next = True
                raise
        # No DDL here: a checkpoint cannot run while a query older than the replica's last DDL is open.
        copied.append(name)
        before = self._counts(cursor, [name])[name]
        cursor.execute(f"DELETE FROM {self.alias}.main.{name}")
        cursor.execute(f"INSERT INTO {self.alias}.main.{name} SELECT * FROM {self.lake}.main.{name}")
        return before, self._counts(cursor, [name])[name]

    def _apply_changes(
        self, cursor: duckdb.DuckDBPyConnection, name: str, table: _Table, old: int, snapshot: int
    ) -> tuple[int, int]:
        """The net change feed of (old, snapshot]: remove the rows that were there, add the ones that are."""
        names = [_quote(c) for c, _ in table.columns]
        keys = [_quote(c) for c, kind in table.columns if kind != "BLOB"]  # sketches not compared
        listed = ", ".join(names)
        delta = f"{self.alias}.main.{_DELTA}{name}"  # created by the rebuild: no DDL in a refresh
        cursor.execute(f"DELETE FROM {delta}")
        cursor.execute(
            f"INSERT INTO {delta} (born, {listed}) SELECT {_BORN}, {listed} FROM ("
            f" SELECT *,"
            f" row_number() OVER (PARTITION BY rowid ORDER BY snapshot_id, {_BORN}) AS first_change,"
            f" row_number() OVER (PARTITION BY rowid ORDER BY snapshot_id DESC, {_BORN} DESC) AS last_change"
            f" FROM ducklake_table_changes('{self.lake}', 'main', '{name}', ?, ?))"
            f" WHERE (first_change = 1 AND {_GONE}) OR (last_change = 1 AND {_BORN})",
            [old + 1, snapshot],
        )
        row = cursor.execute(f"SELECT count(*) FILTER (WHERE NOT born), count(*) FILTER (WHERE born) FROM {delta}")
        gone, born = row.fetchone() or (0, 0)
        if gone:
            match = " AND ".join(f"r.{k} IS NOT DISTINCT FROM d.{k}" for k in keys)
            cursor.execute(
                f"DELETE FROM {self.alias}.main.{name} AS r USING (SELECT * FROM {delta} WHERE NOT born) AS d"
                f" WHERE {match}"
            )
        if born:
            target = f"{self.alias}.main.{name}"
            cursor.execute(f"INSERT INTO {target} ({listed}) SELECT {listed} FROM {delta} WHERE born{_order(table)}")
        return int(gone), int(born)


@contextlib.contextmanager
def _transaction(cursor: duckdb.DuckDBPyConnection) -> Iterator[None]:
    cursor.execute("BEGIN TRANSACTION")
    try:
        yield
    except BaseException:
        with contextlib.suppress(duckdb.Error):
            cursor.execute("ROLLBACK")
        raise
    cursor.execute("COMMIT")
