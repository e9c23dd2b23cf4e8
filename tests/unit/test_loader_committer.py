"""The loader's commit side with the writer thread: results are taken in order, failures and fencing stop
everything read after the batch concerned, and the Kafka positions follow the stored offsets.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any

import pytest
from confluent_kafka import TopicPartition

from analytics_core import warehouse
from analytics_core.decoding import BatchDecoder
from analytics_core.serde import EventSerializer
from analytics_core.settings import Settings
from bench.events import iter_events
from loaders.batching import Batch
from loaders.committer import BatchCommitter
from loaders.offsets import commit_batch, stored_offsets
from loaders.sinks import CommitBatch, DuckLakeSink

TOPIC = "t"
VALUES = [EventSerializer(1)(e) for e in iter_events(40)]


@dataclass
class Rec:
    p: int
    o: int

    def value(self) -> bytes:
        return VALUES[self.o % len(VALUES)]

    def partition(self) -> int:
        return self.p

    def offset(self) -> int:
        return self.o

    def key(self) -> None:
        return None


@dataclass
class FakeConsumer:
    commits: list[dict[int, int]] = field(default_factory=list)
    seeks: list[tuple[int, int]] = field(default_factory=list)

    def commit(self, offsets: list[TopicPartition], asynchronous: bool) -> None:
        self.commits.append({tp.partition: tp.offset for tp in offsets})

    def seek(self, tp: TopicPartition) -> None:
        self.seeks.append((tp.partition, tp.offset))


class NoDeadLetters:
    def __len__(self) -> int:
        return 0

    def produce(self, *args: Any) -> None:
        raise AssertionError("no record here is a dead letter")


class Store:
    def ids_for(self, subject: str) -> set[int]:
        return {1}


def make(lake: Settings, commit: CommitBatch = commit_batch) -> tuple[BatchCommitter, FakeConsumer, Batch]:
    sink = DuckLakeSink(warehouse.connect(lake), "lake", TOPIC, commit)
    consumer, batch = FakeConsumer(), Batch(10, 60.0)
    decoder = BatchDecoder(Store(), NoDeadLetters(), "dlq")  # type: ignore[arg-type]
    committer = BatchCommitter(sink, consumer, decoder, NoDeadLetters(), batch)  # type: ignore[arg-type]
    committer.expected.update({0: -1, 1: -1})
    return committer, consumer, batch


def read(batch: Batch, committer: BatchCommitter, partition: int, first: int, n: int) -> None:
    batch.add([Rec(partition, o) for o in range(first, first + n)], committer.position())


def lake_con(committer: BatchCommitter) -> Any:
    assert isinstance(committer.sink, DuckLakeSink)
    return committer.sink.con


def rows(committer: BatchCommitter) -> int:
    row = lake_con(committer).execute("SELECT count(*) FROM lake.raw_events").fetchone()
    return int(row[0]) if row else 0


def test_the_next_batch_is_read_while_one_commits_then_both_land(lake: Settings) -> None:
    committer, consumer, batch = make(lake)
    read(batch, committer, 0, 0, 10)
    committer.close_batch()
    assert committer.writer.pending is not None and committer.in_flight() == 10
    read(batch, committer, 0, 10, 10)  # goes on from the batch in flight, not from the stored offsets
    assert len(batch) == 10
    committer.flush()
    assert stored_offsets(lake_con(committer), "lake", TOPIC) == {0: 20} and committer.expected[0] == 20
    assert rows(committer) == 20 and committer.stats.batches == 2 and consumer.commits == [{0: 10}, {0: 20}]
    committer.close()


def test_a_failed_commit_surfaces_and_nothing_read_after_it_is_committed(lake: Settings) -> None:
    calls: list[dict[int, int]] = []

    def failing(*args: Any) -> None:
        calls.append(args[-1])
        raise OSError("disk full")

    committer, consumer, batch = make(lake, failing)
    read(batch, committer, 0, 0, 10)
    committer.close_batch()
    read(batch, committer, 0, 10, 10)
    with pytest.raises(OSError, match="disk full"):
        committer.close_batch()  # the next batch waits for this result before it is submitted
    committer.abandon()
    committer.flush()  # what closing the consumer does (revoke): nothing is left to commit
    assert calls == [{0: 10}] and committer.writer.pending is None and len(batch) == 0
    assert stored_offsets(lake_con(committer), "lake", TOPIC) == {} and rows(committer) == 0 and consumer.commits == []
    committer.close()


def test_a_fenced_batch_in_flight_drops_what_was_read_after_it_and_reseeks(lake: Settings) -> None:
    committer, consumer, batch = make(lake)
    read(batch, committer, 0, 0, 10)
    committer.close_batch()
    committer.settle()
    # Another loader took partition 0 over and loaded offsets 10-14 meanwhile.
    other = warehouse.connect(lake)
    commit_batch(other, "lake", TOPIC, committer.decoder.decode([Rec(0, o) for o in range(10, 15)]), {0: 10}, {0: 15})
    read(batch, committer, 0, 10, 10)
    committer.close_batch()  # in flight with expected {0: 10}: it will be fenced
    read(batch, committer, 0, 20, 10)
    committer.close_batch()  # takes the fenced result first: this batch is dropped, not submitted
    assert committer.writer.pending is None and len(batch) == 0 and committer.stats.fenced == 1
    assert committer.expected[0] == 15 and (0, 15) in consumer.seeks
    assert stored_offsets(other, "lake", TOPIC) == {0: 15} and rows(committer) == 15
    read(batch, committer, 0, 15, 5)  # re-read from the stored offset after the seek
    committer.flush()
    assert stored_offsets(other, "lake", TOPIC) == {0: 20} and rows(committer) == 20
    positions = other.execute("SELECT count(DISTINCT _kafka_offset) FROM lake.raw_events").fetchone()
    assert positions == (20,)
    other.close()
    committer.close()


def test_while_a_commit_waits_the_next_batch_waits_decoded_and_reading_goes_on(lake: Settings) -> None:
    gate = threading.Event()

    def waits_for_the_lock(*args: Any) -> None:
        assert gate.wait(10)  # as a commit waiting for the writer lock while dbt builds
        commit_batch(*args)

    committer, consumer, batch = make(lake, waits_for_the_lock)
    read(batch, committer, 0, 0, 10)
    assert committer.close_batch(wait=False) and committer.writer.busy()
    read(batch, committer, 0, 10, 10)
    assert committer.close_batch(wait=False)  # decoded, waiting as the ready batch: nothing blocked
    assert committer.ready is not None and len(batch) == 0 and committer.in_flight() == 20
    read(batch, committer, 0, 20, 10)  # goes on after the ready batch
    assert not committer.close_batch(wait=False) and len(batch) == 10  # stays open while one is ready
    committer.advance()
    assert committer.writer.busy() and committer.ready is not None and rows(committer) == 0
    gate.set()
    assert committer.writer.wait_done(10)
    committer.advance()  # the first result taken, the ready batch submitted
    assert committer.ready is None and committer.expected[0] == 10
    assert committer.close_batch(wait=False)
    committer.flush()
    assert stored_offsets(lake_con(committer), "lake", TOPIC) == {0: 30} and rows(committer) == 30
    assert consumer.commits == [{0: 10}, {0: 20}, {0: 30}] and committer.stats.batches == 3
    committer.close()
