"""A background thread that commits one decoded batch while the main thread consumes and decodes the next.

DuckDB releases the GIL while it writes Parquet and commits the catalog, so the INSERT of batch N runs
on the second core while batch N+1 is read from Kafka and decoded. The thread only runs the commit
function; what a result means (fencing, re-seeking, dead letters, Kafka commits, statistics) is
decided in the main thread, which owns the consumer. At most one batch is in flight: the next is
submitted only after the previous result was taken, so its `expected` offsets are those stored.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import wait as wait_futures
from dataclasses import dataclass

import pyarrow as pa

from analytics_core.decoding import Record


@dataclass(frozen=True)
class PendingBatch:
    """A decoded batch on its way into the warehouse."""

    records: list[Record]  # kept to dead-letter rows the INSERT refuses
    rows: pa.Table
    expected: dict[int, int]  # stored offsets the commit must find (fencing)
    next_offsets: dict[int, int]  # stored offsets it leaves behind


class BatchWriter:
    """Runs `commit(batch)` on a thread of its own, one batch at a time; results are taken with wait()."""

    def __init__(self, commit: Callable[[PendingBatch], None]) -> None:
        self._commit = commit
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="loader-writer")
        self._inflight: tuple[PendingBatch, Future[None]] | None = None

    @property
    def pending(self) -> PendingBatch | None:
        """The batch in flight: submitted, its result not taken yet."""
        return self._inflight[0] if self._inflight else None

    def done(self) -> bool:
        """A batch is in flight and its commit has ended, successfully or not."""
        return self._inflight is not None and self._inflight[1].done()

    def busy(self) -> bool:
        """A batch is in flight and its commit has not ended (it may be waiting for the writer lock)."""
        return self._inflight is not None and not self._inflight[1].done()

    def wait_done(self, timeout: float) -> bool:
        """Wait up to `timeout` seconds for the commit in flight to end; True when none is running any more."""
        if self._inflight is None:
            return True
        return bool(wait_futures([self._inflight[1]], timeout=timeout).done)

    def submit(self, batch: PendingBatch) -> None:
        if self._inflight is not None:
            raise RuntimeError("a batch is still in flight: take its result first")
        self._inflight = (batch, self._pool.submit(self._commit, batch))

    def wait(self) -> tuple[PendingBatch, BaseException | None] | None:
        """Wait for the batch in flight: (batch, what its commit raised or None); None when idle.

        The exception is handed back, never dropped: the caller handles it or raises it.
        """
        if self._inflight is None:
            return None
        batch, future = self._inflight
        self._inflight = None
        return batch, future.exception()

    def close(self) -> None:
        """Let a commit in flight end (it is all-or-nothing either way), then stop the thread."""
        self._pool.shutdown(wait=True)
