"""Micro-batches close by size or by age and never take a record twice."""

from __future__ import annotations

from dataclasses import dataclass

from loaders.batching import Batch


@dataclass
class Rec:
    p: int
    o: int

    def value(self) -> bytes:
        return b""

    def partition(self) -> int:
        return self.p

    def offset(self) -> int:
        return self.o

    def key(self) -> None:
        return None


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_closes_by_size() -> None:
    batch = Batch(max_events=3, max_seconds=60, clock=Clock())
    batch.add([Rec(0, 0), Rec(0, 1)], {})
    assert not batch.due() and batch.room() == 1
    batch.add([Rec(1, 0)], {})
    assert batch.due() and batch.next_offsets == {0: 2, 1: 1}


def test_closes_by_age_counted_from_the_first_record() -> None:
    clock = Clock()
    batch = Batch(max_events=1000, max_seconds=2.0, clock=clock)
    clock.now += 10
    assert not batch.due()  # empty batches are never due
    batch.add([Rec(0, 0)], {})
    clock.now += 1.9
    assert not batch.due()
    clock.now += 0.2
    assert batch.due()


def test_skips_records_already_loaded_or_already_in_the_batch() -> None:
    batch = Batch(max_events=100, max_seconds=1)
    assert batch.add([Rec(0, 3), Rec(0, 5), Rec(0, 6)], {0: 5}) == 2
    assert batch.add([Rec(0, 6), Rec(0, 7)], {0: 5}) == 1
    assert [r.offset() for r in batch.records] == [5, 6, 7] and batch.next_offsets == {0: 8}


def test_drop_partitions_forgets_their_records() -> None:
    batch = Batch(max_events=100, max_seconds=1)
    batch.add([Rec(0, 0), Rec(1, 0), Rec(1, 1)], {})
    batch.drop_partitions([1])
    assert [r.partition() for r in batch.records] == [0] and batch.next_offsets == {0: 1}
    batch.clear()
    assert len(batch) == 0 and not batch.due()
