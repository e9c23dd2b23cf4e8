"""One decoded batch → Redis, exactly once: per tenant one MULTI/EXEC with the writes and the Kafka offsets.

Before the transactions, one pipelined read: whether Redis still holds our data (`alive`), and which
event ids were applied before (the `seen` sets of the hour received and the hour before); the writes
are planned while Redis answers. A tenant's transaction holds its counter increments, unique-user
sketch merges (realtime/hll.py), seen ids, the last offset applied per partition, and the PUBLISH of
its update, so a crash leaves each tenant either before or after the batch; records at or below the
stored offset are skipped when Kafka delivers them again. All tenants' transactions (each still its
own MULTI/EXEC) and the running totals go out in one write, and their replies are read (`settle`)
before the next batch.

A command Redis refuses while executing a transaction (HINCRBY of a counter that would pass 64 bits,
WRONGTYPE on a key something else wrote) is a data error of that tenant: Redis applied the rest of
the transaction, offsets included, so the batch is not applied again; the refusal is logged and
counted (`write_errors`, also in rt:stats), and the consumer goes on for every tenant.
"""

from __future__ import annotations

import itertools
import logging
import time
import uuid
from dataclasses import dataclass, fields
from typing import Any

import numpy as np
import pyarrow as pa
import redis

from analytics_core.catalogue import Catalogue
from analytics_core.realtime_keys import RealtimeKeys
from analytics_core.settings import Settings
from realtime.aggregate import Aggregator, Columns
from realtime.batch import EventBatch, SeenGroups
from realtime.hll import DENSE, EXACT, REPLACED, SketchMirror
from realtime.resp import Commands, Exchange
from realtime.writes import TenantWrites, UserKeys, plan_sketches, transaction

log = logging.getLogger(__name__)


@dataclass
class RealtimeStats:
    """Running totals of one consumer process; the same counts go to the rt:stats hash after every batch."""

    records: int = 0  # Kafka records handled, whatever became of them
    applied: int = 0
    duplicates: int = 0  # an event id already applied (earlier in the batch, or in the seen sets)
    too_old: int = 0  # event time before now - realtime_retention_s: left to the warehouse
    undecodable: int = 0
    out_of_range: int = 0  # outside analytics_core/bounds.py: skipped (the loader dead-letters them)
    write_errors: int = 0  # commands Redis refused inside a tenant's transaction (the rest was applied)
    replayed: int = 0  # delivered again after a restart: at or below the tenant's stored offset
    batches: int = 0
    rebuilds: int = 0
    seen_check_s: float = 0.0  # time spent looking event ids up in the seen sets (the dedupe's cost)

    def add(self, other: RealtimeStats) -> None:
        for f in fields(self):
            setattr(self, f.name, getattr(self, f.name) + getattr(other, f.name))


@dataclass
class Prepared:
    """A decoded batch with its bookkeeping and aggregation columns (None: nothing Redis can take)."""

    table: pa.Table
    events: EventBatch | None
    cols: Columns | None
    users: UserKeys | None
    unkeyable: int  # events of tenant ids with a brace, left out


@dataclass
class _Pending:
    """Writes sent to Redis whose replies are not read yet."""

    exchange: Exchange
    writes: dict[str, TenantWrites]
    blocks: list[tuple[Commands, int]]
    set_alive: bool


class RedisApplier:
    """Applies decoded batches to Redis and remembers what it needs to skip re-deliveries."""

    def __init__(self, settings: Settings, client: redis.Redis, catalogue: Catalogue) -> None:
        self.client = client
        self.keys = RealtimeKeys.from_settings(settings)
        self.retention_s = settings.realtime_retention_s
        self.aggregator = Aggregator(catalogue)
        self.mirror = SketchMirror()
        self.offsets: dict[str, dict[int, int]] = {}  # tenant → partition → last offset applied
        self.alive_token: bytes | None = None  # the value of rt:alive this process last saw or set
        self.rebuilding = False  # sought back after Redis lost its data; rt:alive is set after the next write
        self.write_errors = 0  # refused commands found by settle() and not taken by the caller yet
        self._pending: _Pending | None = None

    def forget(self) -> None:
        """Drop what this process remembers of Redis (after a rebalance, a reconnect or a rebuild)."""
        self.offsets.clear()
        self.mirror.clear()

    def went_back(self) -> bool:
        """Whether Redis holds an older offset than this process applied for some tenant (restored from a snapshot)."""
        tenants = list(self.offsets)
        pipe = self.client.pipeline(transaction=False)
        for t in tenants:
            pipe.hgetall(self.keys.offsets(t))
        for t, stored in zip(tenants, pipe.execute() if tenants else [], strict=True):
            now = {int(p): int(o) for p, o in stored.items()}
            if any(now.get(p, -1) < o for p, o in self.offsets[t].items()):
                return True
        return False

    def alive(self) -> bytes | None:
        """The current value of rt:alive (None: missing)."""
        value: Any = self.client.get(self.keys.alive)
        return value

    def lost(self, current: bytes | None) -> bool:
        """Whether Redis lost our data since this process last looked; adopts the current marker otherwise."""
        if current is None:
            return not self.rebuilding
        if self.alive_token is None or current == self.alive_token:
            self.alive_token, self.rebuilding = current, False
            return False
        return True  # another consumer rebuilt after a loss this process did not see

    def rebuilt(self, current: bytes | None) -> None:
        """The caller sought back to the start of the retention window: forget; set rt:alive after the next write."""
        self.forget()
        self.alive_token = current
        self.rebuilding = current is None

    def prepare(self, table: pa.Table) -> Prepared:
        """What can be computed of a batch before Redis is asked anything (thread-safe: the decoding thread runs it)."""
        batch = EventBatch(table) if table.num_rows else None
        unkeyable = int(batch.unkeyable.sum()) if batch is not None else 0
        if batch is not None and unkeyable:  # a tenant id Redis keys cannot carry: the warehouse gets it, not Redis
            table = table.filter(pa.array(~batch.unkeyable))
            batch = EventBatch(table) if table.num_rows else None
        if batch is None:
            return Prepared(table, None, None, None, unkeyable)
        cols = self.aggregator.columns(table.select(self.aggregator.columns_read))
        return Prepared(table, batch, cols, UserKeys(cols.users), unkeyable)

    def apply(self, batch: Prepared | pa.Table, now: float | None = None) -> RealtimeStats | None:
        """Send one batch's writes; None if Redis lost its data (nothing written: the caller must seek back).

        The writes are only sent: `settle()` reads Redis's replies (the caller decodes the next batch
        meanwhile); a batch's writes are settled before the next batch reads anything.
        """
        prepared = batch if isinstance(batch, Prepared) else self.prepare(batch)
        self.settle()
        now = time.time() if now is None else now
        stats = RealtimeStats(records=prepared.table.num_rows + prepared.unkeyable, batches=1)
        stats.undecodable = prepared.unkeyable
        self.count_undecodable(prepared.unkeyable)
        events = prepared.events
        if events is None:
            return stats
        self._load_offsets(events.tenants)
        fresh = events.after_stored(self.offsets)
        old = fresh & events.older_than(now - self.retention_s)
        rows = events.first_per_event(np.flatnonzero(fresh & ~old))
        stats.replayed = int((~fresh).sum())
        stats.too_old = int(old.sum())
        stats.duplicates = int((fresh & ~old).sum()) - len(rows)
        started = time.perf_counter()
        groups = events.seen_groups(rows)
        asked = self._ask(events, groups)
        stats.seen_check_s = time.perf_counter() - started
        try:
            # While Redis answers, plan as if no event was applied before (by far the common case).
            writes = self._plan(prepared, rows, groups, np.zeros(len(rows), dtype=bool))
            started = time.perf_counter()
            current, seen = self._answers(asked, groups, len(rows))
            stats.seen_check_s += time.perf_counter() - started
        finally:
            asked.abandon()  # a no-op once the answers are read
        if self.lost(current):
            self.rebuilt(current)
            return None
        if seen.any():
            stats.duplicates += int(seen.sum())
            writes = self._plan(prepared, rows[~seen], groups, seen)
        stats.applied = len(rows) - int(seen.sum())
        self._send(writes, stats, now, set_alive=current is None)
        return stats

    def _load_offsets(self, tenants: list[str]) -> None:
        unknown = [t for t in tenants if t not in self.offsets]
        if not unknown:
            return
        pipe = self.client.pipeline(transaction=False)
        for t in unknown:
            pipe.hgetall(self.keys.offsets(t))
        for t, stored in zip(unknown, pipe.execute(), strict=True):
            self.offsets[t] = {int(p): int(o) for p, o in stored.items()}

    def _ask(self, batch: EventBatch, groups: SeenGroups) -> Exchange:
        """Send the reads: rt:alive, and each candidate's event id in the seen sets of its hour and the hour before."""
        cmds = Commands(transaction=False)
        cmds.add("GET", self.keys.alive)
        ids = groups.ids
        for g, (s, e) in enumerate(itertools.pairwise(groups.bounds)):
            tenant = batch.tenants[groups.tenant[g]]
            for hour in (groups.hour[g], groups.hour[g] - 3600):
                cmds.add_with_elements("SMISMEMBER", self.keys.seen(tenant, hour), ids.slice(s, e), e - s)
        return Exchange(self.client, [cmds])

    def _answers(self, asked: Exchange, groups: SeenGroups, n: int) -> tuple[bytes | None, np.ndarray]:
        """rt:alive, and which of the n candidate rows were applied before."""
        current, *answers = asked.results()[0]
        seen = np.zeros(n, dtype=bool)
        for g, (s, e) in enumerate(itertools.pairwise(groups.bounds)):
            this_hour, hour_before = answers[2 * g], answers[2 * g + 1]
            seen[groups.order[s:e]] = np.array(this_hour, dtype=bool) | np.array(hour_before, dtype=bool)
        return current, seen

    def _plan(
        self, prepared: Prepared, rows: np.ndarray, groups: SeenGroups, seen: np.ndarray
    ) -> dict[str, TenantWrites]:
        """The writes of each tenant with events to apply (`rows`); `seen` marks the groups' ids applied before."""
        batch, cols, users = prepared.events, prepared.cols, prepared.users
        assert batch is not None and cols is not None and users is not None
        offsets = batch.last_offsets(rows)
        writes = {
            batch.tenants[t]: TenantWrites(events=n, offsets=offsets[t]) for t, n in batch.per_tenant(rows).items()
        }
        if not writes:
            return writes
        new = ~seen[groups.order]  # in group order
        ids = groups.ids if new.all() else groups.ids.filter(new)
        kept = np.concatenate([[0], np.cumsum(new)])
        for g, (s, e) in enumerate(itertools.pairwise(groups.bounds)):
            first, end = int(kept[s]), int(kept[e])
            if end > first:
                tenant = batch.tenants[groups.tenant[g]]
                writes[tenant].seen.append((groups.hour[g], ids.slice(first, end), end - first))
        if len(rows) != cols.n:  # else rows are all of them, in order
            cols = cols.subset(rows)
        for (t, minute), cell in self.aggregator.counters(prepared.table, cols).items():
            writes[t].counters[minute] = cell
        pairs = self.aggregator.unique_pairs(prepared.table, cols)
        plan_sketches(pairs, users, writes, self.keys, self.mirror, self.retention_s)
        return writes

    def _send(self, writes: dict[str, TenantWrites], stats: RealtimeStats, now: float, set_alive: bool) -> None:
        """One write to Redis: each tenant's transaction, then the running totals (and rt:alive)."""
        blocks = [transaction(self.keys, self.retention_s, t, w) for t, w in writes.items()]
        totals = Commands(transaction=False)
        for name in ("applied", "duplicates", "too_old", "replayed"):
            if amount := getattr(stats, name):
                totals.add("HINCRBY", self.keys.stats, name, amount)
        if stats.applied:
            totals.add("HSET", self.keys.stats, "last_applied_at", repr(now))
        if set_alive:
            totals.add("SET", self.keys.alive, uuid.uuid4().hex, "NX")
            totals.add("GET", self.keys.alive)
        self._pending = _Pending(Exchange(self.client, [b for b, _ in blocks] + [totals]), writes, blocks, set_alive)

    def settle(self) -> None:
        """Read the replies of the writes sent last; then remember what Redis now holds."""
        pending, self._pending = self._pending, None
        if pending is None:
            return
        *results, totals = pending.exchange.results()
        refused = 0
        replaced: list[str] = []
        for (t, w), (cmds, first), result in zip(pending.writes.items(), pending.blocks, results, strict=True):
            if cmds.errors:
                refused += len(cmds.errors)
                self._refused(t, cmds)
                continue
            self.offsets.setdefault(t, {}).update(w.offsets)
            for sk, kind in zip(w.sketches, result[first : first + len(w.sketches)], strict=True):
                self.mirror.written(sk.key, sk.hashes, dense=bool(kind & DENSE), exact=bool(kind & EXACT))
                if kind & REPLACED:
                    replaced.append(sk.key)
        if replaced:
            log.warning(
                "%d uniques key(s) held a value of another format (Redis's own HyperLogLog of an older version?), "
                "e.g. %s: replaced by this format's sketch; the users they held are lost until their buckets expire",
                len(replaced),
                replaced[0],
            )
        if pending.set_alive:
            self.alive_token, self.rebuilding = totals[-1], False
        if refused:
            self.write_errors += refused
            self.client.hincrby(self.keys.stats, "write_errors", refused)

    def _refused(self, tenant: str, cmds: Commands) -> None:
        """Log a transaction's refused commands. What this process remembers of the tenant is dropped (its
        stored offsets are read again; the sketch mirror learns nothing of the batch), so nothing relies on them."""
        at, error = cmds.errors[0]
        log.warning(
            "tenant %s: Redis refused %d of the %d commands of its batch, e.g. %s: %s; the others and the "
            "offsets were applied, the consumer goes on",
            tenant,
            len(cmds.errors),
            len(cmds),
            cmds.describe(at),
            error,
        )
        self.offsets.pop(tenant, None)

    def take_write_errors(self) -> int:
        """Refused commands found since the last call."""
        n, self.write_errors = self.write_errors, 0
        return n

    def abandon(self) -> None:
        """Give up on writes whose outcome is unknown (a failure): drop their connection, forget what Redis holds."""
        pending, self._pending = self._pending, None
        if pending is not None:
            pending.exchange.abandon()
            self.forget()

    def count_undecodable(self, n: int, out_of_range: int = 0) -> None:
        if n or out_of_range:
            pipe = self.client.pipeline(transaction=False)
            if n:
                pipe.hincrby(self.keys.stats, "undecodable", n)
            if out_of_range:
                pipe.hincrby(self.keys.stats, "out_of_range", out_of_range)
            pipe.execute()
