"""Micro-batches of Kafka records that close by size or by age, whichever comes first."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable

from analytics_core.decoding import Record


class Batch:
    """Records of one micro-batch and, per partition, the offset the next batch starts at."""

    def __init__(self, max_events: int, max_seconds: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.max_events = max_events
        self.max_seconds = max_seconds
        self._clock = clock
        self.records: list[Record] = []
        self.next_offsets: dict[int, int] = {}
        self.opened_at: float | None = None

    def __len__(self) -> int:
        return len(self.records)

    def add(self, records: Iterable[Record], expected: dict[int, int]) -> int:
        """Append records, skipping those before `expected[partition]` (already loaded); return how many were added."""
        before = len(self.records)
        append, next_offsets = self.records.append, self.next_offsets  # the loop runs per record
        for rec in records:
            part, offset = rec.partition() or 0, rec.offset() or 0
            start = next_offsets.get(part)
            if offset < (expected.get(part, 0) if start is None else start):
                continue  # a re-delivery after a seek: that offset is stored or already in this batch
            append(rec)
            next_offsets[part] = offset + 1
        added = len(self.records) - before
        if added and self.opened_at is None:
            self.opened_at = self._clock()
        return added

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
        """Forget the records of partitions this loader no longer owns."""
        gone = set(partitions)
        self.records = [r for r in self.records if (r.partition() or 0) not in gone]
        self.next_offsets = {p: o for p, o in self.next_offsets.items() if p not in gone}
        if not self.records:
            self.opened_at = None

    def clear(self) -> None:
        self.records, self.next_offsets, self.opened_at = [], {}, None
