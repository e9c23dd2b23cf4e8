"""The realtime consumer's batch aggregation against a plain per-event Python recomputation."""

from __future__ import annotations

import random
from typing import Any

import numpy as np
import pyarrow as pa
import pytest

from analytics_core.catalogue import ALL, Catalogue, get_catalogue
from analytics_core.columnar import SCHEMA
from analytics_core.realtime_keys import counter_field
from realtime.aggregate import Aggregator, group, group_sums, peak
from tests.realtime_expected import naive

HOUR_US = 3_600_000_000
START_US = 1_767_225_600_000_000  # 2026-01-01T00:00:00Z
EVENT_TYPES = ["page_view", "add_to_cart", "purchase", 'Order "Completed" \u2013 ü', "identify", "Order Completed"]


def make_events(n: int, seed: int) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    events = []
    for i in range(n):
        event_type = rng.choice(EVENT_TYPES)
        user = rng.randrange(60)
        has_id, has_anon = rng.random() < 0.5, rng.random() < 0.9
        revenue = None
        if event_type in ("purchase", "Order Completed", "add_to_cart") and rng.random() < 0.8:
            revenue = rng.choice([0.1, 0.2, 19.99, 1e-7, 123456.789, 0.0])
        elif rng.random() < 0.05:
            revenue = 5.5  # a revenue on a non-purchase: no metric may count it
        events.append(
            {
                "event_id": f"e{i}",
                "tenant_id": rng.choice(["t1", "t2", "t3"]),
                "message_type": "track",
                "event_type": event_type,
                "user_id": f"user-{user}" if has_id else None,
                "anonymous_id": f"anon-{user}" if has_anon else None,
                # Three days of minutes: many keys, spread over hours and days.
                "timestamp": START_US + rng.randrange(3 * 24) * HOUR_US + rng.randrange(HOUR_US),
                "received_at": START_US,
                "properties": "{}",
                "country": rng.choice(["US", "DE", None, "日本"]),
                "device": rng.choice(["desktop", "mobile", None]),
                "revenue": revenue,
                "is_bot": rng.random() < 0.15,
            }
        )
    return events


def as_table(events: list[dict[str, Any]], chunks: int = 1) -> pa.Table:
    if not events:
        return SCHEMA.empty_table()
    step = -(-len(events) // chunks)
    parts = [pa.Table.from_pylist(events[i : i + step], schema=SCHEMA) for i in range(0, len(events), step)]
    return pa.concat_tables(parts)


def test_counters_equal_the_per_event_recomputation() -> None:
    catalogue = get_catalogue()
    events = make_events(3_000, seed=1)
    expected, _ = naive(catalogue, events)
    got = Aggregator(catalogue).counters(as_table(events, chunks=3))
    assert got == expected
    # The data exercise every rule: bots, unknown dimensions, sums in micro-units, quoted event types.
    fields = {f for cell in got.values() for f in cell}
    assert any('"unknown"' in f for f in fields) and any("Completed" in f for f in fields)
    assert any(f.startswith('["traffic_events"') for f in fields) and any(f.startswith('["revenue"') for f in fields)


def test_a_tenants_own_purchase_mapping_counts_its_purchases_and_only_its() -> None:
    raw = get_catalogue().model_dump()
    raw["purchases"] = {"tenants": {"t2": {"event_types": ["add_to_cart"]}}}
    catalogue = Catalogue.model_validate(raw)
    events = make_events(3_000, seed=4)
    expected, expected_users = naive(catalogue, events)
    aggregator = Aggregator(catalogue)
    got = aggregator.counters(as_table(events, chunks=2))
    assert got == expected
    assert aggregator.unique_pairs(as_table(events)).as_sets() == expected_users

    def total(tenant: str, field: str) -> int:
        return sum(cell.get(field, 0) for (t, _), cell in got.items() if t == tenant)

    purchases = counter_field("purchases", "", (ALL,) * len(catalogue.rollup_dimensions))

    def humans(tenant: str, types: set[str]) -> int:
        return sum(1 for e in events if e["tenant_id"] == tenant and not e["is_bot"] and e["event_type"] in types)

    # Counted straight from the events, apart from the reference: t2's purchases are its carts.
    assert total("t1", purchases) == humans("t1", {"purchase", "Order Completed"}) > 0
    assert total("t2", purchases) == humans("t2", {"add_to_cart"}) > 0


def test_unique_pairs_hold_exactly_the_users_of_each_hll() -> None:
    catalogue = get_catalogue()
    events = make_events(2_000, seed=2)
    _, expected = naive(catalogue, events)
    pairs = Aggregator(catalogue).unique_pairs(as_table(events, chunks=2))
    assert pairs.as_sets() == expected
    assert len(pairs.keys) == len(set(pairs.keys))  # one number per HLL key


def test_an_empty_batch_and_a_batch_of_bots_write_nothing() -> None:
    catalogue = get_catalogue()
    agg = Aggregator(catalogue)
    assert agg.counters(as_table([])) == {}
    assert agg.unique_pairs(as_table([])).keys == []
    bots = [{**e, "is_bot": True} for e in make_events(50, seed=3)]
    fields = {f for cell in agg.counters(as_table(bots)).values() for f in cell}
    assert fields and all(f.startswith('["traffic_events"') for f in fields)
    assert agg.unique_pairs(as_table(bots)).keys == []


def test_group_numbers_rows_by_their_combination_dense_or_sorted() -> None:
    rng = random.Random(4)
    a = [rng.randrange(5) for _ in range(500)]
    b = [rng.randrange(3_000_000) for _ in range(500)]  # a combination space above the dense limit
    for sizes in ([5, 7], [5, 3_000_000]):
        parts = [np.array(a), np.array(b if sizes[1] > 7 else [x % 7 for x in b])]
        gid, rep = group(parts, sizes)
        combos = list(zip(parts[0].tolist(), parts[1].tolist(), strict=True))
        assert len(rep) == len(set(combos))
        for i, combo in enumerate(combos):
            assert combos[rep[gid[i]]] == combo


def test_sums_stay_exact_past_two_to_the_53_and_past_64_bits() -> None:
    """Large revenues in one cell: the float64 bincount would round; the sums equal Python's integer sums."""
    catalogue = get_catalogue()
    base = make_events(1, seed=3)[0] | {"event_type": "purchase", "is_bot": False, "tenant_id": "t1"}
    base["timestamp"] = START_US + 5 * 60_000_000
    # 3,000 x (1e9 + 1e-6): 3e18 + 3,000 micro-units, within int64 but far past 2**53 (float64 steps of 512).
    near = [base | {"event_id": f"n{i}", "revenue": 1e9 + 1e-6} for i in range(3_000)]
    # 2,000 x 9,007,199,254.74 (the exact ceiling of bounds.py): 1.8e19 micro-units, past int64.
    huge = [base | {"event_id": f"h{i}", "revenue": 9_007_199_254.74, "tenant_id": "t2"} for i in range(2_000)]
    mixed = [base | {"event_id": f"m{i}", "revenue": (-1) ** i * (i + 0.123457), "tenant_id": "t3"} for i in range(999)]
    events = near + huge + mixed
    expected, _ = naive(catalogue, events)
    got = Aggregator(catalogue).counters(as_table(events, chunks=2))
    assert got == expected
    total = '["revenue","",' + ",".join(['"*"'] * len(catalogue.rollup_dimensions)) + "]"
    minute = base["timestamp"] // 1_000_000
    assert got[("t1", minute)][total] == 3_000 * 1_000_000_000_000_001  # round((1e9 + 1e-6) * 1e6), exactly
    assert float(3_000 * 1_000_000_000_000_001) != 3_000 * 1_000_000_000_000_001  # a float could not say it
    assert got[("t2", minute)][total] == 2_000 * 9_007_199_254_740_000 > 2**63  # a Python int past int64


def test_group_sums_are_exact_for_any_int64_values() -> None:
    rng = np.random.default_rng(5)
    for n, groups, lo, hi in [(5_000, 7, -(2**62), 2**62), (3_000, 1, 2**62, 2**63 - 1), (10, 3, -5, 5)]:
        values = rng.integers(lo, hi, n, dtype=np.int64)
        gid = rng.integers(0, groups, n)
        pairs = list(zip(values.tolist(), gid.tolist(), strict=True))
        want = [sum(v for v, g in pairs if g == k) for k in range(groups)]
        assert [int(x) for x in group_sums(gid, values, groups)] == want
    edge = np.array([-(2**63), -(2**63), 2**63 - 1], dtype=np.int64)
    assert peak(edge) == 2**63
    assert [int(x) for x in group_sums(np.array([0, 0, 1]), edge, 2)] == [-(2**64), 2**63 - 1]


def test_values_beyond_the_bounds_never_wrap_silently() -> None:
    catalogue = get_catalogue()
    event = make_events(1, seed=4)[0] | {"event_type": "purchase", "revenue": 1e308}
    with pytest.raises(ValueError, match="bounds"):
        Aggregator(catalogue).counters(as_table([event]))
