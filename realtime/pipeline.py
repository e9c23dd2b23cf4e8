"""Batches on their way to Redis: the open one, one decoding on a worker thread, one whose writes Redis executes.

While a batch is decoded (numpy and Arrow, mostly without the GIL) the main thread applies the one
before, and while Redis executes that one's writes the main thread reads the next records; Kafka
offsets are committed once Redis has answered. Every step keeps Kafka order.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import redis
from confluent_kafka import Consumer, Message, TopicPartition

from analytics_core.consuming import MicroBatch
from realtime.apply import Prepared, RealtimeStats, RedisApplier
from realtime.decoding import CountingDecoder

log = logging.getLogger(__name__)
REDIS_RETRY_MAX_S = 5.0


class OpenBatch(MicroBatch):
    """The records read since the last batch closed; it closes at max_events or after max_seconds.

    Unlike the loader's batch it keeps no per-record bookkeeping: re-deliveries are recognised in
    Redis (the tenants' stored offsets), so the records are only kept.
    """

    records: list[Message]

    def add(self, records: list[Message]) -> int:
        if records:
            self.records.extend(records)
            self._opened()
        return len(records)

    def take(self) -> tuple[list[Message], np.ndarray, np.ndarray]:
        """The records with their partitions and offsets as arrays; empties the batch."""
        records = self.records
        self.clear()
        parts = np.fromiter(map(Message.partition, records), dtype=np.int64, count=len(records))
        offsets = np.fromiter(map(Message.offset, records), dtype=np.int64, count=len(records))
        return records, parts, offsets


@dataclass
class _Decoding:
    future: Future[tuple[Prepared, int, int]]
    records: int
    parts: np.ndarray
    offsets: np.ndarray
    dropped: set[int] = field(default_factory=set)  # partitions lost meanwhile: not applied


class BatchPipeline:
    """Decodes closed batches on a worker thread and applies them, in order, exactly once."""

    def __init__(
        self,
        consumer: Consumer,
        topic: str,
        decoder: CountingDecoder,
        applier: RedisApplier,
        stats: RealtimeStats,
        stopping: Callable[[], bool],
    ) -> None:
        self.consumer, self.topic, self.decoder, self.applier = consumer, topic, decoder, applier
        self.stats, self._stopping = stats, stopping
        self._worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="realtime-decode")
        self._decoding: _Decoding | None = None
        self._in_flight: tuple[Prepared, list[TopicPartition]] | None = None  # written, Redis's replies unread

    @property
    def pending(self) -> int:
        """Records handed over and not applied yet."""
        return self._decoding.records if self._decoding else 0

    def submit(self, records: list[Message], parts: np.ndarray, offsets: np.ndarray) -> bool:
        """Start decoding a closed batch and apply the one decoded before; False if Redis lost its data."""
        job = _Decoding(self._worker.submit(self._decode, records, parts, offsets), len(records), parts, offsets)
        ok = self._apply_decoded()
        self._decoding = job if ok else None  # after a loss its records are read again from Kafka
        return ok

    def advance(self) -> bool:
        """Apply the batch being decoded if it is ready (no waiting); False if Redis lost its data."""
        if self._decoding is None or not self._decoding.future.done():
            return True
        return self._apply_decoded()

    def flush(self) -> bool:
        """Apply what was handed over and settle it: nothing is pending afterwards. False if Redis lost its data."""
        return self._apply_decoded() and self._settle()

    def drop_partitions(self, partitions: set[int]) -> None:
        if self._decoding is not None:
            self._decoding.dropped |= partitions

    def discard(self) -> None:
        """Forget what is pending after a failure or a rebuild: none of it is applied or committed."""
        self._decoding = self._in_flight = None
        self.applier.abandon()

    def close(self) -> None:
        self._worker.shutdown(wait=True)

    def _decode(self, records: list[Message], parts: np.ndarray, offsets: np.ndarray) -> tuple[Prepared, int, int]:
        """The prepared batch, the records skipped as undecodable, and those skipped as out of range."""
        before, range_before = self.decoder.dead_lettered, self.decoder.by_reason["out_of_range"]
        table = self.decoder.decode_usable(records, parts, offsets)
        out_of_range = self.decoder.by_reason["out_of_range"] - range_before
        return self.applier.prepare(table), self.decoder.dead_lettered - before - out_of_range, out_of_range

    def _apply_decoded(self) -> bool:
        job, self._decoding = self._decoding, None
        if job is None:
            return True
        prepared, undecodable, out_of_range = job.future.result()
        parts, offsets = job.parts, job.offsets
        if job.dropped:
            table = prepared.table
            table = table.filter(pc.invert(pc.is_in(table.column("_kafka_partition"), pa.array(list(job.dropped)))))
            prepared = self.applier.prepare(table)
            keep = ~np.isin(parts, list(job.dropped))
            parts, offsets = parts[keep], offsets[keep]
        if not self._settle():
            return False
        result = self._apply_with_retries(prepared)
        if result is None:
            return False
        result.records, result.undecodable = len(parts), result.undecodable + undecodable
        result.out_of_range = out_of_range
        self.applier.count_undecodable(undecodable, out_of_range)
        self.stats.add(result)
        if len(parts):
            last = np.full(int(parts.max()) + 1, -1, dtype=np.int64)
            np.maximum.at(last, parts, offsets)
            commit = [TopicPartition(self.topic, p, o + 1) for p, o in enumerate(last.tolist()) if o >= 0]
            self._in_flight = (prepared, commit)
        return True

    def _settle(self) -> bool:
        """Read Redis's replies to the batch in flight, then commit its Kafka offsets; False if Redis lost its data."""
        if self._in_flight is None:
            return True
        prepared, commit = self._in_flight
        self._in_flight = None
        try:
            self.applier.settle()
        except (redis.ConnectionError, redis.TimeoutError) as exc:
            # Which transactions were applied is unknown: apply the batch again, the stored offsets skip those.
            log.warning("Redis connection lost while applying a batch (%s): applying it again", exc)
            self.applier.abandon()
            if self._apply_with_retries(prepared, settle=True) is None:
                return False
        self.stats.write_errors += self.applier.take_write_errors()
        self.consumer.commit(offsets=commit, asynchronous=True)
        return True

    def _apply_with_retries(self, prepared: Prepared, settle: bool = False) -> RealtimeStats | None:
        """Apply (and settle); while Redis is unreachable, wait and retry (the stored offsets make a retry exact)."""
        delay = 0.1
        while True:
            try:
                result = self.applier.apply(prepared)
                if settle and result is not None:
                    self.applier.settle()
                return result
            except (redis.ConnectionError, redis.TimeoutError) as exc:
                self.applier.abandon()
                if self._stopping():
                    raise
                log.warning("Redis unreachable (%s); retrying the batch in %.1f s", exc, delay)
                time.sleep(delay)
                delay = min(delay * 2, REDIS_RETRY_MAX_S)
            try:
                # A Redis restarted from an older snapshot holds less than was applied: rebuild.
                if self.applier.went_back():
                    self.applier.rebuilt(self.applier.alive())
                    return None
            except (redis.ConnectionError, redis.TimeoutError):
                continue
            self.applier.forget()
