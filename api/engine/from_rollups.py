"""Strategy: a query answered from the rollups, plus the realtime Redis numbers past the watermark (Lambda merge).

Before the watermark W: rollups. Past it: Redis minute counters for additive metrics; for unique
metrics, each bucket reaching past W counts the union of its rollup sketches and the Redis minute
sketches from F on (one format, analytics_core/hll.py: a user in both is one user). Without Redis:
the warehouse's numbers so far, with a caveat. A Redis error at any point makes the engine answer
the query again without Redis. RollupPath does the merge; the SQL is sql/rollups.py's, the Redis
reads realtime_reads.py's.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pyarrow as pa

from analytics_core import hll, sketches
from analytics_core.catalogue import GRANULARITIES, Catalogue, Granularity
from analytics_core.realtime_keys import GRAIN_SECONDS
from api.engine.answer import OTHER, UNIQUE_RELATIVE_ERROR, Answer, Group
from api.engine.planner import Piece, Plan
from api.engine.realtime_reads import Combo, Counters, RealtimeSource
from api.engine.sql import raw_events, rollups
from api.engine.sql.rollups import RollupRead
from api.engine.validation import Query
from api.models import Source

Fetch = Callable[[str, list[Any]], list[tuple[Any, ...]]]
FetchArrow = Callable[[str, list[Any]], pa.Table]
SOURCES: dict[Granularity, Source] = {"minute": "rollup_minute", "hour": "rollup_hour", "day": "rollup_day"}


def _iso(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).isoformat()


@dataclass
class RollupPath:
    query: Query
    plan: Plan
    catalogue: Catalogue
    alias: str
    fetch: Fetch  # runs one SQL on the warehouse
    realtime: RealtimeSource | None
    now: float
    fetch_arrow: FetchArrow  # the same, answering an Arrow table (rollup rows with their sketches)
    in_memory: bool = False  # `alias` is the engine's in-memory replica of the rollups
    raw_alias: str = ""  # the lake, whose staged events answer the plan's raw pieces

    def __post_init__(self) -> None:
        kinds = {m: self.catalogue.metrics[m].kind for m in self.query.base_metrics}
        self.additive = tuple(m for m, k in kinds.items() if k in ("count", "sum"))
        self.unique = tuple(m for m, k in kinds.items() if k == "unique")
        assert self.plan.dimension_set is not None
        self.dimension_set = self.plan.dimension_set
        self.set_name = self.catalogue.dimension_set_name(self.dimension_set)
        position = {d: i for i, d in enumerate(self.catalogue.rollup_dimensions)}
        self.group_positions = [position[d] for d in self.query.group_by]

    def _single_valued(self) -> set[str]:
        return {f.dimension for f in self.query.filters if not f.negated and len(f.values) == 1}

    def needs_realtime(self) -> bool:
        return bool(self.plan.pieces_in("live")) or bool(self.unique and self.plan.unique_minutes)

    def answer(self, answer: Answer) -> Answer:
        rt = self.realtime
        live = self.plan.pieces_in("live")
        rt_unique: dict[int, list[int]] = dict(self.plan.unique_minutes) if rt and self.unique else {}
        pieces = [p for p in self.plan.pieces if p.grain != "raw"]
        raw = [p for p in self.plan.pieces if p.grain == "raw"]
        # Buckets whose unique counts unite rollup sketches with Redis's or with raw events' users (a bucket
        # wholly raw, without Redis, counts its users in SQL).
        mixed = {p.bucket for p in raw} & {p.bucket for p in pieces}
        united = set(rt_unique) | mixed if self.unique else set()
        read = RollupRead(
            tenant_id=self.query.tenant_id,
            set_name=self.set_name,
            group_by=self.query.group_by,
            filters=self.query.filters,
            additive=self.additive,
            unique=self.unique,
            additive_pieces=[p for p in pieces if p.stage != "live"] + ([] if rt else live),
            unique_pieces=[p for p in pieces if p.bucket not in united],
            sketch_pieces=[p for p in pieces if p.bucket in united],
            one_row_per_group=all(d in self.query.group_by or d in self._single_valued() for d in self.dimension_set),
            in_memory=self.in_memory,
        )
        counters = Counters({}, set())
        candidates: list[Combo] = []
        if rt:
            fixed = rt.fixed_combos(self.dimension_set, self.query.filters)
            end = min(self.query.buckets.end, int(self.now // 60 * 60) + 60)
            minutes = list(range(self.plan.realtime_floor, end, 60))
            if self.additive or (rt_unique and fixed is None):
                counters = rt.counters(
                    self.query.tenant_id, minutes, self.dimension_set, self.additive, self.query.filters
                )
            # Every combination with a minute sketch in these minutes has minute counters too (each event
            # counts in `traffic_events`), filtered as the query filters.
            if rt_unique:
                candidates = fixed if fixed is not None else sorted(counters.combos)
        top = self._top(read, counters, rt_unique, candidates, raw) if self.query.top_n else None
        kept: rollups.Kept = {}
        self._warehouse(read, top, answer, kept)
        if raw:
            self._raw_edges(raw, united, top, answer, kept)
        if rt:
            answer.realtime = any(counters.minutes.values())
            self._realtime_additive(counters, top, answer)
            answer.realtime |= self._realtime_unique(rt, rt_unique, candidates, top, kept)
        self._estimate(kept, answer)
        self._provenance(read, counters, rt_unique, raw, answer)
        return answer

    def _group(self, combo: Combo, top: set[Group] | None) -> Group:
        group = tuple(combo[i] for i in self.group_positions)
        return group if top is None or group in top else OTHER

    def _top(
        self,
        read: RollupRead,
        counters: Counters,
        rt_unique: dict[int, list[int]],
        candidates: list[Combo],
        raw: list[Piece],
    ) -> set[Group] | None:
        """The top-N groups by the first metric over the whole range; None when all groups fit."""
        first = self.catalogue.metrics[self.query.metrics[0]]
        names = [first.numerator, first.denominator] if first.kind == "ratio" else [self.query.metrics[0]]
        parts = [n for n in names if n]
        ranking = replace(
            read,
            additive=tuple(m for m in parts if m in self.additive),
            unique=tuple(m for m in parts if m in self.unique),
            unique_pieces=[*read.unique_pieces, *read.sketch_pieces],
            sketch_pieces=(),
        )
        totals: dict[Group, dict[str, float]] = defaultdict(lambda: defaultdict(float))
        sql = rollups.rollup_sql(ranking, self.alias, None)
        for _, group, found in rollups.cells(ranking, self.fetch_arrow(*sql) if sql else None):
            for metric, value in found.items():
                totals[group][metric] += value
        for cells in counters.minutes.values():
            for (metric, combo), value in cells.items():
                if metric in parts:
                    totals[self._group(combo, None)][metric] += value
        for _, group, edge in self._raw_cells(raw, tuple(parts), None, buckets=False):
            for metric, part in edge.items():  # a unique metric's users in the raw pieces: ranking only
                totals[group][metric] += part if isinstance(part, float) else part.estimate()
        if rt_unique and self.realtime and ranking.unique:
            # Ranking only: the distinct users of the Redis minutes added to the warehouse's (a user in both
            # counts twice).
            minutes = sorted({m for ms in rt_unique.values() for m in ms})
            by_group: dict[Group, list[Combo]] = defaultdict(list)
            for combo in candidates:
                by_group[self._group(combo, None)].append(combo)
            asks = [(m, g) for m in ranking.unique for g in by_group]
            unions = self.realtime.unique_sketches(
                self.query.tenant_id, self.set_name, [(m, minutes, by_group[g]) for m, g in asks]
            )
            for (metric, group), count in zip(asks, sketches.estimates(unions).tolist(), strict=True):
                totals[group][metric] += count

        def score(group: Group) -> float:
            cell = totals[group]
            if first.kind != "ratio":
                return cell.get(self.query.metrics[0], 0.0)
            denominator = cell.get(parts[1], 0.0)
            return cell.get(parts[0], 0.0) / denominator if denominator else -1.0

        assert self.query.top_n is not None
        if len(totals) <= self.query.top_n:
            return None
        return set(sorted(totals, key=lambda g: (-score(g), g))[: self.query.top_n])

    def _warehouse(self, read: RollupRead, top: set[Group] | None, answer: Answer, kept: rollups.Kept) -> None:
        """Add the rollups' numbers; the merged sketches of read.sketch_pieces' buckets go into `kept`."""
        sql = rollups.rollup_sql(read, self.alias, self.query.buckets.segments(), sorted(top) if top else None)
        found_sketches: rollups.Kept = {}
        for bucket, group, found in rollups.cells(read, self.fetch_arrow(*sql) if sql else None, found_sketches):
            if top is not None and None in group:  # folded by the SQL (NULL values): rollups hold no missing value
                group = OTHER
            for metric in self.unique:
                if not sketches.is_exact(found.get(metric, 0.0)):  # a dense sketch's estimate
                    answer.estimated(metric, UNIQUE_RELATIVE_ERROR)
            if found:
                answer.add_cell(bucket, group, found)
        for (bucket, group, metric), union in found_sketches.items():
            key = (bucket, OTHER if top is not None and None in group else group, metric)
            rollups.unite(kept, key, union)

    def _realtime_additive(self, counters: Counters, top: set[Group] | None, answer: Answer) -> None:
        index = self.query.buckets.index
        for minute, cells in counters.minutes.items():
            bucket = index(minute)
            for (metric, combo), value in cells.items():
                answer.add(bucket, self._group(combo, top), metric, value)

    def _raw_cells(
        self, raw: list[Piece], metrics: tuple[str, ...], top: set[Group] | None, buckets: bool = True
    ) -> list[tuple[int, Group, dict[str, float | hll.Sketch]]]:
        """(bucket, group, values) of the staged events of the raw pieces: sums, and a unique metric's users
        as a sketch. buckets False: the whole range as bucket 0 (ranking)."""
        if not raw or not metrics:
            return []
        intervals = rollups.runs(raw, "raw")
        segments = self.query.buckets.segments() if buckets else None
        ranked = sorted(top) if top else None
        sql, params = raw_events.raw_sql(
            self.query, self.catalogue, self.raw_alias, metrics, segments, ranked, intervals, hashes=True
        )
        width = len(self.query.group_by)
        out: list[tuple[int, Group, dict[str, float | hll.Sketch]]] = []
        for row in self.fetch(sql, params):
            group: Group = OTHER if row[1] else tuple(row[2 : 2 + width])
            values: dict[str, float | hll.Sketch] = {}
            for metric, value in zip(metrics, row[2 + width :], strict=True):
                if metric in self.unique:
                    values[metric] = hll.Sketch.from_hashes(np.asarray(value or [], dtype=np.uint64))
                else:
                    values[metric] = float(value)
            out.append((row[0], group, values))
        return out

    def _raw_edges(
        self, raw: list[Piece], united: set[int], top: set[Group] | None, answer: Answer, kept: rollups.Kept
    ) -> None:
        """Add the raw pieces' numbers: their users to the kept sketches of the united buckets; in the
        buckets read wholly from raw events (and not from Redis), counts of distinct users by SQL."""
        whole = [p for p in raw if p.bucket not in united]
        if whole:
            sql, params = raw_events.raw_sql(
                self.query,
                self.catalogue,
                self.raw_alias,
                self.query.base_metrics,
                self.query.buckets.segments(),
                sorted(top) if top else None,
                rollups.runs(whole, "raw"),
            )
            width = len(self.query.group_by)
            for row in self.fetch(sql, params):
                group: Group = OTHER if row[1] else tuple(row[2 : 2 + width])
                for metric, value in zip(self.query.base_metrics, row[2 + width :], strict=True):
                    if value:
                        answer.add(row[0], group, metric, float(value))
        parts = [p for p in raw if p.bucket in united]
        for bucket, group, found in self._raw_cells(parts, self.query.base_metrics, top):
            for metric, part in found.items():
                if isinstance(part, hll.Sketch):
                    key = (bucket, group, metric)
                    rollups.unite(kept, key, part)
                elif part:
                    answer.add(bucket, group, metric, part)

    def _realtime_unique(
        self,
        rt: RealtimeSource,
        rt_unique: dict[int, list[int]],
        candidates: list[Combo],
        top: set[Group] | None,
        kept: rollups.Kept,
    ) -> bool:
        """Unite the Redis minute sketches past the watermark into the kept sketches of their buckets, by
        group; whether Redis added a user."""
        by_group: dict[Group, list[Combo]] = defaultdict(list)
        for combo in candidates:
            by_group[self._group(combo, top)].append(combo)
        asks = [(b, g, m) for b in rt_unique for g in by_group for m in self.unique]
        found = rt.unique_sketches(
            self.query.tenant_id, self.set_name, [(m, rt_unique[b], by_group[g]) for b, g, m in asks]
        )
        for key, union in zip(asks, found, strict=True):
            rollups.unite(kept, key, union)
        return any(s.nbytes > 1 for s in found)  # not every sketch empty

    def _estimate(self, kept: rollups.Kept, answer: Answer) -> None:
        """The unique counts of the united buckets: each (bucket, group, metric)'s sketch estimated."""
        keys = list(kept)
        counts = sketches.estimates([kept[k] for k in keys]).tolist()
        for (bucket, group, metric), count in zip(keys, counts, strict=True):
            if count:
                answer.add(bucket, group, metric, count)
                if not sketches.is_exact(count):
                    answer.estimated(metric, UNIQUE_RELATIVE_ERROR)

    def _provenance(
        self,
        read: RollupRead,
        counters: Counters,
        rt_unique: dict[int, list[int]],
        raw: list[Piece],
        answer: Answer,
    ) -> None:
        query, plan = self.query, self.plan
        unique_pieces = [*read.unique_pieces, *read.sketch_pieces]
        if not (self.additive and self.unique) or set(read.additive_pieces) == set(unique_pieces):
            sets: list[tuple[list[str], Sequence[Piece]]] = [([], read.additive_pieces or unique_pieces)]
        else:
            sets = [(list(self.additive), read.additive_pieces), (list(self.unique), unique_pieces)]
        for metrics, pieces in sets:
            for grain in GRANULARITIES:
                for start, end in rollups.runs(pieces, grain):
                    source: Source = SOURCES[grain]
                    answer.part(query, source, start, end, (end - start) // GRAIN_SECONDS[grain], metrics)
        if self.additive and counters.minutes:
            first, last = min(counters.minutes), max(counters.minutes) + 60
            answer.part(query, "realtime", first, last, len(counters.minutes), list(self.additive))
        for minutes in rt_unique.values():
            answer.part(query, "realtime", minutes[0], minutes[-1] + 60, len(minutes), list(self.unique))
        for start, end in rollups.runs(raw, "raw"):
            touched = {p.bucket for p in raw if start <= p.start < end}
            answer.part(query, "raw", start, end, len(touched), [])
        answer.sort_parts()

        w, f = plan.realtime_from, plan.realtime_floor
        if plan.pieces_in("stale"):
            answer.caveats.append(
                f"from {_iso(w)} to {_iso(f)} the warehouse is behind and Redis no longer holds those minutes:"
                " numbers there miss events not yet in the warehouse"
            )
        if plan.pieces_in("live") and not self.realtime:
            answer.caveats.append(
                f"after {_iso(w)} (the watermark) the numbers are the warehouse's so far, without realtime events"
            )
