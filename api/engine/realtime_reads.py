"""Reading the realtime layer's Redis keys (analytics_core.realtime_keys) past the warehouse watermark: RealtimeSource.

Additive metrics come from the minute counter hashes: one pipelined HGETALL (or HMGET, when the
fields can be named from the filters) per minute; fields are parsed and filtered in Python.
Unique metrics come from the minute sketches (analytics_core/hll.py bytes), one key per minute and
dimension-value combination: one pipelined GET of the distinct keys, merged here; the caller adds the
warehouse's sketches of the same bucket before estimating.
"""

from __future__ import annotations

import itertools
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import redis

from analytics_core import hll
from analytics_core.catalogue import ALL, Catalogue
from analytics_core.realtime_keys import SUM_SCALE, RealtimeKeys, counter_field, parse_field, uniques_sketch
from api.engine.validation import Condition

MAX_NAMED_FIELDS = 1000  # above this many fields, HGETALL beats naming them

Combo = tuple[str, ...]  # the values of every rollup dimension, ALL outside the dimension set


@dataclass
class Counters:
    minutes: dict[int, dict[tuple[str, Combo], float]]  # minute → (metric, combination) → value
    combos: set[Combo]  # every combination seen (or named by the filters), for the unique metrics' keys


class RealtimeSource:
    def __init__(self, conn: redis.Redis, keys: RealtimeKeys, catalogue: Catalogue) -> None:
        self.conn = conn
        self.keys = keys
        self.catalogue = catalogue
        self.dims = catalogue.rollup_dimensions

    def alive(self) -> bool:
        """Whether the realtime consumer has written (the key goes when Redis loses its data)."""
        return bool(self.conn.exists(self.keys.alive))

    def fixed_combos(self, dimension_set: Sequence[str], filters: Sequence[Condition]) -> list[Combo] | None:
        """The value combinations the eq/in filters allow, when they name every dimension of the set."""
        choices: list[Sequence[str]] = []
        count = 1
        for dim in self.dims:
            if dim not in dimension_set:
                choices.append((ALL,))
                continue
            allowed = [f.values for f in filters if f.dimension == dim and not f.negated]
            if not allowed:
                return None
            choices.append(sorted(set.intersection(*(set(v) for v in allowed))))
            count *= len(choices[-1])
        # Counted before the product is built: three `in` filters of 1,000 values are a billion combinations.
        return list(itertools.product(*choices)) if count <= MAX_NAMED_FIELDS else None

    def counters(
        self,
        tenant_id: str,
        minutes: Sequence[int],
        dimension_set: Sequence[str],
        metrics: Sequence[str],
        filters: Sequence[Condition],
    ) -> Counters:
        """The minutes' counters of the dimension set that pass the filters."""
        set_name = self.catalogue.dimension_set_name(tuple(dimension_set))
        combos = self.fixed_combos(dimension_set, filters)
        # Named fields only while there are few (HMGET of each minute lists them all); else HGETALL.
        fixed = combos is not None and len(combos) * len(metrics) <= MAX_NAMED_FIELDS
        named = [counter_field(m, set_name, c) for m in metrics for c in combos or ()] if fixed else []
        pipe = self.conn.pipeline(transaction=False)
        for minute in minutes:
            key = self.keys.counters(tenant_id, minute)
            if named:
                pipe.hmget(key, named)
            else:
                pipe.hgetall(key)
        replies = pipe.execute() if minutes else []
        wanted = set(metrics)
        position = {d: i for i, d in enumerate(self.dims)}
        checks = [(position[f.dimension], f) for f in filters]
        scale = {m: (SUM_SCALE if self.catalogue.metrics[m].kind == "sum" else 1) for m in metrics}
        result = Counters({}, set(combos or ()))
        # The same fields recur minute after minute: parse and judge each once per query.
        judged: dict[str | bytes, tuple[str, Combo] | None] = {}
        for minute, reply in zip(minutes, replies, strict=True):
            fields: Iterable[tuple[str | bytes, bytes | None]] = (
                zip(named, reply, strict=True) if named else reply.items()
            )
            cells: dict[tuple[str, Combo], float] = defaultdict(float)
            for field, raw in fields:
                if raw is None:
                    continue
                if field in judged:
                    cell = judged[field]
                else:
                    metric, field_set, values = parse_field(field)
                    keep = field_set == set_name and all(f.accepts(values[i]) for i, f in checks)
                    cell = judged[field] = (metric, values) if keep else None
                    if keep:
                        result.combos.add(values)
                if cell is not None and cell[0] in wanted:
                    cells[cell] += int(raw) / scale[cell[0]]
            result.minutes[minute] = cells
        return result

    def unique_sketches(
        self, tenant_id: str, set_name: str, requests: Sequence[tuple[str, Sequence[int], Sequence[Combo]]]
    ) -> list[hll.Sketch]:
        """Per (metric, minutes, combinations) request: the union of the minute sketches of those keys.

        The distinct keys are read with one pipelined GET; a missing key (no user of that combination
        in that minute) adds nothing.
        """
        wanted: list[list[str]] = []
        for metric, minutes, combos in requests:
            wanted.append(
                [
                    self.keys.uniques(tenant_id, "minute", minute, counter_field(metric, set_name, combo))
                    for minute in minutes
                    for combo in combos
                ]
            )
        names = list(dict.fromkeys(k for keys in wanted for k in keys))
        if not names:
            return [hll.Sketch.empty() for _ in requests]
        pipe = self.conn.pipeline(transaction=False)
        for name in names:
            pipe.get(name)
        found = {n: uniques_sketch(v, n) for n, v in zip(names, pipe.execute(), strict=True)}
        return [hll.merge(s for k in keys if (s := found[k]) is not None) for keys in wanted]
