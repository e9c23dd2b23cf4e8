"""The warehouse loader: tracking.events → raw_events in micro-batches, offsets in the same commit (see sinks.py)."""

from __future__ import annotations

import logging
import signal
import time
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaException, Producer, TopicPartition

from analytics_core.bounds import Bounds, describe
from analytics_core.clients import kafka_consumer, kafka_producer
from analytics_core.decoding import BatchDecoder
from analytics_core.registry import schema_store
from analytics_core.runtime import fewer_gc_passes
from analytics_core.settings import Settings
from analytics_core.topics import LOADER_GROUP, Topics
from loaders import offsets
from loaders.batching import Batch
from loaders.committer import BatchCommitter, LoaderStats
from loaders.offsets import NO_OFFSET
from loaders.sinks import CommitBatch, WarehouseSink, open_sink

__all__ = ["LoaderStats", "WarehouseLoader", "loader_group"]
log = logging.getLogger(__name__)
CONSUME_MAX = 10_000
# A killed loader holds its partitions until the broker expires its session: keep that short
# (librdkafka's 45 s default) so a restarted or surviving loader takes over quickly.
CONSUMER_CONFIG = {"session.timeout.ms": 10_000, "heartbeat.interval.ms": 2_000}


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
        self._stop = False
        self.assigned_at: float | None = None  # first partition assignment: throughput is timed from here
        self._last_compaction = time.monotonic()

    @property
    def expected(self) -> dict[int, int]:
        """Per owned partition: the next offset as stored in the warehouse."""
        return self.committer.expected

    @property
    def stats(self) -> LoaderStats:
        return self.committer.stats

    def stop(self, *_: object) -> None:
        self._stop = True

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        # Eager rebalancing: every partition was revoked (and the writer drained) before this.
        stored = self.sink.stored_offsets()
        if self.assigned_at is None:
            self.assigned_at = time.monotonic()
        for tp in partitions:
            self.expected[tp.partition] = stored.get(tp.partition, NO_OFFSET)
            tp.offset = stored.get(tp.partition, OFFSET_BEGINNING)
        consumer.assign(partitions)
        log.info("assigned %s", {tp.partition: tp.offset for tp in partitions})

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        # Commit what we hold, open batch and batch in flight, before the partitions move, so the
        # next owner starts after it.
        self.committer.flush()
        self._forget(partitions)

    def _on_lost(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        # No longer ours: committing the open batch could race the new owner. A commit already in
        # flight cannot be recalled; fencing refuses whichever of it and the new owner's comes second.
        self.committer.settle()
        self._forget(partitions)

    def _forget(self, partitions: list[TopicPartition]) -> None:
        self.batch.drop_partitions(tp.partition for tp in partitions)
        for tp in partitions:
            self.expected.pop(tp.partition, None)

    def run(
        self, idle_exit_s: float | None = None, handle_signals: bool = True, max_events: int | None = None
    ) -> LoaderStats:
        """Load until SIGTERM/SIGINT, or nothing arrived for idle_exit_s, or max_events are loaded."""
        if handle_signals:
            signal.signal(signal.SIGTERM, self.stop)
            signal.signal(signal.SIGINT, self.stop)
        self.consumer.subscribe(
            [self.topics.events], on_assign=self._on_assign, on_revoke=self._on_revoke, on_lost=self._on_lost
        )
        try:
            with fewer_gc_passes():  # a batch keeps 100k+ GC-tracked messages alive
                self._loop(idle_exit_s, max_events)
                self.committer.flush()
        except BaseException:
            self.committer.abandon()
            raise
        finally:
            self.close()
        return self.stats

    def _loop(self, idle_exit_s: float | None, max_events: int | None) -> None:
        committer = self.committer
        last_data = time.monotonic()
        while not self._stop:
            msgs = self.consumer.consume(num_messages=max(1, min(CONSUME_MAX, self.batch.room())), timeout=0.2)
            good = [m for m in msgs if m.error() is None]
            if len(good) != len(msgs):
                for m in msgs:
                    self._check(m)
            if self.batch.add(good, committer.position()) or not self.expected:
                last_data = time.monotonic()  # idleness counts only while partitions are assigned
            if committer.writer.done():
                committer.settle()  # take a finished commit now: its error surfaces, Kafka offsets move
            if self.batch.due():
                committer.close_batch()
                if max_events is not None and self.stats.loaded + committer.in_flight() >= max_events:
                    return
            elif idle_exit_s is not None and time.monotonic() - last_data > idle_exit_s:
                return
            self._maybe_compact()

    def _check(self, msg: Any) -> None:
        if (err := msg.error()) is None:
            return
        if err.fatal():
            raise KafkaException(err)
        log.warning("consumer: %s", err)

    def flush(self) -> None:
        """Commit the open batch and the batch in flight."""
        self.committer.flush()

    def _maybe_compact(self) -> None:
        every = self.settings.loader_compact_every_s
        if every <= 0 or not self.sink.compacts or time.monotonic() - self._last_compaction < every:
            return
        self._last_compaction = time.monotonic()
        self.committer.settle()  # a commit in flight would conflict with compaction's transaction
        if self.sink.compact():
            self.stats.compactions += 1

    def close(self) -> None:
        try:
            self.consumer.close()  # revokes the partitions: on_revoke flushes (nothing after a failure)
        finally:
            self.dlq.flush(10)
            close = getattr(self._store, "close", None)
            if close is not None:
                close()
            self.committer.close()  # and the sink
