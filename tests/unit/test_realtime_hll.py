"""The realtime layer's sketch mirror and per-key planning, and bulk RESP packing, against plain Python.

The merge script itself runs against the real Redis in tests/integration/test_redis.py.
"""

from __future__ import annotations

import random

import hiredis
import numpy as np
import pyarrow as pa

from analytics_core import hll
from analytics_core.catalogue import get_catalogue
from analytics_core.columnar import SCHEMA
from analytics_core.hll import Sketch
from analytics_core.realtime_keys import RealtimeKeys
from realtime.aggregate import Aggregator, UniquePairs
from realtime.hll import MERGE_SCRIPT, MERGE_SHA, SketchMirror, is_foreign, packed_registers
from realtime.resp import Elements
from realtime.writes import TenantWrites, UserKeys, plan_sketches, transaction
from tests.realtime_expected import naive

STRINGS = ["", "a", "user-1", "anon-0000abcd-tenant_1", "\u00fc\u20ac\u65e5", "x" * 7, "y" * 8, "z" * 9, "w" * 71]


def test_user_keys_are_hashed_with_the_sketch_format_hash() -> None:
    users = pa.array(STRINGS).slice(2)  # an offset into the buffers, as Arrow slices have
    assert UserKeys(users).hashes.tolist() == hll.hash_keys(STRINGS[2:]).tolist()
    assert len(UserKeys(pa.array([], pa.string())).hashes) == 0


def test_the_mirror_rules_out_only_hashes_that_cannot_change_a_key() -> None:
    rng = np.random.default_rng(3)
    mirror = SketchMirror()
    pool = rng.integers(0, 2**64, 30_000, dtype=np.uint64, endpoint=False)
    redis_holds: list[np.ndarray] = []  # what Redis would hold: every hash ever sent
    for round_ in range(12):
        batch = np.unique(rng.choice(pool[: 2_000 * (round_ + 1)], 3_000))
        new = mirror.new_hashes("k", batch)
        unseen = int((~np.isin(batch, np.concatenate(redis_holds))).sum()) if redis_holds else len(batch)
        assert set(new.tolist()) <= set(batch.tolist())
        before = Sketch.from_hashes(np.concatenate(redis_holds)) if redis_holds else Sketch.empty()
        # What is left out changes nothing: the sketch with only the new hashes equals the one with all.
        with_all = Sketch.from_hashes(np.concatenate([*redis_holds, batch]))
        with_new = Sketch.from_hashes(np.concatenate([*redis_holds, new]))
        assert with_new == with_all
        redis_holds.append(new)
        mirror.written("k", new, dense=not with_all.is_sparse)
        if before.is_sparse and redis_holds[:-1]:
            assert not (set(new.tolist()) & set(np.concatenate(redis_holds[:-1]).tolist()))  # nothing sent twice
    # Dense by now: not even every hash never sent before matters (its rank is not above its register).
    assert not with_all.is_sparse and len(new) < unseen


def test_the_mirror_forgets_the_least_recently_used_keys_within_its_memory() -> None:
    mirror = SketchMirror(max_bytes=3 * 8 * 100)
    for name in ("a", "b", "c"):
        mirror.written(name, np.arange(100, dtype=np.uint64), dense=False)
    mirror.new_hashes("a", np.arange(1, dtype=np.uint64))  # b is now the least recently used
    mirror.written("d", np.arange(100, dtype=np.uint64), dense=False)
    assert len(mirror) == 3 and mirror.nbytes <= 3 * 8 * 100
    assert len(mirror.new_hashes("b", np.arange(100, dtype=np.uint64))) == 100  # forgotten: all sent again
    assert len(mirror.new_hashes("a", np.arange(100, dtype=np.uint64))) == 0
    mirror.clear()
    assert len(mirror) == 0 and mirror.nbytes == 0


def test_a_batch_sends_each_key_its_distinct_hashes_once_in_one_evalsha_after_loading_the_script() -> None:
    keys = RealtimeKeys("p:")
    users = pa.array([f"u{i}" for i in range(50)])
    rng = random.Random(4)
    names = [("t1", 60, "f1"), ("t1", 0, "f1"), ("t2", 0, "f2")]
    key = np.array([rng.randrange(3) for _ in range(400)])
    user = np.array([rng.randrange(50) for _ in range(400)])
    pairs = UniquePairs(names, key, user, users)
    hashes = UserKeys(users)
    writes = {"t1": TenantWrites(events=1, offsets={0: 5}), "t2": TenantWrites(events=1, offsets={1: 7})}
    mirror = SketchMirror()
    plan_sketches(pairs, hashes, writes, keys, mirror, 3600)
    got = {sk.key: sk for w in writes.values() for sk in w.sketches}
    for k, (tenant, minute, f) in enumerate(names):
        sk = got[keys.uniques(tenant, "minute", minute, f)]
        assert sorted(sk.hashes.tolist()) == sorted({int(hashes.hashes[u]) for u in user[key == k]})
        assert sk.expire_at == minute + 60 + 3600
    cmds, first = transaction(keys, 3600, "t1", writes["t1"])
    calls = cmds._calls
    assert calls[first - 1] == ("SCRIPT", "LOAD", MERGE_SCRIPT)
    assert [c[0] for c in calls[first : first + 2]] == ["EVALSHA", "EVALSHA"] and calls[first][1] == MERGE_SHA
    sent = writes["t1"].sketches[0]
    assert calls[first][4] == sent.hashes.astype("<u8").tobytes()
    # Once applied, the same pairs send nothing again.
    for w in writes.values():
        for sk in w.sketches:
            mirror.written(sk.key, sk.hashes, dense=False)
    again = {"t1": TenantWrites(events=1, offsets={}), "t2": TenantWrites(events=1, offsets={})}
    plan_sketches(pairs, hashes, again, keys, mirror, 3600)
    assert not again["t1"].sketches and not again["t2"].sketches


def test_a_batch_over_hours_writes_a_sketch_per_minute_only_each_expiring_retention_past_its_minute() -> None:
    catalogue = get_catalogue()
    rng = random.Random(8)
    start_us = 1_767_225_600_000_000  # 2026-01-01T00:00:00Z
    events = [
        {
            "event_id": f"e{i}",
            "tenant_id": rng.choice(["t1", "t2"]),
            "message_type": "track",
            "event_type": rng.choice(["page_view", "purchase"]),
            "user_id": f"user-{rng.randrange(40)}" if rng.random() < 0.6 else None,
            "anonymous_id": f"anon-{rng.randrange(40)}" if rng.random() < 0.9 else None,
            "timestamp": start_us + rng.randrange(3 * 3_600_000_000),  # 180 minutes in 3 hours of 1 day
            "received_at": start_us,
            "properties": "{}",
            "country": rng.choice(["US", "DE", None]),
            "device": rng.choice(["mobile", None]),
            "revenue": None,
            "is_bot": rng.random() < 0.1,
        }
        for i in range(2_000)
    ]
    _, want = naive(catalogue, events)  # (tenant, minute, field) → users, one event at a time
    aggregator = Aggregator(catalogue)
    table = pa.Table.from_pylist(events, schema=SCHEMA)
    cols = aggregator.columns(table)
    keys = RealtimeKeys("p:")
    writes = {t: TenantWrites(events=1, offsets={}) for t in ("t1", "t2")}
    plan_sketches(aggregator.unique_pairs(table, cols), UserKeys(cols.users), writes, keys, SketchMirror(), 7_200)
    got = {sk.key: sk for w in writes.values() for sk in w.sketches}
    assert len(got) == len(want) > 500
    for (tenant, minute, f), users in want.items():
        sk = got[keys.uniques(tenant, "minute", minute, f)]
        assert sk.hashes.tolist() == sorted(set(hll.hash_keys(sorted(users)).tolist()))
        assert sk.expire_at == minute + 60 + 7_200


def test_values_of_another_format_are_recognised() -> None:
    assert is_foreign(b"HYLL\x00") and is_foreign(b"")
    assert not is_foreign(Sketch.empty().to_bytes())
    assert not is_foreign(Sketch.from_hashes(np.arange(9_000, dtype=np.uint64)).to_bytes())


def bulk(value: str) -> bytes:
    data = value.encode()
    return b"$%d\r\n%s\r\n" % (len(data), data)


def test_packed_elements_are_the_bulk_strings_hiredis_sends() -> None:
    values = [*STRINGS, "q" * 10_000, "v" * 123_456]
    packed = Elements.pack(pa.array(values))
    whole = hiredis.pack_command(("X", *values))  # type: ignore[arg-type]
    assert whole.endswith(bytes(packed.slice(0, len(values))))
    for lo, hi in ((0, len(values)), (2, 5), (4, 4), (9, 11)):
        assert bytes(packed.slice(lo, hi)) == b"".join(bulk(v) for v in values[lo:hi])
    order = np.array([5, 1, 1, 9, 0])
    assert bytes(packed.take(order).slice(0, 5)) == b"".join(bulk(values[i]) for i in order)
    mask = np.array([i % 3 == 0 for i in range(len(values))])
    kept = [v for v, m in zip(values, mask, strict=True) if m]
    assert bytes(packed.filter(mask).slice(0, len(kept))) == b"".join(bulk(v) for v in kept)
    assert len(Elements.pack(pa.array([], pa.string()))) == 0


def test_a_key_known_dense_also_gets_its_registers_and_a_key_past_sparse_max_is_flagged_dense() -> None:
    keys = RealtimeKeys("p:")
    users = pa.array([f"u{i}" for i in range(9_000)])
    hashes = UserKeys(users)
    names = [("t1", 0, "f1"), ("t1", 60, "f1")]
    mirror = SketchMirror()
    dense, filling = keys.uniques("t1", "minute", 0, "f1"), keys.uniques("t1", "minute", 60, "f1")
    mirror.written(dense, hashes.hashes[:100], dense=True)  # Redis said dense
    mirror.written(filling, hashes.hashes[:8_000], dense=False)
    key = np.repeat([0, 1], 9_000)
    user = np.tile(np.arange(9_000), 2)
    writes = {"t1": TenantWrites(events=1, offsets={})}
    plan_sketches(UniquePairs(names, key, user, users), hashes, writes, keys, mirror, 3600)
    got = {sk.key: sk for sk in writes["t1"].sketches}
    assert got[dense].registers == packed_registers(got[dense].hashes) and not got[dense].surely_dense
    assert len(got[filling].hashes) == 1_000 and got[filling].registers == b"" and got[filling].surely_dense
    packed = np.frombuffer(got[dense].registers, dtype=np.uint8).reshape(-1, 3)
    registers = np.zeros(hll.REGISTERS, dtype=np.uint8)
    registers[packed[:, 0].astype(np.int64) * 256 + packed[:, 1]] = packed[:, 2]
    assert np.array_equal(registers, Sketch.from_hashes(got[dense].hashes).registers)
