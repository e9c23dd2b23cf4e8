"""An in-memory replica of the rollup tables inside the query engine (a serving layer, like Druid's historicals).

Every DuckLake table a query touches costs several milliseconds of catalog queries, and a sketch read
decodes whole Parquet row groups; dashboards read the same four tables over and over. So the
engine's DuckDB connection also attaches an in-memory database (`<alias>_replica`) holding
fct_metrics_day, fct_metrics_hour, fct_metrics_minute and fct_warehouse_watermarks with the lake's
columns and names; the rollup SQL only swaps its database alias. The raw-event reads keep reading the lake.

A background thread keeps it in step, applying the lake's change feed since the replica's snapshot
(or copying the lake whole when that history cannot be replayed), each refresh one DuckDB
transaction: a query (itself one read transaction, api/engine/query_engine.py) sees the replica
before or after it, never half of it, and never a watermark ahead of the rollups it reads. Until
the first load commits queries read the lake. When the lake cannot be read the replica keeps
serving what it has; `status()` says which snapshot that is and since when it has not been
confirmed current, and (`versions`) which snapshot last changed each table the answer cache checks
its entries against (api/engine/versions.py).

- `__init__.py` (here): Replica: attach() to the engine's connection, the refresh thread (start(),
  stop()), status() and wait().
- `refresh.py`: how the replica is brought to the lake's snapshot: the whole copy (rebuild), the
  change-feed refresh, applying one table's changes, checkpoints; the replicated tables.
- `status.py`: ReplicaStatus (what the replica holds and since when), ReplicaNotReady, iso().
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

import duckdb

from api.engine.replica.refresh import ROLLUP_TABLES, TABLES, WATERMARKS, WHOLE_AFTER_FAILURES, ReplicaRefresh
from api.engine.replica.status import ReplicaNotReady, ReplicaStatus, iso
from api.engine.versions import LakeHistory

__all__ = [
    "ROLLUP_TABLES",
    "TABLES",
    "WATERMARKS",
    "WHOLE_AFTER_FAILURES",
    "Replica",
    "ReplicaNotReady",
    "ReplicaStatus",
    "iso",
]

log = logging.getLogger(__name__)

MAX_RETRY_S = 10.0  # failed refreshes are retried less and less often, at most this far apart


class Replica(ReplicaRefresh):
    """The in-memory copy of the rollups and the thread that refreshes it (start(), stop()).

    The refresh itself (refresh() and its steps) is ReplicaRefresh's, in refresh.py.
    """

    def __init__(
        self,
        connect: Callable[[], duckdb.DuckDBPyConnection],
        lake: str,
        alias: str,
        refresh_s: float = 1.0,
    ) -> None:
        self._connect = connect  # the engine's connection, with this database attached (attach())
        self.lake = lake
        self.alias = alias
        self.refresh_s = refresh_s
        self._tables = {}  # replicated table -> its lake id and columns, as last copied
        self._status = ReplicaStatus(ready=False)
        self._lock = threading.Lock()  # one refresh at a time (the thread, or a test calling refresh())
        self._stop = threading.Event()
        self._changed = threading.Condition()
        self._thread: threading.Thread | None = None
        self._active: duckdb.DuckDBPyConnection | None = None  # the refresh's cursor, interrupted by stop()
        self._last_error = ""
        self._failures = 0  # refreshes failed in a row
        self._feed_failures = 0  # change feeds that failed to apply, in a row (not counting an unreadable lake)
        self._rebuild_next = False  # after a few of those: copy the lake whole again
        self._history = LakeHistory(lake)  # which lake tables changed when, as far as the replica has followed
        self._latest_readable = True

    # -- lifecycle -------------------------------------------------------------------------------

    def attach(self, con: duckdb.DuckDBPyConnection) -> None:
        """Attach the (empty) in-memory database to a new engine connection.

        COMPRESS: a checkpoint stores its tables compressed as on disk (dictionaries, bit packing),
        about a fifth of the plain in-memory size of the rollups.
        """
        con.execute(f"ATTACH ':memory:' AS {self.alias} (COMPRESS)")

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="rollup-replica", daemon=True)
            self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        active = self._active
        if active is not None:
            with contextlib.suppress(duckdb.Error):
                active.interrupt()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    def status(self) -> ReplicaStatus:
        return self._status

    @property
    def ready(self) -> bool:
        return self._status.ready

    def wait(self, timeout: float, snapshot_id: int | None = None) -> ReplicaStatus:
        """Until the replica is loaded (and holds `snapshot_id` or a later one), or the timeout passes."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                status = self._status
                if status.ready and (snapshot_id is None or (status.snapshot_id or 0) >= snapshot_id):
                    return status
                left = deadline - time.monotonic()
                if left <= 0:
                    return status
                self._changed.wait(left)

    def _run(self) -> None:
        while not self._stop.is_set():
            began = time.monotonic()
            try:
                self.refresh()
            except Exception as exc:  # the lake unreadable, not built yet, the engine closing: try again later
                if self._stop.is_set():
                    break
                self._failed(exc)
            # While failing (no lake yet: a new DuckDB connection per try), back off.
            interval = min(self.refresh_s * 2 ** min(self._failures, 16), max(MAX_RETRY_S, self.refresh_s))
            self._stop.wait(max(interval - (time.monotonic() - began), 0.05))

    def _failed(self, exc: BaseException) -> None:
        message = f"{type(exc).__name__}: {exc}"
        if message != self._last_error:  # log a failure once, not once a second
            level = logging.INFO if isinstance(exc, ReplicaNotReady) else logging.WARNING
            log.log(level, "replica refresh failed (serving snapshot %s): %s", self._status.snapshot_id, message)
            self._last_error = message
        self._failures += 1
        self._publish(error=message)

    def _succeeded(self, **changes: Any) -> None:
        if self._last_error:
            log.info("replica: the lake is readable again")
        self._last_error = ""
        self._failures = 0
        self._feed_failures = 0
        self._publish(error=None, **changes)

    def _publish(self, **changes: Any) -> None:
        with self._changed:
            self._status = ReplicaStatus(**{**self._status.__dict__, **changes})
            self._changed.notify_all()
