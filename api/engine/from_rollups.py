"""Strategy: a query answered from the rollups, plus the realtime Redis numbers past the watermark (Lambda merge).

Before the watermark W: rollups. Past it: Redis minute counters for additive metrics; for unique
metrics, Redis HyperLogLogs over each whole bucket that reaches past W when Redis still holds every
key of it, else the warehouse alone with a caveat. Without Redis: the warehouse's numbers so far,
with a caveat. A Redis error at any point makes the engine answer the query again without Redis.
RollupPath does the merge; the SQL is sql/rollups.py's, the Redis reads realtime_reads.py's.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any, cast

import pyarrow as pa

from analytics_core.catalogue import ALL, GRANULARITIES, Catalogue, Granularity
from analytics_core.realtime_keys import GRAIN_SECONDS
from api.engine.answer import OTHER, Answer, Group
from api.engine.planner import Piece, Plan
from api.engine.realtime_reads import Combo, Counters, RealtimeSource, Tile
from api.engine.sql import rollups
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
        return bool(self.plan.pieces_in("live")) or bool(self.unique and self.plan.unique_tiles)

    def answer(self, answer: Answer) -> Answer:
        rt = self.realtime
        live = self.plan.pieces_in("live")
        rt_unique: dict[int, list[Tile]] = dict(self.plan.unique_tiles) if rt and self.unique else {}
        read = RollupRead(
            tenant_id=self.query.tenant_id,
            set_name=self.set_name,
            group_by=self.query.group_by,
            filters=self.query.filters,
            additive=self.additive,
            unique=self.unique,
            additive_pieces=self.plan.pieces_in("complete", "stale") + ([] if rt else live),
            unique_pieces=[p for p in self.plan.pieces if p.bucket not in rt_unique],
            one_row_per_group=all(d in self.query.group_by or d in self._single_valued() for d in self.dimension_set),
            in_memory=self.in_memory,
        )
        counters = Counters({}, set())
        candidates: list[Combo] = []
        harvest = False
        if rt:
            fixed = rt.fixed_combos(self.dimension_set, self.query.filters)
            end = min(self.query.buckets.end, int(self.now // 60 * 60) + 60)
            minutes = list(range(self.plan.realtime_floor, end, 60))
            if self.additive or (rt_unique and fixed is None):
                counters = rt.counters(
                    self.query.tenant_id, minutes, self.dimension_set, self.additive, self.query.filters
                )
            # Which value combinations have unique users in the Redis-counted buckets: the main SQL
            # finds those of the warehouse's part of them when its groups are the combinations.
            harvest = bool(rt_unique) and fixed is None and read.one_row_per_group and not self.query.top_n
            if harvest:
                probe = [p for p in self.plan.pieces_in("complete", "stale") if p.bucket in rt_unique]
                read = replace(read, probe_pieces=probe)
            elif rt_unique:
                candidates = fixed if fixed is not None else self._candidates(counters, rt_unique)
        top = self._top(read, counters, rt_unique, candidates) if self.query.top_n else None
        harvested = self._warehouse(read, top, answer, set(rt_unique) if harvest else set())
        if harvest:
            candidates = sorted(counters.combos | harvested)
        if rt:
            answer.realtime = any(counters.minutes.values()) or any(rt_unique.values())
            self._realtime_additive(counters, top, answer)
            self._realtime_unique(rt, rt_unique, candidates, top, answer)
        self._provenance(read, counters, rt_unique, answer)
        return answer

    def _group(self, combo: Combo, top: set[Group] | None) -> Group:
        group = tuple(combo[i] for i in self.group_positions)
        return group if top is None or group in top else OTHER

    def _candidates(self, counters: Counters, rt_unique: dict[int, list[Tile]]) -> list[Combo]:
        """The value combinations whose HLL keys the realtime unique counts must union.

        Those seen in the minute counters past the watermark, and in the rollups of the same buckets
        before it; filtered as the query filters.
        """
        seen = set(counters.combos)
        pieces = [p for p in self.plan.pieces_in("complete", "stale") if p.bucket in rt_unique]
        dims = [d for d in self.catalogue.rollup_dimensions if d in self.dimension_set]
        sql = rollups.combos_sql(self.query.tenant_id, self.set_name, dims, pieces, self.alias, self.in_memory)
        if sql:
            index = {d: i for i, d in enumerate(dims)}
            for values in self.fetch(*sql):
                seen.add(tuple(values[index[d]] if d in index else ALL for d in self.catalogue.rollup_dimensions))
        position = {d: i for i, d in enumerate(self.catalogue.rollup_dimensions)}
        return sorted(c for c in seen if all(f.accepts(c[position[f.dimension]]) for f in self.query.filters))

    def _top(
        self, read: RollupRead, counters: Counters, rt_unique: dict[int, list[Tile]], candidates: list[Combo]
    ) -> set[Group] | None:
        """The top-N groups by the first metric over the whole range; None when all groups fit."""
        first = self.catalogue.metrics[self.query.metrics[0]]
        names = [first.numerator, first.denominator] if first.kind == "ratio" else [self.query.metrics[0]]
        parts = [n for n in names if n]
        ranking = replace(
            read,
            additive=tuple(m for m in parts if m in self.additive),
            unique=tuple(m for m in parts if m in self.unique),
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
        if rt_unique and self.realtime:
            # Ranking only: distinct users over the realtime buckets added to the warehouse's.
            tiles = [t for keys in rt_unique.values() for t in keys]
            by_group: dict[Group, list[Combo]] = defaultdict(list)
            for combo in candidates:
                by_group[self._group(combo, None)].append(combo)
            asks = [(m, g) for m in ranking.unique for g in by_group]
            counts = self.realtime.unique_counts(
                self.query.tenant_id, self.set_name, [(m, tiles, by_group[g]) for m, g in asks]
            )
            for (metric, group), count in zip(asks, counts, strict=True):
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

    def _warehouse(self, read: RollupRead, top: set[Group] | None, answer: Answer, probed: set[int]) -> set[Combo]:
        """Add the rollups' numbers; the combinations of the probed buckets' unique rows come back."""
        sql = rollups.rollup_sql(read, self.alias, self.query.buckets.segments(), sorted(top) if top else None)
        combos: set[Combo] = set()
        single = {f.dimension: f.values[0] for f in self.query.filters if not f.negated and len(f.values) == 1}
        grouped = {d: i for i, d in enumerate(self.query.group_by)}
        for bucket, group, found in rollups.cells(read, self.fetch_arrow(*sql) if sql else None):
            if top is not None and None in group:  # folded by the SQL (NULL values): rollups hold no missing value
                group = OTHER
            if bucket in probed and any(metric in self.unique for metric in found):
                combos.add(  # probed only without top_n: no group is OTHER here
                    cast(
                        Combo,
                        tuple(
                            group[grouped[d]]
                            if d in grouped
                            else single.get(d, ALL)
                            if d in self.dimension_set
                            else ALL
                            for d in self.catalogue.rollup_dimensions
                        ),
                    )
                )
                found = {metric: value for metric, value in found.items() if metric not in self.unique}
            if found:
                answer.add_cell(bucket, group, found)
        answer.approximate.update(self.unique)
        return combos

    def _realtime_additive(self, counters: Counters, top: set[Group] | None, answer: Answer) -> None:
        index = self.query.buckets.index
        for minute, cells in counters.minutes.items():
            bucket = index(minute)
            for (metric, combo), value in cells.items():
                answer.add(bucket, self._group(combo, top), metric, value)

    def _realtime_unique(
        self,
        rt: RealtimeSource,
        rt_unique: dict[int, list[Tile]],
        candidates: list[Combo],
        top: set[Group] | None,
        answer: Answer,
    ) -> None:
        by_group: dict[Group, list[Combo]] = defaultdict(list)
        for combo in candidates:
            by_group[self._group(combo, top)].append(combo)
        asks = [(b, g, m) for b in rt_unique for g in by_group for m in self.unique]
        counts = rt.unique_counts(
            self.query.tenant_id, self.set_name, [(m, rt_unique[b], by_group[g]) for b, g, m in asks]
        )
        for (bucket, group, metric), count in zip(asks, counts, strict=True):
            if count:
                answer.add(bucket, group, metric, float(count))

    def _provenance(
        self, read: RollupRead, counters: Counters, rt_unique: dict[int, list[Tile]], answer: Answer
    ) -> None:
        query, plan = self.query, self.plan
        if not (self.additive and self.unique) or set(read.additive_pieces) == set(read.unique_pieces):
            sets: list[tuple[list[str], Sequence[Piece]]] = [([], read.additive_pieces or read.unique_pieces)]
        else:
            sets = [(list(self.additive), read.additive_pieces), (list(self.unique), read.unique_pieces)]
        for metrics, pieces in sets:
            for grain in GRANULARITIES:
                for start, end in rollups.runs(pieces, grain):
                    source: Source = SOURCES[grain]
                    answer.part(query, source, start, end, (end - start) // GRAIN_SECONDS[grain], metrics)
        if self.additive and counters.minutes:
            first, last = min(counters.minutes), max(counters.minutes) + 60
            answer.part(query, "realtime", first, last, len(counters.minutes), list(self.additive))
        for bucket, tiles in rt_unique.items():
            start, end = query.buckets.bounds[bucket], query.buckets.bounds[bucket + 1]
            if tiles:  # a bucket wholly in the future has no keys yet
                answer.part(query, "realtime", start, end, len(tiles), list(self.unique))
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
        late = [b for b in plan.late_buckets if b not in rt_unique]
        if self.unique and late:
            since = query.buckets.labels()[late[0]].isoformat()
            why = "Redis no longer holds every HyperLogLog of those buckets" if self.realtime else "no realtime layer"
            answer.caveats.append(f"unique counts of the buckets from {since} on miss events after {_iso(w)} ({why})")
