"""The warehouse loader: tracking.events → DuckLake raw_events in micro-batches, offsets in the same commit."""

from __future__ import annotations

import logging
import signal
import time
from dataclasses import dataclass, field
from typing import Any

import duckdb
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaException, Producer, TopicPartition

from analytics_core import warehouse
from analytics_core.clients import kafka_consumer, kafka_producer
from analytics_core.registry import schema_store
from analytics_core.settings import Settings
from analytics_core.topics import LOADER_GROUP, Topics
from loaders import compaction
from loaders.batching import Batch
from loaders.decoding import BatchDecoder
from loaders.offsets import NO_OFFSET, Fenced, commit_batch, stored_offsets

log = logging.getLogger(__name__)
CONSUME_MAX = 10_000
# A killed loader holds its partitions until the broker expires its session: keep that short
# (librdkafka's 45 s default) so a restarted or surviving loader takes over quickly.
CONSUMER_CONFIG = {"session.timeout.ms": 10_000, "heartbeat.interval.ms": 2_000}


def loader_group(settings: Settings) -> str:
    # The topic prefix isolates test runs and benchmarks; their groups must not rebalance each other.
    return settings.topic_prefix + LOADER_GROUP


@dataclass
class LoaderStats:
    loaded: int = 0
    dead_lettered: int = 0
    batches: int = 0
    fenced: int = 0
    compactions: int = 0
    partitions: dict[int, int] = field(default_factory=dict)


class WarehouseLoader:
    """One loader process; several share the partitions of tracking.events through the consumer group."""

    def __init__(self, settings: Settings, consumer_overrides: dict[str, Any] | None = None) -> None:
        self.settings = settings
        self.topics = Topics.from_settings(settings)
        self.alias = settings.warehouse_alias
        self.con = warehouse.connect(settings)
        self._store = schema_store(settings)
        self.consumer: Consumer = kafka_consumer(
            settings, loader_group(settings), {**CONSUMER_CONFIG, **(consumer_overrides or {})}
        )
        self.dlq: Producer = kafka_producer(settings)
        self.decoder = BatchDecoder(self._store, self.dlq, self.topics.events_dlq)
        self.batch = Batch(settings.loader_batch_events, settings.loader_batch_seconds)
        self.expected: dict[int, int] = {}  # per owned partition: next offset as stored in the warehouse
        self.stats = LoaderStats()
        self._stop = False
        self.assigned_at: float | None = None  # first partition assignment: throughput is timed from here
        self._last_compaction = time.monotonic()

    def stop(self, *_: object) -> None:
        self._stop = True

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        stored = stored_offsets(self.con, self.alias, self.topics.events)
        if self.assigned_at is None:
            self.assigned_at = time.monotonic()
        for tp in partitions:
            self.expected[tp.partition] = stored.get(tp.partition, NO_OFFSET)
            tp.offset = stored.get(tp.partition, OFFSET_BEGINNING)
        consumer.assign(partitions)
        log.info("assigned %s", {tp.partition: tp.offset for tp in partitions})

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        # Commit what we hold before the partitions move, so the next owner starts after it.
        self.flush()
        self._forget(partitions)

    def _on_lost(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self._forget(partitions)  # no longer ours: committing now could race the new owner

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
        last_data = time.monotonic()
        try:
            while not self._stop:
                msgs = self.consumer.consume(num_messages=max(1, min(CONSUME_MAX, self.batch.room())), timeout=0.2)
                good = [m for m in msgs if self._ok(m)]
                if self.batch.add(good, self.expected) or not self.expected:
                    last_data = time.monotonic()  # idleness counts only while partitions are assigned
                if self.batch.due():
                    self.flush()
                    if max_events is not None and self.stats.loaded >= max_events:
                        break
                elif idle_exit_s is not None and time.monotonic() - last_data > idle_exit_s:
                    break
                self._maybe_compact()
            self.flush()
        finally:
            self.close()
        return self.stats

    def _ok(self, msg: Any) -> bool:
        err = msg.error()
        if err is None:
            return True
        if err.fatal():
            raise KafkaException(err)
        log.warning("consumer: %s", err)
        return False

    def flush(self) -> None:
        """Decode the open batch, dead-letter what cannot be decoded, commit rows and offsets together."""
        if not self.batch.records:
            return
        records, next_offsets = self.batch.records, dict(self.batch.next_offsets)
        rows = self.decoder.decode(records)
        # Dead letters are acknowledged before the offsets move past them: a crash in between can
        # repeat a dead letter, never lose one.
        if len(self.dlq) and self.dlq.flush(30) > 0:  # an idle flush() still costs ~0.1 s
            raise RuntimeError("dead letters not acknowledged by Kafka; batch not committed")
        try:
            try:
                commit_batch(self.con, self.alias, self.topics.events, rows, self.expected, next_offsets)
            except duckdb.ConversionException:
                # Invalid JSON in properties fails the whole INSERT: dead-letter those rows, commit the rest.
                rows = self.decoder.drop_invalid_json(self.con, rows, records)
                if len(self.dlq) and self.dlq.flush(30) > 0:  # an idle flush() still costs ~0.1 s
                    raise RuntimeError("dead letters not acknowledged by Kafka; batch not committed") from None
                commit_batch(self.con, self.alias, self.topics.events, rows, self.expected, next_offsets)
        except Fenced as exc:
            log.warning("%s; dropping the batch and re-seeking", exc)
            self.stats.fenced += 1
            self.batch.clear()
            self._reseek()
            return
        self.expected.update(next_offsets)
        self.batch.clear()
        self.stats.loaded += rows.num_rows
        self.stats.dead_lettered = self.decoder.dead_lettered
        self.stats.batches += 1
        self.stats.partitions = dict(self.expected)
        # Kafka's committed offsets are only for lag dashboards; the warehouse's are the truth.
        tps = [TopicPartition(self.topics.events, p, o) for p, o in next_offsets.items()]
        self.consumer.commit(offsets=tps, asynchronous=True)

    def _reseek(self) -> None:
        stored = stored_offsets(self.con, self.alias, self.topics.events)
        for part in list(self.expected):
            self.expected[part] = stored.get(part, NO_OFFSET)
            try:
                self.consumer.seek(TopicPartition(self.topics.events, part, stored.get(part, OFFSET_BEGINNING)))
            except KafkaException as exc:  # not fetching yet: the stored offset is applied on (re)assignment
                log.warning("seek partition %s: %s", part, exc)

    def _maybe_compact(self) -> None:
        every = self.settings.loader_compact_every_s
        if every <= 0 or time.monotonic() - self._last_compaction < every:
            return
        self._last_compaction = time.monotonic()
        if compaction.compact(self.con, self.alias):
            self.stats.compactions += 1

    def close(self) -> None:
        try:
            self.consumer.close()
        finally:
            self.dlq.flush(10)
            close = getattr(self._store, "close", None)
            if close is not None:
                close()
            try:
                self.con.close()
            except duckdb.Error as exc:
                log.warning("closing the warehouse: %s", exc)
