"""Ground truth: what the pipeline must report, accumulated over the records actually sent."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from generator.block import CHECKOUT, DUPLICATE, EVENT_TYPES, FIRST_INVALID, INVALID_KINDS, PURCHASE, VALID, EventBlock
from generator.config import DAY_US, GeneratorConfig
from generator.geo import COUNTRIES
from generator.population import DEVICES, Population
from generator.truth_report import COUNTERS, report

# Late events arrive at most LATE_LAG_MAX (20 h) plus a session after they happen: two days is safe.
SETTLE_AFTER_DAYS = 2


def _unpack(key: int, tenants: int) -> tuple[int, int, int, int, int]:
    key, etype = divmod(key, len(EVENT_TYPES))
    key, device = divmod(key, len(DEVICES))
    key, country = divmod(key, len(COUNTRIES))
    day, tenant = divmod(key, tenants)
    return day, tenant, country, device, etype


class Truth:
    """Vectorised counters over emitted EventBlocks; `to_dict` lays them out (see docs/GENERATOR.md)."""

    def __init__(self, config: GeneratorConfig, pop: Population) -> None:
        self.config, self.pop = config, pop
        t = config.tenants
        # (day, tenant, country, device, event type) → [events, revenue cents]
        self.cells: dict[tuple[int, int, int, int, int], list[int]] = defaultdict(lambda: [0, 0])
        self.active: dict[int, np.ndarray] = {}  # day → which users were active, until the day is settled
        self.active_users: dict[int, np.ndarray] = {}  # settled day → active users per tenant
        self.counts = np.zeros((t, len(COUNTERS)), dtype=np.int64)
        self.funnel_sessions = np.zeros((t, len(EVENT_TYPES)), dtype=np.int64)
        self.funnel_events = np.zeros((t, len(EVENT_TYPES)), dtype=np.int64)
        self.funnel_users = np.zeros((len(EVENT_TYPES), pop.n_users), dtype=bool)
        self.exposed = np.zeros(pop.n_users, dtype=bool)
        self.converted = np.zeros(pop.n_users, dtype=bool)

    def add(self, block: EventBlock) -> None:
        if not len(block):
            return
        pop = self.pop
        tenant = pop.tenant[block.user]
        bot = block.user >= pop.n_humans
        valid = block.kind == VALID
        self._count(tenant, "sent", np.ones(len(block), dtype=bool))
        self._count(tenant, "valid", valid)
        self._count(tenant, "human", valid & ~bot)
        self._count(tenant, "bot", valid & bot)
        self._count(tenant, "late", valid & block.late)
        self._count(tenant, "duplicate", block.kind == DUPLICATE)
        self._count(tenant, "invalid", block.kind >= FIRST_INVALID)
        for i, kind in enumerate(INVALID_KINDS):
            self._count(tenant, f"invalid:{kind}", block.kind == FIRST_INVALID + i)
        # Business metrics: first sends of valid human events only.
        biz = block.take(valid & ~bot)
        self._cells(biz)
        # Sessions already running when a live run began lack their first steps: no funnel or experiment.
        self._funnel_and_experiment(biz.take(~biz.partial))
        self._settle(int(block.received_at.max()) // DAY_US - SETTLE_AFTER_DAYS)

    def _settle(self, before_day: int) -> None:
        """Reduce the user bitmaps of days no event can reach any more to counts, bounding memory."""
        for day in [d for d in self.active if d < before_day]:
            self.active_users[day] = np.bincount(self.pop.tenant[self.active.pop(day)], minlength=self.config.tenants)

    def daily_active_users(self) -> dict[int, np.ndarray]:
        """Day → distinct active human users per tenant."""
        self._settle(np.iinfo(np.int64).max)
        return dict(self.active_users)

    def _count(self, tenant: np.ndarray, name: str, mask: np.ndarray) -> None:
        self.counts[:, COUNTERS.index(name)] += np.bincount(tenant[mask], minlength=self.config.tenants)

    def _cells(self, b: EventBlock) -> None:
        pop = self.pop
        day = b.timestamp // DAY_US
        revenue = np.where(b.event_type == PURCHASE, b.amount, 0)
        # One int64 per cell (mixed radix) so np.unique sorts a flat array rather than rows.
        key = day
        for column, radix in (
            (pop.tenant[b.user], self.config.tenants),
            (pop.country[b.user], len(COUNTRIES)),
            (pop.device[b.user], len(DEVICES)),
            (b.event_type, len(EVENT_TYPES)),
        ):
            key = key * radix + column
        cells, inverse = np.unique(key, return_inverse=True)
        events = np.bincount(inverse, minlength=len(cells))
        cents = np.bincount(inverse, weights=revenue, minlength=len(cells))  # float64: exact below 2**53 cents
        for cell, n, c in zip(cells.tolist(), events.tolist(), np.rint(cents).astype(np.int64).tolist(), strict=True):
            acc = self.cells[_unpack(cell, self.config.tenants)]
            acc[0] += n
            acc[1] += c
        for d in np.unique(day).tolist():
            if d in self.active_users:
                raise RuntimeError(f"an event of settled day {d} arrived; raise SETTLE_AFTER_DAYS")
            if d not in self.active:
                self.active[d] = np.zeros(pop.n_users, dtype=bool)
            self.active[d][b.user[day == d]] = True

    def _funnel_and_experiment(self, b: EventBlock) -> None:
        tenant = self.pop.tenant[b.user]
        t = self.config.tenants
        for step in range(len(EVENT_TYPES)):
            at_step = b.event_type == step
            # A session reaches page_view with its landing page; later steps occur at most once per session.
            reached = b.landing if step == 0 else at_step
            self.funnel_sessions[:, step] += np.bincount(tenant[reached], minlength=t)
            self.funnel_events[:, step] += np.bincount(tenant[at_step], minlength=t)
            self.funnel_users[step, b.user[reached]] = True
        self.exposed[b.user[b.tagged & (b.event_type == CHECKOUT)]] = True
        self.converted[b.user[b.tagged & (b.event_type == PURCHASE)]] = True

    def to_dict(self) -> dict[str, Any]:
        return report(self)

    def write(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(orjson.dumps(self.to_dict(), option=orjson.OPT_SORT_KEYS | orjson.OPT_INDENT_2) + b"\n")
