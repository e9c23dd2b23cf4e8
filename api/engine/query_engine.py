"""QueryEngine: one query from request to answer: validate, plan, read, answer with provenance.

It validates (validation.py), plans (planner.py) and hands the query to one of two strategies:
from_rollups.py (rollups, plus Redis past the watermark) or from_raw_events.py (staged raw events).

One DuckDB connection with the lake attached read-only; every query runs on a cursor of its own,
so FastAPI's thread pool can run queries at once. Every SQL is tenant-scoped and takes filter
values and times as bound parameters; column names come from the catalogue only.

The rollups and watermarks are read from an in-memory replica attached to the same connection
(api/engine/replica/) once it has loaded, each query in one read transaction of it so that a refresh
lands before or after the query, never inside; before that, or with `api_replica` off, from the
lake. Raw events are always read from the lake.

Every answer comes with a Stamp (api/engine/versions.py): the lake snapshot its data is at least as
new as, the tables it read and its watermarks; versions() says what the lake holds now, so the answer
cache can tell whether a stored answer is still current. With the replica, both come from the replica
(its snapshot, the history it follows in its refresh); without it (or before it has loaded), from the
catalog, followed here and kept VERSIONS_TTL_S.
"""

from __future__ import annotations

import contextlib
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import duckdb
import pyarrow as pa
import redis
import yaml

from analytics_core import warehouse
from analytics_core.catalogue import DBT_PROJECT_FILE, Catalogue, definition_fingerprints, get_catalogue
from analytics_core.realtime_keys import RealtimeKeys
from analytics_core.settings import Settings
from api.engine import definitions, planner
from api.engine.answer import Answer, build_result
from api.engine.errors import QueryError, WarehouseUnavailable
from api.engine.from_raw_events import answer_from_raw
from api.engine.from_rollups import RollupPath
from api.engine.realtime_reads import RealtimeSource
from api.engine.replica import Replica, ReplicaStatus, iso
from api.engine.validation import IDENTIFIER, check_raw_range, validate
from api.engine.versions import WATERMARKS, LakeHistory, Marks, Stamp, Versions, read_marks
from api.models import QueryRequest, QueryResult

__all__ = ["QueryEngine", "QueryError", "WarehouseUnavailable"]

WATERMARK_TTL_S = 5.0  # an older watermark only moves more of the range to Redis, which holds it too
# Without the replica, how long what the catalog says of the lake's changes is kept before it is read again:
# a cached answer may be served this long after the warehouse changed (the replica lags about as much).
VERSIONS_TTL_S = 1.0
LOCK_RETRIES = 3
# After a Redis error, queries skip Redis this long: a client's connection retries can take seconds,
# which every query would pay while Redis is down.
REDIS_RETRY_AFTER_S = 10.0
_UNAVAILABLE = (duckdb.IOException, duckdb.TransactionException, duckdb.CatalogException)
_BUSY_MESSAGES = ("database is locked", "database is busy")
_T = TypeVar("_T")


def minute_retention_days(path: Path = DBT_PROJECT_FILE) -> int:
    """How long the minute rollups are kept (dbt var minute_retention_days, the one place it is set)."""
    return int(yaml.safe_load(path.read_text())["vars"]["minute_retention_days"])


def _sqlite_in_wal_mode(path: Path) -> bool:
    """Whether a SQLite file is in WAL mode (its header's read and write versions are 2)."""
    try:
        with path.open("rb") as f:
            header = f.read(20)
    except OSError:
        return False
    return len(header) == 20 and header[:16] == b"SQLite format 3\x00" and header[18:20] == b"\x02\x02"


def attach_lake(settings: Settings) -> duckdb.DuckDBPyConnection:
    """An in-memory DuckDB with the lake attached read-only: warehouse.connect(create=False, read_only=True)...

    ...without its switch of a SQLite catalog to WAL mode when the catalog already is in it (the
    loader and dbt set it; it persists in the file). That switch opens the catalog with Python's
    sqlite3, a second SQLite library in the process: POSIX locks do not tell two libraries of one
    process apart, so its close deletes the -wal and -shm files under DuckDB's open connections to
    the catalog, which then fail with "disk I/O error" once another process writes. The engine's
    replica thread reads the catalog every second, so the engine leaves the file alone.
    """
    if warehouse.catalog_uri(settings).startswith("ducklake:postgres:") or not _sqlite_in_wal_mode(
        warehouse.sqlite_catalog_path(settings)
    ):
        return warehouse.connect(settings, create=False, read_only=True)
    con = duckdb.connect(config={"extension_directory": str(settings.cache_dir / "duckdb-extensions")})
    try:
        warehouse.load_extensions(con)
        con.execute("SET TimeZone = 'UTC'")  # as warehouse.connect: ts::DATE is the UTC day
        uri = warehouse.catalog_uri(settings).replace("'", "''")
        data = str(warehouse.data_path(settings)).replace("'", "''")
        con.execute(f"ATTACH '{uri}' AS {settings.warehouse_alias} (DATA_PATH '{data}', READ_ONLY)")
    except BaseException:
        con.close()
        raise
    return con


_Rows = TypeVar("_Rows", list[tuple[Any, ...]], pa.Table)


def too_many_cells(cap: int) -> QueryError:
    return QueryError(
        "group_by",
        "max_cells",
        f"the answer would gather more than {cap} bucket and group cells (or source rows) before being cut to"
        " `limit`: ask a coarser granularity, a shorter range, fewer group_by dimensions, filters or top_n",
    )


def _capped(rows: _Rows, cap: int) -> _Rows:
    """The rows of a query read with LIMIT cap + 1; QueryError when the limit was reached."""
    if len(rows) > cap:
        raise too_many_cells(cap)
    return rows


class _RollupReads:
    """The alias a query reads rollups from, its open read transaction on the replica, and what that data is."""

    def __init__(self, cursor: duckdb.DuckDBPyConnection, alias: str) -> None:
        self.cursor, self.alias, self.open = cursor, alias, False
        self.versions: Versions | None = None  # read before the data: never newer than it; None: not known

    def release(self) -> None:
        if self.open:
            self.open = False
            with contextlib.suppress(duckdb.Error):
                self.cursor.execute("ROLLBACK")


class QueryEngine:
    def __init__(self, settings: Settings, redis: redis.Redis | None = None, catalogue: Catalogue | None = None):
        if not IDENTIFIER.match(settings.warehouse_alias):
            raise ValueError(f"warehouse alias {settings.warehouse_alias!r} is not a plain name")
        self.settings = settings
        self.catalogue = catalogue or get_catalogue()
        self._fingerprints = definition_fingerprints(self.catalogue)  # what the rollups should be built by
        self._definitions: dict[str, tuple[float, definitions.Built | None]] = {}  # tenant -> (read at, built)
        self.alias = settings.warehouse_alias
        self.minute_retention_days = minute_retention_days()
        self._con: duckdb.DuckDBPyConnection | None = None
        self._lock = threading.Lock()
        self._replica = (
            Replica(self._connection, self.alias, f"{self.alias}_replica", settings.api_replica_refresh_s)
            if settings.api_replica
            else None
        )
        # Not built yet, or the catalog busy: every query tries again, answering 503 meanwhile.
        with contextlib.suppress(WarehouseUnavailable):
            self._connection()
        keys = RealtimeKeys.from_settings(settings)
        self._realtime = RealtimeSource(redis, keys, self.catalogue) if redis is not None else None
        self._watermarks: dict[str, tuple[float, dict[str, float]]] = {}
        # Without the replica (or before it has loaded): the lake's history followed from the catalog, and when.
        self._history = LakeHistory(self.alias)
        self._versions: tuple[float, Versions] | None = None
        self._versions_lock = threading.Lock()
        self._redis_down: tuple[float, str] = (0.0, "")  # until when (monotonic) Redis is not asked, and why
        if self._replica is not None:
            self._replica.start()  # loads in the background; queries read the lake until it is ready

    def close(self) -> None:
        if self._replica is not None:
            self._replica.stop()
        with self._lock:
            if self._con is not None:
                self._con.close()
                self._con = None

    # -- the warehouse -------------------------------------------------------------------------

    def _connection(self) -> duckdb.DuckDBPyConnection:
        """The one DuckDB connection, with the lake attached read-only (attached on first need)."""
        with self._lock:
            if self._con is None:
                try:
                    con = attach_lake(self.settings)
                except (duckdb.Error, sqlite3.Error, OSError) as exc:
                    raise WarehouseUnavailable(f"cannot attach the warehouse: {exc}") from exc
                if self._replica is not None:
                    self._replica.attach(con)
                self._con = con
            return self._con

    # -- the replica -----------------------------------------------------------------------------

    def replica_status(self) -> ReplicaStatus | None:
        """The in-memory replica's state (snapshot, its commit time, when last confirmed current); None: off."""
        return self._replica.status() if self._replica is not None else None

    def wait_replica(self, timeout: float, snapshot_id: int | None = None) -> ReplicaStatus | None:
        """Until the replica has loaded (holding `snapshot_id` or later), or the timeout passed; None: off."""
        return self._replica.wait(timeout, snapshot_id) if self._replica is not None else None

    def _rollup_alias(self) -> str:
        """Where the rollups are read: the replica once loaded, else the lake."""
        return self._replica.alias if self._replica is not None and self._replica.ready else self.alias

    def _replica_caveat(self) -> str | None:
        """A caveat when the replica has not been confirmed current for longer than api_replica_stale_s."""
        if self._replica is None:
            return None
        status = self._replica.status()
        age = status.age_s()
        if age is None or age <= self.settings.api_replica_stale_s:
            return None
        return (
            f"the warehouse could not be read for {age:.0f} s ({status.error or 'no answer'}): rollup numbers are"
            f" the query API's in-memory copy of lake snapshot {status.snapshot_id}"
            f" (committed {iso(status.snapshot_time)}), last confirmed current at {iso(status.synced_at)}"
        )

    # -- what the data is (for the answer cache) ------------------------------------------------

    def known_versions(self) -> Versions | None:
        """What the lake holds as far as this engine knows now, without reading anything: the replica's once it
        has loaded, else the catalog's as last read (None: to be read again, by versions())."""
        if self._replica is not None:
            status = self._replica.status()
            if status.ready and status.versions is not None:
                return status.versions
        held = self._versions
        if held is not None and time.monotonic() - held[0] < VERSIONS_TTL_S:
            return held[1]
        return None

    def versions(self) -> Versions | None:
        """known_versions(), read from the catalog when it is older than VERSIONS_TTL_S (without the replica, or
        before it has loaded: queries read the lake then). WarehouseUnavailable when the catalog cannot be read.
        """
        known = self.known_versions()
        if known is not None:
            return known
        with self._versions_lock:  # one catalog read at a time; the others then take its result
            known = self.known_versions()
            if known is not None:
                return known
            read_at = time.monotonic()
            with self._cursor() as cursor:
                try:
                    versions = self._read(lambda: self._follow_lake(cursor))
                except duckdb.Error as exc:  # whatever the catalog answered: no version known, so no hit
                    raise WarehouseUnavailable(f"the lake's snapshots cannot be read: {exc}") from exc
            self._versions = (read_at, versions)
            return versions

    def _follow_lake(self, cursor: duckdb.DuckDBPyConnection) -> Versions:
        """The lake's current snapshot, the changes since the last look, and the watermarks: one read transaction."""
        cursor.execute("BEGIN TRANSACTION")
        try:
            row = cursor.execute(f"SELECT id FROM {self.alias}.current_snapshot()").fetchone()
            assert row is not None
            snapshot = int(row[0])
            history, moved = self._history.follow(cursor, snapshot)
            held = self._versions
            marks: Mapping[str, Marks] = (
                read_marks(cursor, f"{self.alias}.main.{WATERMARKS}")
                if held is None or WATERMARKS in moved
                else held[1].marks
            )
        finally:
            with contextlib.suppress(duckdb.Error):
                cursor.execute("ROLLBACK")
        self._history = history
        return history.versions(snapshot, marks)

    @contextlib.contextmanager
    def _cursor(self) -> Iterator[duckdb.DuckDBPyConnection]:
        cursor = self._connection().cursor()
        try:
            yield cursor
        finally:
            cursor.close()

    def _fetch(
        self, cursor: duckdb.DuckDBPyConnection, sql: str, params: list[Any] | dict[str, Any]
    ) -> list[tuple[Any, ...]]:
        return self._read(lambda: cursor.execute(sql, params).fetchall())

    def _fetch_arrow(self, cursor: duckdb.DuckDBPyConnection, sql: str, params: list[Any]) -> pa.Table:
        return self._read(lambda: cursor.execute(sql, params).to_arrow_table())

    def _read(self, run: Callable[[], _T]) -> _T:
        """run() with retries while the catalog is busy; WarehouseUnavailable when it cannot be read."""
        for attempt in range(LOCK_RETRIES + 1):
            try:
                return run()
            except duckdb.Error as exc:
                busy = any(m in str(exc).lower() for m in _BUSY_MESSAGES)
                if busy and attempt < LOCK_RETRIES:
                    time.sleep(0.05 * (attempt + 1))
                    continue
                if not busy and isinstance(exc, duckdb.CatalogException):
                    # A table or column missing: not built yet (a new warehouse, a new model), or being replaced.
                    raise WarehouseUnavailable(
                        f"a table this answer reads is not there (dbt builds it: Dagster's schedules or "
                        f"`analytics dbt build`; or it is being rebuilt now): {exc}"
                    ) from exc
                if busy or isinstance(exc, _UNAVAILABLE):
                    raise WarehouseUnavailable(f"the warehouse cannot be read now, retry shortly: {exc}") from exc
                raise
        raise AssertionError("unreachable")

    def _watermark_map(self, cursor: duckdb.DuckDBPyConnection, tenant_id: str, alias: str) -> dict[str, float]:
        """Per grain, the time up to which the tenant's rollups are complete (epoch seconds).

        From the replica: read with the rollups, in the query's transaction (never ahead of them).
        From the lake: cached a few seconds, as each read costs catalog queries.
        """
        sql = f"SELECT granularity, complete_until FROM {alias}.main.fct_warehouse_watermarks WHERE tenant_id = ?"
        if alias != self.alias:
            return {grain: until.timestamp() for grain, until in self._fetch(cursor, sql, [tenant_id]) if until}
        now = time.monotonic()
        with self._lock:
            cached = self._watermarks.get(tenant_id)
        if cached and now - cached[0] < WATERMARK_TTL_S:
            return cached[1]
        rows = self._fetch(cursor, sql, [tenant_id])
        marks = {grain: until.timestamp() for grain, until in rows if until is not None}
        with self._lock:
            self._watermarks[tenant_id] = (now, marks)
        return marks

    def _built_definitions(
        self, cursor: duckdb.DuckDBPyConnection, tenant_id: str, alias: str
    ) -> definitions.Built | None:
        """Per grain, the fingerprint of the definition each metric's rollups were built by; None: no rollups.

        Read from the watermarks table as _watermark_map reads it (the replica's in the query's
        transaction, the lake's cached a few seconds). A table built before it had the column says
        nothing: every metric reads as not built by the catalogue's definition.
        """
        if alias == self.alias:
            with self._lock:
                cached = self._definitions.get(tenant_id)
            if cached and time.monotonic() - cached[0] < WATERMARK_TTL_S:
                return cached[1]
        sql = f"SELECT * FROM {alias}.main.fct_warehouse_watermarks WHERE tenant_id = ?"
        result = self._read(lambda: cursor.execute(sql, [tenant_id]))
        names = [column[0] for column in result.description or []]
        rows = result.fetchall()
        built: definitions.Built | None = None
        if rows:
            grain = names.index("granularity")
            listed = names.index("metric_definitions") if "metric_definitions" in names else None
            built = {row[grain]: definitions.parse(row[listed] if listed is not None else None) for row in rows}
        if alias == self.alias:
            with self._lock:
                self._definitions[tenant_id] = (time.monotonic(), built)
        return built

    def watermark(self, tenant_id: str) -> datetime | None:
        """The time up to which the tenant's warehouse numbers are complete (the minute grain's)."""
        with self._cursor() as cursor:
            marks = self._watermark_map(cursor, tenant_id, self._rollup_alias())
        value = marks.get("minute", max(marks.values(), default=None))
        return datetime.fromtimestamp(value, UTC) if value is not None else None

    def read_lake(self, sql: str, params: list[Any] | dict[str, Any]) -> list[tuple[Any, ...]]:
        """Rows of `sql` over the lake (`{lake}` stands for its alias), retried while the catalog is busy.

        For the tables the replica does not hold (the experiments'); WarehouseUnavailable when the lake
        cannot be read, a duckdb.CatalogException when the table is not built yet.
        """
        with self._cursor() as cursor:
            return self._fetch(cursor, sql.replace("{lake}", self.alias), params)

    # -- queries ---------------------------------------------------------------------------------

    def run(self, tenant_id: str, request: QueryRequest, now: datetime | None = None) -> QueryResult:
        """Answer one query for one tenant (QueryError: the request; WarehouseUnavailable: try later)."""
        return self.run_stamped(tenant_id, request, now)[0]

    def run_stamped(
        self, tenant_id: str, request: QueryRequest, now: datetime | None = None
    ) -> tuple[QueryResult, Stamp | None]:
        """run(), and what the answer was computed from (None: not known, e.g. before the replica has loaded)."""
        began = time.perf_counter()
        moment = (now or datetime.now(UTC)).timestamp()
        query = validate(tenant_id, request, self.catalogue, self.settings)
        cap = self.settings.api_max_cells
        with self._cursor() as cursor, self._rollup_reads(cursor) as rollups:

            def fetch(sql: str, params: list[Any]) -> list[tuple[Any, ...]]:
                return _capped(self._fetch(cursor, f"SELECT * FROM ({sql}) LIMIT {cap + 1}", params), cap)

            def fetch_arrow(sql: str, params: list[Any]) -> pa.Table:
                return _capped(self._fetch_arrow(cursor, f"SELECT * FROM ({sql}) LIMIT {cap + 1}", params), cap)

            versions = rollups.versions
            if rollups.alias == self.alias and versions is not None:  # the lake: the watermarks versions read
                marks = dict(versions.marks.get(tenant_id, {}))
            else:
                marks = self._watermark_map(cursor, tenant_id, rollups.alias)
            plan = planner.plan(
                query,
                self.catalogue,
                marks,
                moment,
                self.minute_retention_days,
                self.settings.realtime_retention_s,
            )
            # Rollups built by another definition than the catalogue's: raw events, or a caveat.
            built = None if plan.raw_reason else self._built_definitions(cursor, tenant_id, rollups.alias)
            stale = definitions.reconcile(plan, query, self.catalogue, self._fingerprints, built, self.settings)
            if plan.raw_reason:
                # Raw by its dimensions was refused before (validation.check); raw by old minutes shows here.
                check_raw_range(query.span_s, plan.raw_reason, self.settings)
                rollups.release()  # the raw events are the lake's: no need to hold the replica's snapshot
                answer = answer_from_raw(query, plan, self.catalogue, self.alias, fetch)
            else:
                raw_span = sum(p.end - p.start for p in plan.pieces if p.grain == "raw")
                if raw_span:  # stretches no rollup grain fits: a minute cut by an edge, old minutes
                    check_raw_range(raw_span, "stretches no rollup grain fits", self.settings)
                in_memory = rollups.alias != self.alias
                path = RollupPath(
                    query,
                    plan,
                    self.catalogue,
                    rollups.alias,
                    fetch,
                    None,
                    moment,
                    fetch_arrow=fetch_arrow,
                    in_memory=in_memory,
                    raw_alias=self.alias,
                )
                answer = Answer()
                if path.needs_realtime():
                    path.realtime, answer.realtime_unavailable = self._realtime_status()
                try:
                    answer = path.answer(answer)
                except redis.RedisError as exc:  # Redis went away mid-query: answer without it
                    path.realtime = None
                    answer = path.answer(Answer(realtime_unavailable=self._redis_failed(exc)))
                if in_memory and (caveat := self._replica_caveat()):
                    answer.caveats.append(caveat)
        if len(answer.cells) > cap:  # the realtime layer's groups, added to the warehouse's
            raise too_many_cells(cap)
        answer.caveats.extend(stale)
        result = build_result(query, self.catalogue, answer, plan.watermark, (time.perf_counter() - began) * 1000)
        stamp = None
        if versions is not None:
            sources = [part.source for part in answer.parts]
            stamp = versions.stamp(sources, query.buckets.start, query.buckets.end, marks)
        return result, stamp

    @contextlib.contextmanager
    def _rollup_reads(self, cursor: duckdb.DuckDBPyConnection) -> Iterator[_RollupReads]:
        """Where this query reads rollups; from the replica, inside one read transaction of it."""
        reads = _RollupReads(cursor, self._rollup_alias())
        if reads.alias != self.alias:
            assert self._replica is not None
            reads.versions = self._replica.status().versions  # published after its data: never ahead of it
            cursor.execute("BEGIN TRANSACTION")
            reads.open = True
        else:  # the lake: what the catalog says now, read before the data
            with contextlib.suppress(WarehouseUnavailable):  # the query may still answer; it is not cached then
                reads.versions = self.versions()
        try:
            yield reads
        finally:
            reads.release()

    def _redis_failed(self, exc: redis.RedisError) -> str:
        reason = f"Redis unreachable: {exc}"
        with self._lock:
            self._redis_down = (time.monotonic() + REDIS_RETRY_AFTER_S, reason)
        return reason

    def _realtime_status(self) -> tuple[RealtimeSource | None, str | None]:
        if self._realtime is None:
            return None, "no Redis configured for the query API"
        until, reason = self._redis_down
        if time.monotonic() < until:
            return None, reason
        try:
            alive = self._realtime.alive()
        except redis.RedisError as exc:
            return None, self._redis_failed(exc)
        if not alive:
            return None, "the realtime layer has written nothing to Redis yet (or Redis lost its data)"
        return self._realtime, None
