"""The warehouse loader: tracking.events → raw_events in micro-batches, offsets in the same commit (see sinks.py).

The consume loop (subscription, rebalances, signals, batching, shutdown) is analytics_core.consuming's
ConsumerRunner; the loader is its BatchHandler: partitions start at the offsets stored in the
warehouse, and a closed batch is committed through loaders/committer.py.

A commit can wait a long time for the warehouse writer lock (a dbt build holds it from start to end).
Meanwhile the main thread keeps polling Kafka, so the consumer stays in its group (no
max.poll.interval.ms timeout): the next closed batch waits decoded (ready) and the open one goes on
filling; once that is full too, the assigned partitions are paused (polling goes on, fetching stops)
and resumed when the writer has taken the ready batch. librdkafka resumes a paused partition from the
last record handed to the application, and `Batch.add` skips anything already held: nothing is lost
or read twice.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaException, Message, Producer, TopicPartition

from analytics_core.bounds import Bounds, describe
from analytics_core.clients import kafka_consumer, kafka_producer
from analytics_core.consuming import CONSUMER_CONFIG, ConsumerRunner
from analytics_core.decoding import BatchDecoder
from analytics_core.registry import schema_store
from analytics_core.settings import Settings
from analytics_core.topics import LOADER_GROUP, Topics
from loaders import offsets
from loaders.batching import Batch
from loaders.committer import BatchCommitter, LoaderStats
from loaders.offsets import NO_OFFSET
from loaders.sinks import CommitBatch, WarehouseSink, open_sink

__all__ = ["LoaderStats", "WarehouseLoader", "loader_group"]
log = logging.getLogger(__name__)
# With every batch full (in flight, ready, open), wait this long for the writer before pausing the
# partitions: a commit usually ends within it, and pausing drops librdkafka's prefetched records.
FULL_WAIT_S = 1.0


def loader_group(settings: Settings) -> str:
    # The topic prefix isolates test runs and benchmarks; their groups must not rebalance each other.
    return settings.topic_prefix + LOADER_GROUP


class WarehouseLoader:
    """One loader process; several share the partitions of tracking.events through the consumer group.

    The main thread consumes, batches and decodes; a batch's commit runs on the writer thread
    while the next batch is read (loaders/committer.py, loaders/writer.py).
    """

    def __init__(
        self,
        settings: Settings,
        consumer_overrides: dict[str, Any] | None = None,
        bigquery_client: Any = None,
        commit_batch: CommitBatch = offsets.commit_batch,
    ) -> None:
        """`bigquery_client` replaces the client BigQueryWriter builds from the settings, `commit_batch` the
        DuckLake commit (loaders/offsets.py): tests make it fail or race another loader."""
        self.settings = settings
        self.topics = Topics.from_settings(settings)
        # settings.warehouse_target decides: DuckLake (attached here) or BigQuery (tables ensured here).
        self.sink: WarehouseSink = open_sink(settings, self.topics.events, bigquery_client, commit_batch)
        self._store = schema_store(settings)
        self.consumer: Consumer = kafka_consumer(
            settings, loader_group(settings), {**CONSUMER_CONFIG, **(consumer_overrides or {})}
        )
        self.dlq: Producer = kafka_producer(settings)
        self.batch = Batch(settings.loader_batch_events, settings.loader_batch_seconds)
        bounds = Bounds.from_settings(settings)
        decoder = BatchDecoder(self._store, self.dlq, self.topics.events_dlq, bounds)
        log.info("bounds: %s", describe(bounds))
        self.committer = BatchCommitter(self.sink, self.consumer, decoder, self.dlq, self.batch)
        self.runner = ConsumerRunner(self.consumer, self.topics.events, self)
        self._last_compaction = time.monotonic()
        self._paused: list[TopicPartition] = []
        self.committer.before_reseek = self._resume  # a seek must not meet a paused partition

    @property
    def expected(self) -> dict[int, int]:
        """Per owned partition: the next offset as stored in the warehouse."""
        return self.committer.expected

    @property
    def stats(self) -> LoaderStats:
        return self.committer.stats

    @property
    def assigned_at(self) -> float | None:
        """When the first partitions were assigned (monotonic clock): throughput is timed from here."""
        return self.runner.assigned_at

    def stop(self, *_: object) -> None:
        self.runner.stop()

    def run(
        self, idle_exit_s: float | None = None, handle_signals: bool = True, max_events: int | None = None
    ) -> LoaderStats:
        """Load until SIGTERM/SIGINT, or nothing arrived for idle_exit_s, or max_events are loaded."""
        self.runner.run(idle_exit_s, handle_signals, max_events)
        return self.stats

    def flush(self) -> None:
        """Commit the open batch and the batch in flight."""
        self.committer.flush()

    def close(self) -> None:
        """Close the consumer (its partitions are revoked: the open batch is committed), then the rest."""
        self.runner.close()

    # The BatchHandler of the runner (analytics_core/consuming.py).

    def assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        stored = self.sink.stored_offsets()
        for tp in partitions:
            self.expected[tp.partition] = stored.get(tp.partition, NO_OFFSET)
            tp.offset = stored.get(tp.partition, OFFSET_BEGINNING)

    def revoke(self, partitions: list[TopicPartition]) -> None:
        # Commit what we hold, open and ready batches and the batch in flight, before the partitions move.
        # This waits for the writer (and the writer lock, if dbt holds it): the rebalance waits with it.
        self.committer.flush()
        self._resume()

    def lose(self, partitions: list[TopicPartition]) -> None:
        # No longer ours: committing the open or the ready batch could race the new owner. A commit already
        # in flight cannot be recalled; fencing refuses whichever of it and the new owner's comes second.
        self.committer.settle()
        self.committer.drop_ready({tp.partition for tp in partitions})
        self._resume()

    def forget(self, partitions: set[int]) -> None:
        for part in partitions:
            self.expected.pop(part, None)

    def add(self, records: list[Message]) -> int:
        added = self.batch.add(records, self.committer.position())
        self.committer.advance()  # a finished commit is taken now (its error surfaces), the ready batch goes
        if self._paused and self.committer.ready is None:
            self._resume()  # the ready batch went (or was dropped by fencing): room again
        return added

    def close_batch(self) -> None:
        # Never waits for the writer lock: a commit waiting for it keeps the ready batch waiting, and the
        # open batch stays open and goes on filling (the runner asks again after the next poll).
        taken = self.committer.close_batch(wait=False)
        if not taken and len(self.batch) >= self.batch.max_events and not self._paused:
            if self.committer.writer.wait_done(FULL_WAIT_S):
                taken = self.committer.close_batch(wait=False)
            else:
                self._pause()
        if taken:
            self._resume()

    def _pause(self) -> None:
        """Stop fetching (polling goes on, so the group keeps this consumer) until the ready batch is taken."""
        try:
            self._paused = list(self.consumer.assignment())
            self.consumer.pause(self._paused)
        except KafkaException as exc:
            log.warning("pause: %s", exc)
            self._paused = []
            return
        self.stats.paused += 1
        log.info("every batch is full while a commit waits (for the writer lock?): fetching paused")

    def _resume(self) -> None:
        if not self._paused:
            return
        paused, self._paused = self._paused, []
        try:
            self.consumer.resume(paused)
        except KafkaException as exc:  # revoked meanwhile: a new assignment starts unpaused
            log.warning("resume: %s", exc)

    def handled(self) -> int:
        return self.stats.loaded + self.committer.in_flight()

    def between_batches(self) -> bool:
        # An open batch is committed by finish() on the way out; a commit in flight or a ready batch (waiting
        # for the writer lock, say) is pending work: the idle exit counts from when they are done.
        return not self.committer.writer.busy() and self.committer.ready is None

    def housekeeping(self) -> None:
        every = self.settings.loader_compact_every_s
        if every <= 0 or not self.sink.compacts or time.monotonic() - self._last_compaction < every:
            return
        if self.committer.writer.busy() or self.committer.ready is not None:
            return  # a commit in flight would conflict with compaction's transaction: after it, then
        self._last_compaction = time.monotonic()
        self.committer.settle()
        if self.sink.compact():  # skipped when dbt holds the writer lock: the next run merges instead
            self.stats.compactions += 1

    def finish(self) -> None:
        self.committer.flush()

    def abandon(self) -> None:
        self.committer.abandon()

    def release(self) -> None:
        try:
            self.dlq.flush(10)
            close = getattr(self._store, "close", None)
            if close is not None:
                close()
        finally:
            self.committer.close()  # and the sink
