"""Lays the Truth counters out as the JSON document written to --truth (layout in docs/GENERATOR.md).

`Counts` is what the layout reads of a generator.truth.Truth, so this module does not import it
(truth.py calls `report` from Truth.to_dict).
"""

from __future__ import annotations

from collections import defaultdict
from datetime import UTC, datetime
from typing import Any, Protocol

import numpy as np

from generator.block import EVENT_TYPES, INVALID_KINDS, INVALID_REASONS, PURCHASE
from generator.config import DAY_US, EXPERIMENT_KEY, PURCHASE_RATE, VARIANTS, GeneratorConfig
from generator.geo import COUNTRIES
from generator.population import DEVICES, Population

FORMAT_VERSION = 1
# The columns of Counts.counts, in order.
COUNTERS = ("sent", "valid", "human", "bot", "late", "duplicate", "invalid", *(f"invalid:{k}" for k in INVALID_KINDS))


class Counts(Protocol):
    """The counters of generator.truth.Truth the report lays out."""

    config: GeneratorConfig
    pop: Population
    cells: dict[tuple[int, int, int, int, int], list[int]]  # (day, tenant, country, device, type) → [events, cents]
    counts: np.ndarray  # per tenant, one column per COUNTERS name
    funnel_sessions: np.ndarray
    funnel_events: np.ndarray
    funnel_users: np.ndarray
    exposed: np.ndarray
    converted: np.ndarray

    def daily_active_users(self) -> dict[int, np.ndarray]: ...


def _day(day: int) -> str:
    return datetime.fromtimestamp(day * DAY_US / 1e6, UTC).date().isoformat()


def _money(cents: int) -> dict[str, Any]:
    return {"revenue": round(cents / 100, 2), "revenue_cents": cents}


def _metrics(events: int, cents: int, purchases: int) -> dict[str, Any]:
    return {"events": events, "purchases": purchases, **_money(cents)}


def report(truth: Counts) -> dict[str, Any]:
    return {
        "format_version": FORMAT_VERSION,
        "generator": _params(truth),
        "counts": _counts(truth),
        "days": _days(truth),
        "funnel": _funnel(truth),
        "experiments": {EXPERIMENT_KEY: _experiment(truth)},
    }


def _params(truth: Counts) -> dict[str, Any]:
    cfg = truth.config
    return {
        "seed": cfg.seed,
        "mode": "live" if cfg.live else "backfill",
        "start": datetime.fromtimestamp(cfg.start_us / 1e6, UTC).isoformat(),
        "days": None if cfg.live else cfg.days,
        "events_per_day": None if cfg.live else cfg.events_per_day,
        "rate": cfg.rate,
        "duration": cfg.duration if cfg.live else None,
        "tenants": {t: {"currency": c} for t, c in zip(truth.pop.tenant_ids, truth.pop.currencies, strict=True)},
        "human_users": truth.pop.n_humans,
        "bots": cfg.bots,
        "shares": {
            "bot": cfg.bot_share,
            "invalid": cfg.invalid_share,
            "late": cfg.late_share,
            "duplicate": cfg.duplicate_share,
        },
    }


def _counts_of(row: np.ndarray) -> dict[str, Any]:
    plain = {name: int(v) for name, v in zip(COUNTERS, row.tolist(), strict=True) if ":" not in name}
    by_kind = {k: int(row[COUNTERS.index(f"invalid:{k}")]) for k in INVALID_KINDS}
    by_reason: dict[str, int] = defaultdict(int)
    for kind, n in by_kind.items():
        by_reason[INVALID_REASONS[kind]] += n
    return {**plain, "invalid_by_kind": by_kind, "invalid_by_reason": dict(by_reason)}


def _counts(truth: Counts) -> dict[str, Any]:
    by_tenant = {t: _counts_of(truth.counts[i]) for i, t in enumerate(truth.pop.tenant_ids)}
    return {"total": _counts_of(truth.counts.sum(axis=0)), "by_tenant": by_tenant}


def _days(truth: Counts) -> dict[str, Any]:
    pop = truth.pop
    out: dict[str, Any] = {}
    for (day, t, c, d, etype), (events, cents) in sorted(truth.cells.items()):
        tenant = out.setdefault(_day(day), {}).setdefault(pop.tenant_ids[t], _empty_tenant_day())
        purchases = events if etype == PURCHASE else 0
        country, device = COUNTRIES[c], DEVICES[d]
        slots = (
            tenant,
            tenant["by_country"].setdefault(country, _metrics(0, 0, 0)),
            tenant["by_device"].setdefault(device, _metrics(0, 0, 0)),
            tenant["by_country_device"].setdefault(country, {}).setdefault(device, _metrics(0, 0, 0)),
        )
        for slot in slots:
            slot["events"] += events
            slot["purchases"] += purchases
            slot.update(_money(slot["revenue_cents"] + cents))
        tenant["events_by_type"][EVENT_TYPES[etype]] += events
    for day, per_tenant in truth.daily_active_users().items():
        for t, n in enumerate(per_tenant.tolist()):
            if n:
                out[_day(day)][pop.tenant_ids[t]]["active_users"] = n
    return out


def _empty_tenant_day() -> dict[str, Any]:
    return {
        **_metrics(0, 0, 0),
        "active_users": 0,
        "events_by_type": dict.fromkeys(EVENT_TYPES, 0),
        "by_country": {},
        "by_device": {},
        "by_country_device": {},
    }


def _funnel(truth: Counts) -> dict[str, Any]:
    pop = truth.pop
    out = {}
    for t, tenant in enumerate(pop.tenant_ids):
        users = (truth.funnel_users & (pop.tenant == t)).sum(axis=1)
        out[tenant] = {
            "steps": list(EVENT_TYPES),
            "sessions": truth.funnel_sessions[t].tolist(),
            "users": users.tolist(),
            "events": truth.funnel_events[t].tolist(),
        }
    return out


def _experiment(truth: Counts) -> dict[str, Any]:
    pop, lift = truth.pop, truth.config.experiment_lift

    def arm(mask: np.ndarray) -> dict[str, Any]:
        exposed, converted = int((truth.exposed & mask).sum()), int((truth.converted & mask).sum())
        return {
            "exposed_users": exposed,
            "converters": converted,
            "conversion_rate": converted / exposed if exposed else None,
        }

    variants = {v: arm(pop.variant == i) for i, v in enumerate(VARIANTS)}
    c, tr = variants["control"]["conversion_rate"], variants["treatment"]["conversion_rate"]
    return {
        "unit": "user",
        "exposure": "first checkout of the user; that event and the rest of its session carry experiment_key/variant",
        "metric": "exposed users with a purchase carrying the experiment tag / exposed users",
        "variants_split": dict.fromkeys(VARIANTS, 0.5),
        "true_rates": {"control": PURCHASE_RATE, "treatment": PURCHASE_RATE * (1 + lift)},
        "true_relative_lift": lift,
        "realised_relative_lift": tr / c - 1 if c and tr is not None else None,
        "variants": variants,
        "by_tenant": {
            tenant: {v: arm((pop.variant == i) & (pop.tenant == t)) for i, v in enumerate(VARIANTS)}
            for t, tenant in enumerate(pop.tenant_ids)
        },
    }
