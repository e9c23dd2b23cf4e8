"""The loader's micro-batch: records it has not loaded yet and, per partition, the offset the next batch starts at."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable

from analytics_core.consuming import MicroBatch
from analytics_core.decoding import Record


class Batch(MicroBatch):
    """Records of one micro-batch (closing by size or by age) and, per partition, the offset the next one starts at."""

    records: list[Record]

    def __init__(self, max_events: int, max_seconds: float, clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__(max_events, max_seconds, clock)
        self.next_offsets: dict[int, int] = {}

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
        if added:
            self._opened()
        return added

    def drop_partitions(self, partitions: Iterable[int]) -> None:
        gone = set(partitions)
        super().drop_partitions(gone)
        self.next_offsets = {p: o for p, o in self.next_offsets.items() if p not in gone}

    def clear(self) -> None:
        super().clear()
        self.next_offsets = {}
