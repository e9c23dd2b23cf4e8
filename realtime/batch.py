"""The bookkeeping columns of a decoded batch as numpy: which records are new, too old, or repeats."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from realtime.aggregate import group
from realtime.resp import Elements


@dataclass
class SeenGroups:
    """Candidate rows grouped by tenant and hour received: the seen set each group's ids are checked against.

    Group g holds the candidates at positions order[bounds[g]:bounds[g + 1]]; `ids` are their event
    ids in that order.
    """

    order: np.ndarray
    bounds: list[int]
    tenant: list[int]
    hour: list[int]
    ids: Elements


def _numpy(col: pa.ChunkedArray) -> np.ndarray:
    return col.to_numpy()


def _encode(col: pa.ChunkedArray) -> tuple[np.ndarray, list[str]]:
    encoded = pc.dictionary_encode(col.combine_chunks())
    return encoded.indices.to_numpy(zero_copy_only=False).astype(np.int64), encoded.dictionary.to_pylist()


class EventBatch:
    """A decoded batch (analytics_core.columnar.SCHEMA plus _kafka_partition and _kafka_offset), rows in Kafka order."""

    def __init__(self, table: pa.Table) -> None:
        self.table = table
        self.tenant, self.tenants = _encode(table.column("tenant_id"))
        # Tenant ids with a brace cannot be a Redis Cluster hash tag (analytics_core.realtime_keys).
        braced = np.array([("{" in t or "}" in t) for t in self.tenants], dtype=bool)
        self.unkeyable = braced[self.tenant] if braced.any() else np.zeros(len(self.tenant), dtype=bool)
        self.partition = _numpy(table.column("_kafka_partition")).astype(np.int64)
        self.offset = _numpy(table.column("_kafka_offset")).astype(np.int64)
        self.micros = _numpy(table.column("timestamp").cast(pa.int64()))
        received = _numpy(table.column("received_at").cast(pa.int64())) // 1_000_000
        self.received_hour = received - received % 3600
        self.event, _ = _encode(table.column("event_id"))

    def after_stored(self, stored: dict[str, dict[int, int]]) -> np.ndarray:
        """Rows past their tenant's last applied offset of their partition (the others were applied before)."""
        last = np.full((len(self.tenants), int(self.partition.max()) + 1), -1, dtype=np.int64)
        for t, name in enumerate(self.tenants):
            for p, o in stored.get(name, {}).items():
                if p < last.shape[1]:
                    last[t, p] = o
        return self.offset > last[self.tenant, self.partition]

    def older_than(self, epoch_s: float) -> np.ndarray:
        return self.micros < int(epoch_s * 1_000_000)

    def first_per_event(self, rows: np.ndarray) -> np.ndarray:
        """The rows among `rows` that are the first of their (tenant, event id) in the batch, in batch order."""
        if not rows.size:
            return rows
        ids = self.event
        _, first = np.unique(self.tenant[rows] * (int(ids.max()) + 1) + ids[rows], return_index=True)
        return rows[np.sort(first)]

    def seen_groups(self, rows: np.ndarray) -> SeenGroups:
        """`rows` grouped by tenant and hour received."""
        if not rows.size:
            return SeenGroups(rows, [0], [], [], Elements.pack(pa.array([], pa.large_string())))
        hours, hour_code = np.unique(self.received_hour[rows], return_inverse=True)
        gid, _ = group([self.tenant[rows], hour_code], [len(self.tenants), len(hours)])
        order = np.argsort(gid, kind="stable")
        bounds = [0, *(np.flatnonzero(np.diff(gid[order])) + 1).tolist(), len(order)]
        firsts = order[bounds[:-1]]
        return SeenGroups(
            order=order,
            bounds=bounds,
            tenant=self.tenant[rows[firsts]].tolist(),
            hour=hours[hour_code[firsts]].tolist(),
            ids=Elements.pack(self.table.column("event_id").take(pa.array(rows[order])).combine_chunks()),
        )

    def per_tenant(self, rows: np.ndarray) -> dict[int, int]:
        """Tenant code → number of `rows`."""
        counts = np.bincount(self.tenant[rows], minlength=len(self.tenants))
        return {t: int(n) for t, n in enumerate(counts.tolist()) if n}

    def last_offsets(self, rows: np.ndarray) -> dict[int, dict[int, int]]:
        """Tenant code → partition → the largest offset among that tenant's `rows`."""
        if not rows.size:
            return {}
        tenant, partition = self.tenant[rows], self.partition[rows]
        width = int(partition.max()) + 1
        last = np.full(len(self.tenants) * width, -1, dtype=np.int64)
        np.maximum.at(last, tenant * width + partition, self.offset[rows])
        out: dict[int, dict[int, int]] = {}
        for cell in np.flatnonzero(last >= 0).tolist():
            out.setdefault(cell // width, {})[cell % width] = int(last[cell])
        return out
