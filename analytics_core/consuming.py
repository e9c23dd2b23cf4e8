"""The consume loop of the two Kafka consumers of tracking.events (the warehouse loader, the realtime consumer).

`ConsumerRunner` owns what both do alike: the group subscription and its rebalance callbacks, SIGTERM
and SIGINT, reading records into a `MicroBatch` that closes by size or by age, the idle and max-events
exits, and shutdown (finish on a clean stop, abandon after a failure, then close the consumer, which
revokes the partitions). What each does its own way is its `BatchHandler`: where an assigned
partition starts, how a closed batch is decoded and committed exactly once, and what a revoked or a
lost partition settles first.
"""

from __future__ import annotations

import logging
import signal
import sys
import time
from collections.abc import Callable, Iterable
from typing import Any, Protocol

from confluent_kafka import Consumer, KafkaException, Message, TopicPartition

from analytics_core.runtime import fewer_gc_passes

log = logging.getLogger(__name__)
CONSUME_MAX = 10_000
# A killed consumer holds its partitions until the broker expires its session: keep that short
# (librdkafka's 45 s default) so a restarted or surviving consumer takes over quickly.
CONSUMER_CONFIG = {"session.timeout.ms": 10_000, "heartbeat.interval.ms": 2_000}


class MicroBatch:
    """The records read since the last batch closed; it is due at max_events or max_seconds after its first record."""

    def __init__(self, max_events: int, max_seconds: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.max_events = max_events
        self.max_seconds = max_seconds
        self._clock = clock
        self.records: list[Any] = []  # confluent_kafka.Message, or anything with partition() and offset()
        self.opened_at: float | None = None

    def __len__(self) -> int:
        return len(self.records)

    def _opened(self) -> None:
        if self.opened_at is None:
            self.opened_at = self._clock()

    def room(self) -> int:
        return max(self.max_events - len(self.records), 0)

    def due(self) -> bool:
        """Full, or open for max_seconds."""
        if not self.records:
            return False
        if len(self.records) >= self.max_events:
            return True
        return self.opened_at is not None and self._clock() - self.opened_at >= self.max_seconds

    def drop_partitions(self, partitions: Iterable[int]) -> None:
        """Forget the records of partitions this process no longer owns."""
        gone = set(partitions)
        self.records = [r for r in self.records if (r.partition() or 0) not in gone]
        if not self.records:
            self.opened_at = None

    def clear(self) -> None:
        self.records, self.opened_at = [], None


class BatchHandler(Protocol):
    """What a consumer plugs into the runner. Every method runs on the runner's (main) thread."""

    @property
    def batch(self) -> MicroBatch:
        """The open batch: the runner asks it for room and whether it is due."""

    def assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        """Set each newly assigned partition's start offset (`tp.offset`); the runner assigns them afterwards."""

    def revoke(self, partitions: list[TopicPartition]) -> None:
        """Commit what is held before the partitions move, so their next owner starts after it."""

    def lose(self, partitions: list[TopicPartition]) -> None:
        """The partitions are already another's: settle, never commit, what is held of them."""

    def forget(self, partitions: set[int]) -> None:
        """Drop the state of partitions no longer owned (the runner drops their records from the batch)."""

    def add(self, records: list[Message]) -> int:
        """Put freshly read records (errors already removed) into the batch; return how many were taken."""

    def close_batch(self) -> None:
        """The batch is due: hand it over to be decoded and committed."""

    def handled(self) -> int:
        """Records committed or in flight: what the max-events exit counts."""

    def between_batches(self) -> bool:
        """Work of a poll that closed no batch; True when nothing is pending, so the idle exit may apply
        (False: the idle time counts from when it returns True again)."""

    def housekeeping(self) -> None:
        """Periodic work after every poll (progress lines, compaction)."""

    def finish(self) -> None:
        """A clean stop: commit the open batch and everything in flight."""

    def abandon(self) -> None:
        """After a failure: drop what is held, so that closing the consumer commits nothing past the failure."""

    def release(self) -> None:
        """Close what the handler holds (threads, producers, clients), after the consumer is closed."""


class ConsumerRunner:
    """Reads one topic for a BatchHandler until stopped, idle, or max_events are handled."""

    def __init__(self, consumer: Consumer, topic: str, handler: BatchHandler, poll_timeout: float = 0.2) -> None:
        self.consumer, self.topic, self.handler = consumer, topic, handler
        self.poll_timeout = poll_timeout
        self.assigned: set[int] = set()
        self.assigned_at: float | None = None  # first partition assignment: throughput is timed from here
        self._stop = False

    @property
    def stopping(self) -> bool:
        return self._stop

    def stop(self, *_: object) -> None:
        """Finish the open batch and return from run() (also the SIGTERM and SIGINT handler)."""
        self._stop = True

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        # Eager rebalancing: every partition was revoked (and its batch committed) before this.
        if self.assigned_at is None:
            self.assigned_at = time.monotonic()
        self.handler.assign(consumer, partitions)
        consumer.assign(partitions)
        self.assigned.update(tp.partition for tp in partitions)
        log.info("%s: assigned %s", self.topic, {tp.partition: tp.offset for tp in partitions})

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self.handler.revoke(partitions)
        self._forget(partitions)

    def _on_lost(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self.handler.lose(partitions)
        self._forget(partitions)

    def _forget(self, partitions: list[TopicPartition]) -> None:
        gone = {tp.partition for tp in partitions}
        self.handler.batch.drop_partitions(gone)
        self.handler.forget(gone)
        self.assigned -= gone

    def run(self, idle_exit_s: float | None = None, handle_signals: bool = True, max_events: int | None = None) -> None:
        """Consume until SIGTERM/SIGINT or stop(), idle_exit_s without records, or max_events handled."""
        if handle_signals:
            signal.signal(signal.SIGTERM, self.stop)
            signal.signal(signal.SIGINT, self.stop)
        self.consumer.subscribe(
            [self.topic], on_assign=self._on_assign, on_revoke=self._on_revoke, on_lost=self._on_lost
        )
        try:
            with fewer_gc_passes():  # a batch keeps 100k+ GC-tracked messages alive
                self._loop(idle_exit_s, max_events)
                self.handler.finish()
        except BaseException:
            self.handler.abandon()
            raise
        finally:
            self.close()

    def _loop(self, idle_exit_s: float | None, max_events: int | None) -> None:
        handler, batch = self.handler, self.handler.batch
        last_data = time.monotonic()
        while not self._stop:
            msgs = self.consumer.consume(num_messages=max(1, min(CONSUME_MAX, batch.room())), timeout=self.poll_timeout)
            good = msgs
            if any(map(Message.error, msgs)):  # rare: most calls return records only
                good = [m for m in msgs if m.error() is None]
                for m in msgs:
                    _check(m)
            if handler.add(good) or not self.assigned:
                last_data = time.monotonic()  # idleness counts only while partitions are assigned
            if batch.due():
                handler.close_batch()
                if max_events is not None and handler.handled() >= max_events:
                    return
            elif not handler.between_batches():
                last_data = time.monotonic()  # its own work is pending (a commit waiting, say): not idle
            elif idle_exit_s is not None and time.monotonic() - last_data > idle_exit_s:
                return
            handler.housekeeping()

    def close(self) -> None:
        """Close the consumer (revoking the partitions: the handler commits what it still holds), then the handler."""
        try:
            self.consumer.close()
        finally:
            self.handler.release()


def _check(msg: Message) -> None:
    if (err := msg.error()) is None:
        return
    if err.fatal():
        raise KafkaException(err)
    log.warning("consumer: %s", err)


class Consumes(Protocol):
    def run(self, idle_exit_s: float | None = None, handle_signals: bool = True, max_events: int | None = None) -> Any:
        """Consume until stopped (SIGTERM/SIGINT), idle, or max_events handled; return the stats."""


def run_command(
    process: Consumes, summary: Callable[[Any], str], idle_exit: float | None, max_events: int | None
) -> None:
    """What `analytics loader` and `analytics realtime` do: log to stderr, run until stopped, print a summary line."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    stats = process.run(idle_exit_s=idle_exit, max_events=max_events)
    print(summary(stats), file=sys.stderr, flush=True)
