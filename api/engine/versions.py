"""Which warehouse data an answer was computed from, and whether that is still what the warehouse holds.

The answer cache (api/cache.py) must never serve a number from before a restatement (dbt rebuilding a
bucket after a late event, a metric rebuilt with --full-refresh). So every answer the engine computes
gets a Stamp, stored with it:

- `snapshot`: a DuckLake snapshot id the data it read is at least as new as (snapshot ids are the
  lake's, the same in every process);
- `tables`: the warehouse tables it read, from its provenance parts (rollup_day → fct_metrics_day,
  ..., raw → stg_tracking__events; realtime numbers are Redis's, bounded by the open-range TTL), or
  the funnel and experiment tables the answers of /api/v1/funnels/query and /experiments read;
- `start`, `end`, `marks`: its range (UTC epoch seconds) and the tenant's watermarks per grain as the
  plan used them, clamped to the range. The plan depends on a watermark only through that clamp (a
  watermark past the range's end, or before its start, plans the same), so a watermark moving on
  past a closed range leaves it valid; one moving inside the range does not. Funnel and experiment
  answers use no watermark: their stamps (Versions.table_stamp) have an empty range and are judged
  by their tables alone.

Versions is what a process knows of the lake: every change since snapshot `since`, up to `snapshot`,
as the last snapshot that changed each watched table (`changed`), and every tenant's watermarks now.
A stamped answer is current (Versions.current) when its snapshot is not older than `since`, none of
its tables changed after its snapshot, and its clamped watermarks are still the same. A snapshot id
is only compared with changes, never with another process's clock, so an answer stored by one
process is judged by any other; a process that started later (`since` newer than the stamp) cannot
tell and computes the answer again.

LakeHistory follows the lake's snapshots (ducklake_snapshots: the tables each one changed) to build
`changed`; the in-memory replica does it in its refresh transaction (api/engine/replica/), the engine
itself from the catalog when the replica is off (QueryEngine.versions, cached about a second).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import duckdb
import orjson

from analytics_core.catalogue import GRANULARITIES
from api.engine.sql.raw_events import EVENTS_TABLE

ROLLUP_TABLES = ("fct_metrics_day", "fct_metrics_hour", "fct_metrics_minute")
WATERMARKS = "fct_warehouse_watermarks"
# The tables each provenance source reads ("realtime" reads Redis).
SOURCE_TABLES: dict[str, str] = {
    "rollup_day": "fct_metrics_day",
    "rollup_hour": "fct_metrics_hour",
    "rollup_minute": "fct_metrics_minute",
    "raw": EVENTS_TABLE,
}
FUNNEL_TABLE = "fct_funnel_daily"
EXPERIMENT_TABLES = ("fct_experiment_exposures", "fct_experiment_significance")  # what an experiment's answer reads
# The lake tables whose changes are followed.
WATCHED = (*ROLLUP_TABLES, WATERMARKS, EVENTS_TABLE, FUNNEL_TABLE, *EXPERIMENT_TABLES)

Marks = Mapping[str, float]  # grain -> complete_until (epoch seconds)
Clamped = tuple[float | None, ...]  # per grain of GRANULARITIES: its watermark within [start, end], None: none


def clamp(marks: Marks, start: float, end: float) -> Clamped:
    """Each grain's watermark clamped to [start, end]: all the plan of a query over [start, end) sees of it."""
    out: list[float | None] = []
    for grain in GRANULARITIES:
        mark = marks.get(grain)
        out.append(None if mark is None else float(min(max(mark, start), end)))
    return tuple(out)


@dataclass(frozen=True)
class Stamp:
    """What an answer was computed from (see the module docstring)."""

    snapshot: int
    tables: tuple[str, ...]
    start: int
    end: int
    marks: Clamped

    def encode(self) -> bytes:
        """Compact JSON, without `|` (the cache entry's separator)."""
        return orjson.dumps([self.snapshot, list(self.tables), self.start, self.end, list(self.marks)])

    @classmethod
    def decode(cls, raw: bytes) -> Stamp:
        """The stamp of `encode`; ValueError for anything else."""
        try:
            snapshot, tables, start, end, marks = orjson.loads(raw)
        except (orjson.JSONDecodeError, TypeError, ValueError) as exc:
            raise ValueError(f"not a stamp: {raw[:60]!r}") from exc
        if not (
            all(isinstance(v, int) and not isinstance(v, bool) for v in (snapshot, start, end))
            and isinstance(tables, list)
            and all(isinstance(t, str) for t in tables)
            and isinstance(marks, list)
            and len(marks) == len(GRANULARITIES)
            and all(m is None or (isinstance(m, int | float) and not isinstance(m, bool)) for m in marks)
        ):
            raise ValueError(f"not a stamp: {raw[:60]!r}")
        return cls(snapshot, tuple(tables), start, end, tuple(None if m is None else float(m) for m in marks))


@dataclass(frozen=True)
class Versions:
    """What a process knows of the lake's data (see the module docstring)."""

    since: int  # every change after this snapshot is known...
    snapshot: int  # ...up to this one; the data the process reads is at least this new
    changed: Mapping[str, int] = field(default_factory=dict)  # watched table -> last snapshot in (since, snapshot]
    marks: Mapping[str, Marks] = field(default_factory=dict)  # tenant -> its watermarks, as of `snapshot`

    def stamp(self, sources: Iterable[str], start: int, end: int, marks: Marks) -> Stamp:
        """The stamp of an answer computed from data at least as new as `snapshot`, with these watermarks."""
        tables = tuple(sorted({SOURCE_TABLES[s] for s in sources if s in SOURCE_TABLES}))
        return Stamp(self.snapshot, tables, start, end, clamp(marks, start, end))

    def table_stamp(self, tables: Iterable[str]) -> Stamp:
        """The stamp of an answer that depends on these tables alone (no range, no watermark)."""
        return Stamp(self.snapshot, tuple(sorted(set(tables))), 0, 0, (None,) * len(GRANULARITIES))

    def current(self, tenant_id: str, stamp: Stamp) -> bool:
        """Whether the answer of `stamp` is still what its tables and watermarks hold now."""
        if stamp.snapshot < self.since:  # changes between the stamp and what this process knows are unknown
            return False
        if any(self.changed.get(table, self.since) > stamp.snapshot for table in stamp.tables):
            return False
        if stamp.end <= stamp.start:  # a table stamp: no watermark was used
            return True
        return clamp(self.marks.get(tenant_id, {}), stamp.start, stamp.end) == stamp.marks


def touched(changes: Mapping[str, Any] | None) -> set[str]:
    """The values of one snapshot's `changes` (table ids, and schema-qualified names of tables created)."""
    return {str(v) for values in (changes or {}).values() for v in values or ()}


def names_of(table_id: int | None, name: str) -> set[str]:
    """How a snapshot's changes name a table: by id (inserted into, deleted from, ...) or by name (created)."""
    return {name, f"main.{name}"} | ({str(table_id)} if table_id is not None else set())


@dataclass(frozen=True)
class LakeHistory:
    """The watched tables' last changes, as far as the lake's snapshots have been followed.

    Immutable: follow() answers the history one step further, which the caller keeps once what it read
    at that snapshot is committed (the replica: its refresh transaction).
    """

    lake: str
    since: int | None = None
    until: int | None = None
    changed: Mapping[str, int] = field(default_factory=dict)
    ids: Mapping[str, int] = field(default_factory=dict)  # every lake table's name -> id, as last read
    known: frozenset[str] = frozenset()  # change values already resolved (a table's id or name, or no table)

    def follow(
        self, cursor: duckdb.DuckDBPyConnection, snapshot: int, rows: list[tuple[int, Any]] | None = None
    ) -> tuple[LakeHistory, set[str]]:
        """The history up to `snapshot` (read on `cursor`, at that snapshot or later), and the watched tables
        changed since the last one; all of them when the history starts (again) here.

        `rows`: the snapshots from the one followed last to `snapshot`, with their changes, when the caller
        has read them already (the replica's refresh); else they are read here.
        """
        if self.until is not None and snapshot <= self.until:
            return self, set()
        if rows is None:
            low = -1 if self.until is None else self.until
            rows = cursor.execute(
                f"SELECT snapshot_id, changes FROM ducklake_snapshots('{self.lake}')"
                " WHERE snapshot_id >= ? AND snapshot_id <= ? ORDER BY snapshot_id",
                [low, snapshot],
            ).fetchall()
        if self.until is None or not rows or rows[0][0] != self.until:
            # The first look, or the snapshot followed last has expired: the history starts again at the
            # oldest snapshot kept (its own changes are in every answer read at or after it).
            since = int(rows[0][0]) if rows else snapshot
            start = replace(self, since=since, until=snapshot, changed={})
            return start._with(cursor, rows[1:], snapshot), set(WATCHED)
        later = rows[1:]
        new = self._with(cursor, later, snapshot)
        return new, {t for t, at in new.changed.items() if at > self.until}

    def _with(self, cursor: duckdb.DuckDBPyConnection, rows: list[tuple[Any, ...]], snapshot: int) -> LakeHistory:
        seen = [(int(snapshot_id), touched(changes)) for snapshot_id, changes in rows]
        values = set().union(*(v for _, v in seen)) if seen else set()
        ids, known = self.ids, self.known
        if values - known - self._watched_names():
            # A table this history has not resolved yet (created since, or another id): read the ids again.
            listed = cursor.execute(f"SELECT table_name, table_id FROM ducklake_table_info('{self.lake}')").fetchall()
            ids = {str(name): int(table_id) for name, table_id in listed}
            # Resolved from now on: the tables there are, and this batch's values (an id that names no table now
            # is a table dropped since: it never comes back). Older values are not kept: no growth per dbt run.
            known = frozenset(values | {v for n, i in ids.items() for v in names_of(i, n)})
        changed = dict(self.changed)
        for table in WATCHED:
            refs = names_of(ids.get(table), table)
            for snapshot_id, values_of in seen:
                if refs & values_of:
                    changed[table] = max(changed.get(table, snapshot_id), snapshot_id)
        return replace(self, until=snapshot, changed=changed, ids=ids, known=known)

    @staticmethod
    def _watched_names() -> set[str]:
        return {v for t in WATCHED for v in names_of(None, t)}

    def versions(self, snapshot: int, marks: Mapping[str, Marks]) -> Versions:
        """What this history says of data read at `snapshot` (at most the snapshot followed), with its watermarks."""
        assert self.since is not None and self.until is not None, "follow() the lake first"
        return Versions(since=self.since, snapshot=min(snapshot, self.until), changed=dict(self.changed), marks=marks)


def read_marks(cursor: duckdb.DuckDBPyConnection, table: str) -> dict[str, dict[str, float]]:
    """Every tenant's watermarks (grain -> epoch seconds) from a watermarks table (`alias.main.name`)."""
    out: dict[str, dict[str, float]] = {}
    rows = cursor.execute(f"SELECT tenant_id, granularity, complete_until FROM {table}").fetchall()
    for tenant, grain, until in rows:
        if until is not None:
            out.setdefault(str(tenant), {})[str(grain)] = until.timestamp()
    return out
