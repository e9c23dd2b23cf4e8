"""The shared consume loop (analytics_core/consuming.py) against a scripted consumer: the order of the
handler's calls on rebalances, stops and failures, and the exits. The real consumers run it in the
loader and realtime integration and crash tests."""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from confluent_kafka import KafkaError, KafkaException, Message, TopicPartition

from analytics_core.consuming import ConsumerRunner, MicroBatch


def Msg(partition: int, offset: int, err: KafkaError | None = None) -> Message:
    return Message(topic="t", partition=partition, offset=offset, value=b"", error=err)


class ScriptedConsumer:
    """Each consume() call runs the next step: a list of messages, or a callable that gets the callbacks."""

    def __init__(self, steps: list[Any]) -> None:
        self.steps: Iterator[Any] = iter(steps)
        self.callbacks: dict[str, Any] = {}
        self.assigned: list[int] = []
        self.closed = False

    def subscribe(self, topics: list[str], **callbacks: Any) -> None:
        self.callbacks = callbacks

    def assign(self, partitions: list[TopicPartition]) -> None:
        self.assigned = [tp.partition for tp in partitions]

    def consume(self, num_messages: int, timeout: float) -> list[Message]:
        step: Any = next(self.steps, [])
        if callable(step):
            return step(self) or []
        return step[:num_messages]

    def close(self) -> None:
        self.closed = True
        if self.assigned:
            self.callbacks["on_revoke"](self, [TopicPartition("t", p) for p in self.assigned])
            self.assigned = []


def assign(*parts: int) -> Any:
    return lambda c: c.callbacks["on_assign"](c, [TopicPartition("t", p) for p in parts])


def revoke(*parts: int) -> Any:
    return lambda c: c.callbacks["on_revoke"](c, [TopicPartition("t", p) for p in parts])


def lose(*parts: int) -> Any:
    return lambda c: c.callbacks["on_lost"](c, [TopicPartition("t", p) for p in parts])


@dataclass
class Handler:
    batch: MicroBatch = field(default_factory=lambda: MicroBatch(3, 60.0))
    calls: list[str] = field(default_factory=list)
    committed: list[tuple[int, int]] = field(default_factory=list)
    fail_on_close: bool = False

    def assign(self, consumer: Any, partitions: list[TopicPartition]) -> None:
        self.calls.append(f"assign {[tp.partition for tp in partitions]}")
        for tp in partitions:
            tp.offset = 10 * tp.partition

    def revoke(self, partitions: list[TopicPartition]) -> None:
        self.calls.append(f"revoke {[tp.partition for tp in partitions]} holding {len(self.batch)}")
        self._commit()

    def lose(self, partitions: list[TopicPartition]) -> None:
        self.calls.append(f"lose {[tp.partition for tp in partitions]} holding {len(self.batch)}")

    def forget(self, partitions: set[int]) -> None:
        self.calls.append(f"forget {sorted(partitions)}")

    def add(self, records: list[Any]) -> int:
        self.batch.records.extend(records)
        if records:
            self.batch._opened()
        return len(records)

    def close_batch(self) -> None:
        if self.fail_on_close:
            raise RuntimeError("commit failed")
        self.calls.append(f"close_batch {len(self.batch)}")
        self._commit()

    def _commit(self) -> None:
        self.committed += [(r.partition(), r.offset()) for r in self.batch.records]
        self.batch.clear()

    def handled(self) -> int:
        return len(self.committed)

    def between_batches(self) -> bool:
        return True  # as the loader: the open batch is committed by finish() on the way out

    def housekeeping(self) -> None:
        pass

    def finish(self) -> None:
        self.calls.append("finish")
        self._commit()

    def abandon(self) -> None:
        self.calls.append("abandon")
        self.batch.clear()

    def release(self) -> None:
        self.calls.append("release")


IDLE = 0.3  # the scripted steps take microseconds: the run ends this long after the script does


def run(steps: list[Any], handler: Handler, **kwargs: Any) -> tuple[ConsumerRunner, ScriptedConsumer]:
    consumer = ScriptedConsumer(steps)
    runner = ConsumerRunner(consumer, "t", handler, poll_timeout=0)  # type: ignore[arg-type]
    runner.run(handle_signals=False, **kwargs)
    return runner, consumer


def test_batches_close_by_size_and_the_rest_is_committed_on_the_way_out() -> None:
    handler = Handler()
    msgs = [Msg(0, o) for o in range(5)]
    runner, consumer = run([assign(0, 1), msgs[:3], msgs[3:5]], handler, idle_exit_s=IDLE)
    assert handler.committed == [(0, o) for o in range(5)]
    assert handler.calls == [
        "assign [0, 1]",
        "close_batch 3",
        "finish",
        "revoke [0, 1] holding 0",
        "forget [0, 1]",
        "release",
    ]
    assert consumer.closed and runner.assigned == set() and runner.assigned_at is not None


def test_idle_exit_counts_only_while_partitions_are_assigned() -> None:
    handler = Handler()

    def slow_poll_unassigned(c: ScriptedConsumer) -> list[Message]:
        time.sleep(2 * IDLE)  # longer than the idle exit, but no partition is ours yet
        return []

    run([slow_poll_unassigned, assign(0), [Msg(0, 1)]], handler, idle_exit_s=IDLE)
    assert handler.committed == [(0, 1)]


def test_max_events_stops_after_the_batch_that_reaches_it() -> None:
    handler = Handler()
    steps = [assign(0), [Msg(0, o) for o in range(3)], [Msg(0, o) for o in range(3, 6)], [Msg(0, 6)]]
    run(steps, handler, max_events=4)
    assert handler.committed == [(0, o) for o in range(6)]


def test_a_revoked_partition_is_committed_and_a_lost_one_dropped_before_the_next_owner_reads() -> None:
    handler = Handler(batch=MicroBatch(100, 60.0))
    steps = [assign(0, 1), [Msg(0, 1), Msg(1, 1)], revoke(1), [Msg(0, 2), Msg(1, 9)], lose(1), [Msg(0, 3)]]
    run(steps, handler, idle_exit_s=IDLE)
    # Revoke: what was held is committed. Lost: partition 1's record read since is dropped, never committed.
    assert handler.committed == [(0, 1), (1, 1), (0, 2), (0, 3)]
    assert "lose [1] holding 2" in handler.calls and handler.calls[handler.calls.index("lose [1] holding 2") + 1] == (
        "forget [1]"
    )


def test_a_failure_abandons_the_batch_and_closing_commits_nothing_past_it() -> None:
    handler = Handler(fail_on_close=True)
    consumer = ScriptedConsumer([assign(0), [Msg(0, o) for o in range(3)]])
    runner = ConsumerRunner(consumer, "t", handler, poll_timeout=0)  # type: ignore[arg-type]
    with pytest.raises(RuntimeError, match="commit failed"):
        runner.run(handle_signals=False)
    assert handler.committed == [] and consumer.closed
    assert handler.calls[-4:] == ["abandon", "revoke [0] holding 0", "forget [0]", "release"]


def test_a_fatal_consumer_error_stops_the_run_and_a_transient_one_is_skipped() -> None:
    transient = KafkaError(KafkaError._TRANSPORT, "broker down", fatal=False)
    handler = Handler()
    run([assign(0), [Msg(0, 1), Msg(0, -1, transient), Msg(0, 2)]], handler, idle_exit_s=IDLE)
    assert handler.committed == [(0, 1), (0, 2)]
    fatal = KafkaError(KafkaError._FATAL, "fenced", fatal=True)
    with pytest.raises(KafkaException):
        run([assign(0), [Msg(0, 1, fatal)]], Handler(), idle_exit_s=IDLE)


def test_stop_ends_the_run_after_the_current_poll() -> None:
    handler = Handler(batch=MicroBatch(100, 60.0))
    consumer = ScriptedConsumer([])
    runner = ConsumerRunner(consumer, "t", handler, poll_timeout=0)  # type: ignore[arg-type]

    def stop_after_reading(c: ScriptedConsumer) -> list[Message]:
        runner.stop()
        return [Msg(0, 7)]

    consumer.steps = iter([assign(0), stop_after_reading, [Msg(0, 8)]])
    runner.run(handle_signals=False)
    assert handler.committed == [(0, 7)] and runner.stopping
