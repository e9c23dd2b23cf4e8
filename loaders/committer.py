"""The loader's commit side: closed batches go into the warehouse exactly once, one commit in flight at a time.

`expected` holds, per owned partition, the next offset as stored in the warehouse: what fencing
checks, where a fenced loader re-seeks, and (with the batches in flight and ready) where the open
batch goes on. Decoding and dead letters happen on the calling (main) thread, the commit on the
writer thread (loaders/writer.py), and each result is taken back on the main thread by `settle()`.
The warehouse is a sink (loaders/sinks.py): DuckLake or BigQuery.

A closed batch is decoded at once; if the batch before it is still committing (a commit can wait
minutes for the warehouse writer lock while dbt builds), it waits as the *ready* batch, and the main
thread goes on reading Kafka into the open batch: `close_batch(wait=False)` and `advance()` never
block. So at most three batches are held: in flight, ready, open.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaException, Producer, TopicPartition

from analytics_core.decoding import BatchDecoder
from loaders.batching import Batch
from loaders.offsets import NO_OFFSET, Fenced
from loaders.sinks import WarehouseSink
from loaders.writer import BatchWriter, PendingBatch

log = logging.getLogger(__name__)


@dataclass
class LoaderStats:
    loaded: int = 0
    dead_lettered: int = 0
    dead_letter_reasons: dict[str, int] = field(default_factory=dict)  # e.g. format, out_of_range
    batches: int = 0
    fenced: int = 0
    compactions: int = 0
    partitions: dict[int, int] = field(default_factory=dict)
    lock_wait_s: float = 0.0  # commits waiting for the warehouse writer lock (while dbt built), in all
    paused: int = 0  # times reading stopped because the batches in flight, ready and open were all full


class BatchCommitter:
    """Decodes the open batch, commits it through the writer thread, accounts for the result."""

    def __init__(
        self, sink: WarehouseSink, consumer: Consumer, decoder: BatchDecoder, dlq: Producer, batch: Batch
    ) -> None:
        self.sink, self.topic = sink, sink.topic
        self.consumer, self.decoder, self.dlq, self.batch = consumer, decoder, dlq, batch
        self.expected: dict[int, int] = {}
        self.stats = LoaderStats()
        self.writer = BatchWriter(self._commit)
        self.ready: PendingBatch | None = None  # decoded, its dead letters acknowledged, waiting for the writer
        self.before_reseek: Callable[[], None] = _nothing  # the loader resumes paused partitions here

    def _commit(self, b: PendingBatch) -> None:  # on the writer thread
        self.sink.commit(b.rows, b.expected, b.next_offsets)

    def position(self) -> dict[int, int]:
        """Per partition, the offset the open batch continues from: stored, or past the batches in flight and ready."""
        pending, ready = self.writer.pending, self.ready
        if pending is None and ready is None:
            return self.expected
        return {
            **self.expected,
            **(pending.next_offsets if pending else {}),
            **(ready.next_offsets if ready else {}),
        }

    def in_flight(self) -> int:
        """Rows handed over and not committed yet: the batch in flight and the ready one."""
        pending = self.writer.pending
        return (pending.rows.num_rows if pending else 0) + (self.ready.rows.num_rows if self.ready else 0)

    def flush(self) -> None:
        """Commit the ready batch, the open batch and the one in flight: nothing is pending afterwards."""
        self.close_batch()
        self.settle()

    def close_batch(self, wait: bool = True) -> bool:
        """Decode the open batch, acknowledge its dead letters, submit it once its predecessor is settled.

        With `wait`, block until it is submitted. Without, never wait for the writer: the decoded batch
        becomes the ready one when a commit is still running, and the open batch stays open (False)
        when a ready batch is already waiting.
        """
        if not self._submit_ready(wait):
            return False
        if not self.batch.records:
            return True
        records, next_offsets = self.batch.records, dict(self.batch.next_offsets)
        self.batch.clear()
        rows = self.sink.check(self.decoder.decode(records), records, self.decoder)
        self._ack_dead_letters()
        self.ready = PendingBatch(records, rows, {}, next_offsets)  # `expected` is set at submit
        self._submit_ready(wait)
        return True

    def advance(self) -> None:
        """Without blocking: take the result of a finished commit and submit the ready batch."""
        if self.ready is not None:
            self._submit_ready(wait=False)
        elif self.writer.done():
            self.settle()  # its error surfaces now, Kafka offsets move

    def _submit_ready(self, wait: bool) -> bool:
        """Submit the ready batch after settling its predecessor; False when it must wait (and `wait` is off)."""
        if self.ready is None:
            return True
        if not wait and self.writer.busy():
            return False
        ready, self.ready = self.ready, None
        if self.settle():  # else the batch before was fenced: this one, read after it, is dropped too
            self.writer.submit(PendingBatch(ready.records, ready.rows, dict(self.expected), ready.next_offsets))
        return True

    def settle(self) -> bool:
        """Take the result of the batch in flight; False if it was fenced (the open batch is dropped too)."""
        done = self.writer.wait()
        if done is None:
            return True
        batch, exc = done
        rows = None if exc is None else self.sink.salvage(exc, batch.rows, batch.records, self.decoder)
        if rows is not None:
            # Commit what the sink kept, here: the writer is idle, and this is rare.
            self._ack_dead_letters()
            batch = PendingBatch(batch.records, rows, batch.expected, batch.next_offsets)
            try:
                self.sink.commit(rows, batch.expected, batch.next_offsets)
                exc = None
            except Fenced as fenced:
                exc = fenced
        self.stats.lock_wait_s = self.sink.lock_wait_s
        if isinstance(exc, Fenced):
            log.warning("%s; dropping the batch and re-seeking", exc)
            self.stats.fenced += 1
            self.ready = None
            self.batch.clear()
            self._reseek()
            return False
        if exc is not None:
            raise exc  # the writer thread's failure; nothing read after that batch was submitted
        self.expected.update(batch.next_offsets)
        self.stats.loaded += batch.rows.num_rows
        self.stats.dead_lettered = self.decoder.dead_lettered
        self.stats.dead_letter_reasons = dict(self.decoder.by_reason)
        self.stats.batches += 1
        self.stats.partitions = dict(self.expected)
        # Kafka's committed offsets are only for lag dashboards; the warehouse's are the truth.
        tps = [TopicPartition(self.topic, p, o) for p, o in batch.next_offsets.items()]
        self.consumer.commit(offsets=tps, asynchronous=True)
        return True

    def abandon(self) -> None:
        """After a failure: drop the open batch, let a commit in flight end (either outcome is consistent).

        Closing the consumer then revokes the partitions, and that flush must not commit past the failure.
        """
        self.ready = None
        self.batch.clear()
        self.writer.wait()

    def drop_ready(self, lost: set[int]) -> None:
        """Partitions `lost` are another's already: the ready batch is not committed (it may hold their
        records); the open batch, read after it, is dropped too, and the partitions still owned re-read
        both from their stored offsets."""
        if self.ready is None:
            return
        self.ready = None
        self.batch.clear()
        self._reseek(skip=lost)

    def _ack_dead_letters(self) -> None:
        # Dead letters are acknowledged before the offsets move past them: a crash in between can
        # repeat a dead letter, never lose one.
        if len(self.dlq) and self.dlq.flush(30) > 0:  # an idle flush() still costs ~0.1 s
            raise RuntimeError("dead letters not acknowledged by Kafka; batch not committed")

    def _reseek(self, skip: set[int] | None = None) -> None:
        self.before_reseek()
        stored = self.sink.stored_offsets()
        for part in [p for p in self.expected if p not in (skip or set())]:
            self.expected[part] = stored.get(part, NO_OFFSET)
            try:
                self.consumer.seek(TopicPartition(self.topic, part, stored.get(part, OFFSET_BEGINNING)))
            except KafkaException as exc:  # not fetching yet: the stored offset is applied on (re)assignment
                log.warning("seek partition %s: %s", part, exc)

    def close(self) -> None:
        """Stop the writer thread (a commit in flight ends first), then close the sink."""
        self.writer.close()
        self.sink.close()


def _nothing() -> None:
    pass
