"""The realtime consumer: tracking.events (group realtime.counters) → per-tenant live counters and sketches in Redis.

Records are read in micro-batches (realtime_batch_events or realtime_batch_seconds, whichever comes
first), decoded with the loader's columnar decoder, and applied by realtime/apply.py, one MULTI/EXEC
per tenant that also stores the tenant's offsets; Kafka offsets are committed afterwards, so they are
only where a restart begins reading, never what decides if a record is applied.

When Redis lost its data (rt:alive is gone, or was written again by another consumer that saw the
loss) the consumer seeks every partition back to the start of the retention window and rebuilds
the live numbers from Kafka; a first start without committed offsets starts there too.

The consume loop (subscription, rebalances, signals, batching, shutdown) is analytics_core.consuming's
ConsumerRunner, shared with the warehouse loader; this consumer is its BatchHandler.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import redis
from confluent_kafka import OFFSET_END, Consumer, KafkaException, Message, TopicPartition

from analytics_core.bounds import Bounds, describe
from analytics_core.catalogue import get_catalogue
from analytics_core.clients import kafka_consumer, redis_client
from analytics_core.consuming import CONSUMER_CONFIG, ConsumerRunner
from analytics_core.registry import schema_store
from analytics_core.settings import Settings
from analytics_core.topics import REALTIME_GROUP, Topics
from realtime.apply import RealtimeStats, RedisApplier
from realtime.decoding import CountingDecoder
from realtime.pipeline import BatchPipeline, OpenBatch

log = logging.getLogger(__name__)
PROGRESS_EVERY_S = 10.0
IDLE_ALIVE_CHECK_S = 2.0  # without traffic, look for a Redis that lost its data this often
SEEK_ATTEMPTS = 20


def realtime_group(settings: Settings) -> str:
    # The topic prefix isolates test runs and benchmarks, as for the loader's group.
    return settings.topic_prefix + REALTIME_GROUP


class RealtimeConsumer:
    """One consumer process; several share the partitions of tracking.events through the consumer group."""

    def __init__(self, settings: Settings, consumer_overrides: dict[str, Any] | None = None) -> None:
        self.settings = settings
        self.topic = Topics.from_settings(settings).events
        self._store = schema_store(settings)
        self.redis = redis_client(settings)
        self.consumer: Consumer = kafka_consumer(
            settings, realtime_group(settings), {**CONSUMER_CONFIG, **(consumer_overrides or {})}
        )
        self.batch = OpenBatch(settings.realtime_batch_events, settings.realtime_batch_seconds)
        bounds = Bounds.from_settings(settings)
        self.decoder = CountingDecoder(self._store, bounds)
        log.info("bounds: %s", describe(bounds))
        self.applier = RedisApplier(settings, self.redis, get_catalogue())
        self.stats = RealtimeStats()
        self.runner = ConsumerRunner(
            self.consumer, self.topic, self, poll_timeout=min(settings.realtime_batch_seconds, 0.2)
        )
        self.pipeline = BatchPipeline(self.consumer, self.topic, self.decoder, self.applier, self.stats, self._stopping)
        self._last_alive_check = time.monotonic()
        self._last_progress = time.monotonic()
        self._reported = RealtimeStats()

    @property
    def assigned_at(self) -> float | None:
        """When the first partitions were assigned (monotonic clock): throughput is timed from here."""
        return self.runner.assigned_at

    def stop(self, *_: object) -> None:
        self.runner.stop()

    def _stopping(self) -> bool:
        return self.runner.stopping

    def run(
        self, idle_exit_s: float | None = None, handle_signals: bool = True, max_events: int | None = None
    ) -> RealtimeStats:
        """Apply events until SIGTERM/SIGINT (the open batch is finished), idle_exit_s without events, or max_events."""
        self.runner.run(idle_exit_s, handle_signals, max_events)
        return self.stats

    def close(self) -> None:
        """Close the consumer (its partitions are revoked: the open batch is applied), then the rest."""
        self.runner.close()

    def _retention_start(self, partitions: list[int]) -> list[TopicPartition]:
        """Per partition, the first offset written within the retention window (the end when there is none)."""
        since_ms = int((time.time() - self.settings.realtime_retention_s) * 1000)
        query = [TopicPartition(self.topic, p, since_ms) for p in partitions]
        found = self.consumer.offsets_for_times(query, timeout=30)
        return [TopicPartition(self.topic, tp.partition, tp.offset if tp.offset >= 0 else OFFSET_END) for tp in found]

    # The BatchHandler of the runner (analytics_core/consuming.py).

    def assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        # Another process may have applied these partitions since this one last held them.
        self.applier.forget()
        current = self.applier.alive()
        rebuild = self.applier.lost(current)
        if rebuild:
            self.applier.rebuilt(current)
            self.stats.rebuilds += 1
            log.warning("Redis lost its data: rebuilding the retention window")
        committed = {tp.partition: tp.offset for tp in consumer.committed(partitions, timeout=30)}
        fresh = [tp.partition for tp in partitions if rebuild or committed.get(tp.partition, -1) < 0]
        starts = {tp.partition: tp.offset for tp in self._retention_start(fresh)} if fresh else {}
        for tp in partitions:
            tp.offset = starts.get(tp.partition, committed.get(tp.partition, OFFSET_END))

    def revoke(self, partitions: list[TopicPartition]) -> None:
        # Apply what we hold before the partitions move, so the next owner starts after it. (Had Redis
        # lost its data, the next assignment finds rt:alive missing and rebuilds.)
        self._flush(rebuild=False)

    def lose(self, partitions: list[TopicPartition]) -> None:
        pass  # no longer ours: the new owner applies these records; applying them here could double them

    def forget(self, partitions: set[int]) -> None:
        self.pipeline.drop_partitions(partitions)

    def add(self, records: list[Message]) -> int:
        return self.batch.add(records)

    def close_batch(self) -> None:
        """Hand the open batch over for decoding (the batch before it is applied meanwhile)."""
        if self.batch.records and not self.pipeline.submit(*self.batch.take()):
            self._rebuild()

    def handled(self) -> int:
        return self.stats.records + self.pipeline.pending

    def between_batches(self) -> bool:
        if not self.pipeline.advance():  # a batch decoded meanwhile goes to Redis without waiting
            self._rebuild()
            return False
        if self.batch.records:
            return False
        self._flush()  # nothing new meanwhile: apply and settle what is pending, commit its offsets
        self._check_alive_when_idle()
        return True

    def housekeeping(self) -> None:
        seconds = time.monotonic() - self._last_progress
        if seconds >= PROGRESS_EVERY_S:
            self._progress(self._reported, seconds)
            self._reported, self._last_progress = _copy(self.stats), time.monotonic()

    def finish(self) -> None:
        self._flush()

    def abandon(self) -> None:
        # Closing revokes the partitions: that must not apply or commit past a failure.
        self.batch.take()
        self.pipeline.discard()

    def release(self) -> None:
        try:
            self.pipeline.close()
            self.decoder.close()
            close = getattr(self._store, "close", None)
            if close is not None:
                close()
        finally:
            self.redis.close()

    def _flush(self, rebuild: bool = True) -> None:
        """Apply the open batch and everything in the pipeline; nothing is pending afterwards."""
        ok = not self.batch.records or self.pipeline.submit(*self.batch.take())
        if not (ok and self.pipeline.flush()):
            self._rebuild() if rebuild else self.pipeline.discard()

    def _rebuild(self) -> None:
        """Redis lost its data: every owned partition back to the start of the retention window."""
        self.stats.rebuilds += 1
        self.pipeline.discard()
        self.batch.take()
        assigned = sorted(self.runner.assigned)
        starts = self._retention_start(assigned) if assigned else []
        for tp in starts:
            _seek(self.consumer, tp)
        log.warning("Redis lost its data: rebuilding from %s", {tp.partition: tp.offset for tp in starts})

    def _check_alive_when_idle(self) -> None:
        if time.monotonic() - self._last_alive_check < IDLE_ALIVE_CHECK_S or not self.runner.assigned:
            return
        self._last_alive_check = time.monotonic()
        try:
            current = self.applier.alive()
        except (redis.ConnectionError, redis.TimeoutError) as exc:
            log.warning("Redis unreachable while idle: %s", exc)
            return
        if self.applier.lost(current):
            self.applier.rebuilt(current)
            self._rebuild()

    def _progress(self, before: RealtimeStats, seconds: float) -> None:
        s = self.stats
        log.info(
            "applied %d events (%.0f/s) in %d batches; duplicates %d, too old %d, undecodable %d, out of range %d, "
            "replayed %d, refused Redis writes %d; seen-set checks %.1f%% of the time",
            s.applied,
            (s.records - before.records) / seconds,
            s.batches,
            s.duplicates,
            s.too_old,
            s.undecodable,
            s.out_of_range,
            s.replayed,
            s.write_errors,
            100 * (s.seen_check_s - before.seen_check_s) / seconds,
        )


def _seek(consumer: Consumer, tp: TopicPartition) -> None:
    # A partition assigned a moment ago may not be fetching yet, and refuses a seek until it is.
    for attempt in range(SEEK_ATTEMPTS):
        try:
            consumer.seek(tp)
            return
        except KafkaException as exc:
            if attempt == SEEK_ATTEMPTS - 1:
                raise RuntimeError(f"cannot seek partition {tp.partition} to rebuild the live window: {exc}") from exc
            time.sleep(0.1)


def _copy(stats: RealtimeStats) -> RealtimeStats:
    out = RealtimeStats()
    out.add(stats)
    return out
