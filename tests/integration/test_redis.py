"""The real Redis of the stack: reachable, pipelines, TTLs, and the realtime layer's sketch merge script."""

from __future__ import annotations

import random
import threading
import time

import numpy as np
import pytest
import redis

from analytics_core import hll
from analytics_core.hll import Sketch
from realtime.hll import DENSE, EXACT, MERGE_SCRIPT, MERGE_SHA, REPLACED, SPARSE, SketchMirror, packed_registers

pytestmark = pytest.mark.integration


def test_ping_and_server_version(redis_conn: redis.Redis) -> None:
    assert redis_conn.ping() is True
    major = int(str(redis_conn.info("server")["redis_version"]).split(".")[0])
    assert major >= 7


def test_pipeline_transaction_with_ttl(redis_conn: redis.Redis, redis_prefix: str) -> None:
    key = f"{redis_prefix}{{tenant_1}}:events:m:202401011400"
    with redis_conn.pipeline(transaction=True) as pipe:
        pipe.incrby(key, 3).incrby(key, 4).expire(key, 120)
        assert pipe.execute() == [3, 7, True]
    assert 0 < redis_conn.ttl(key) <= 120


def merge(conn: redis.Redis, key: str, hashes: np.ndarray, expire_at: int, dense: bool = False) -> int:
    """One run of the script, as the consumer queues it (SCRIPT LOAD first); `dense`: with the registers form too,
    as for a key the consumer knows is dense."""
    registers = packed_registers(hashes) if dense else b""
    with conn.pipeline(transaction=True) as pipe:
        pipe.script_load(MERGE_SCRIPT)
        pipe.evalsha(MERGE_SHA, 1, key, hashes.astype("<u8").tobytes(), expire_at, registers)
        sha, reply = pipe.execute()
    assert sha == MERGE_SHA
    return int(reply)


def edge_hashes() -> np.ndarray:
    """Hashes at the byte boundaries of the rank: the low 48 bits all zero (rank 49), a single bit in each byte."""
    rest = [0, 1, 0x80, 0x100, 0xFF00, 1 << 47, (1 << 48) - 1, 1 << 40, 1 << 8, 1 << 16, 1 << 24, 1 << 32]
    top = [0, 1, 0xFFFF, 0x1234]
    return np.array([(t << 48) | r for t in top for r in rest], dtype=np.uint64)


def test_the_merge_script_keeps_the_sketch_of_every_hash_sent_through_the_sparse_to_dense_switch(
    redis_conn: redis.Redis, redis_prefix: str
) -> None:
    rng = np.random.default_rng(5)
    key = f"{redis_prefix}rt:{{t}}:u:minute:0:x"
    until = int(time.time()) + 3600
    pool = np.concatenate([edge_hashes(), rng.integers(0, 2**64, 20_000, dtype=np.uint64, endpoint=False)])
    sent: list[np.ndarray] = []
    total = 0
    kinds = []
    while total < 16_000:
        # Random batches: mostly new hashes, some sent before, some repeated within the batch.
        size = int(rng.choice([1, 7, 300, 1_500]))
        batch = pool[total : total + size]
        if sent and rng.random() < 0.5:
            old = np.concatenate(sent)
            batch = np.concatenate([batch, rng.choice(old, min(len(old), 50)), batch[:3]])
        total += size
        sent.append(batch)
        # Once dense, the consumer may send the registers form as well: the same result either way.
        reply = merge(redis_conn, key, batch, until, dense=bool(kinds) and kinds[-1] == DENSE and rng.random() < 0.5)
        want = Sketch.from_hashes(np.concatenate(sent))
        value = redis_conn.get(key)
        assert value is not None
        got = Sketch.from_bytes(value)
        assert got == want, f"after {total} hashes"
        assert reply == (SPARSE if want.is_sparse else DENSE) and got.is_sparse == want.is_sparse
        if not want.is_sparse:
            assert len(value) == hll.DENSE_BYTES
        kinds.append(reply)
    assert SPARSE in kinds and DENSE in kinds  # the switch happened on the way
    assert redis_conn.expiretime(key) == until  # set when created, kept when rewritten dense


def test_the_switch_is_at_exactly_sparse_max_distinct_hashes(redis_conn: redis.Redis, redis_prefix: str) -> None:
    rng = np.random.default_rng(6)
    hashes = rng.integers(0, 2**64, hll.SPARSE_MAX + 1, dtype=np.uint64, endpoint=False)
    key = f"{redis_prefix}rt:{{t}}:u:minute:0:x"
    until = int(time.time()) + 60
    # SPARSE_MAX distinct hashes, with repeats that push the value past 1 + 8 * SPARSE_MAX bytes: compacted.
    assert merge(redis_conn, key, hashes[: hll.SPARSE_MAX - 10], until) == SPARSE
    assert merge(redis_conn, key, np.concatenate([hashes[:100], hashes[hll.SPARSE_MAX - 10 : -1]]), until) == SPARSE
    value = redis_conn.get(key)
    assert value is not None and len(value) == 1 + 8 * hll.SPARSE_MAX  # rewritten without the repeats
    assert Sketch.from_bytes(value) == Sketch.from_hashes(hashes[:-1])
    assert merge(redis_conn, key, hashes[-1:], until) == DENSE
    value = redis_conn.get(key)
    assert value is not None and Sketch.from_bytes(value) == Sketch.from_hashes(hashes)
    # A new key given more than SPARSE_MAX at once is dense at once.
    other = f"{redis_prefix}rt:{{t}}:u:minute:60:x"
    assert merge(redis_conn, other, hashes, until) == DENSE
    assert redis_conn.get(other) == Sketch.from_hashes(hashes).to_bytes()


def test_two_writers_of_one_key_at_once_leave_the_sketch_of_the_union(
    redis_conn: redis.Redis, redis_prefix: str
) -> None:
    rng = np.random.default_rng(7)
    users = [f"user-{i}" for i in range(30_000)]
    hashes = hll.hash_keys(users)
    key = f"{redis_prefix}rt:{{t}}:u:minute:0:x"
    until = int(time.time()) + 60
    halves = [hashes[rng.random(len(hashes)) < 0.5], hashes[rng.random(len(hashes)) < 0.5]]
    errors: list[BaseException] = []

    def writer(part: np.ndarray, seed: int) -> None:
        conn = redis.Redis(connection_pool=redis_conn.connection_pool)
        batches = np.array_split(part, random.Random(seed).randrange(20, 60))
        try:
            for batch in batches:
                merge(conn, key, batch, until)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(h, i)) for i, h in enumerate(halves)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors
    union = np.union1d(*halves)
    value = redis_conn.get(key)
    assert value is not None
    assert Sketch.from_bytes(value) == Sketch.from_hashes(union)
    # ... bit for bit the sketch of the users' keys themselves.
    chosen = np.isin(hashes, union)
    assert value == Sketch.from_keys([u for u, c in zip(users, chosen, strict=True) if c]).to_bytes()
    est = Sketch.from_bytes(value).estimate()
    assert abs(est - len(union)) <= 0.01 * len(union)


def test_a_value_in_the_old_native_hll_format_is_replaced_and_reported(
    redis_conn: redis.Redis, redis_prefix: str
) -> None:
    key = f"{redis_prefix}rt:{{t}}:u:minute:0:x"
    redis_conn.pfadd(key, "a", "b")
    assert redis_conn.get(key)[:4] == b"HYLL"  # type: ignore[index]
    hashes = hll.hash_keys(["c"])
    until = int(time.time()) + 60
    assert merge(redis_conn, key, hashes, until) == SPARSE | REPLACED
    assert redis_conn.get(key) == Sketch.from_hashes(hashes).to_bytes()
    assert redis_conn.expiretime(key) == until


def _mirrored_merge(conn: redis.Redis, mirror: SketchMirror, key: str, hashes: np.ndarray, until: int) -> bool:
    """One write as the consumer makes it (realtime/writes.py): the mirror's new hashes, and its densify guess."""
    new = mirror.new_hashes(key, np.unique(hashes))
    dense = mirror.known_dense(key)
    surely = not dense and mirror.sent(key) + len(new) > hll.SPARSE_MAX
    args: list[bytes | int | str] = [packed_registers(new) if dense else b"", int(surely)]
    guess = mirror.densify(key, new) if surely else None
    exact = mirror.exact_registers(key, new) if dense else None
    if guess is not None or exact is not None:
        args += list(guess or (b"", ""))
    if exact is not None:
        args += list(exact)
    with conn.pipeline(transaction=True) as pipe:
        pipe.script_load(MERGE_SCRIPT)
        pipe.evalsha(MERGE_SHA, 1, key, new.astype("<u8").tobytes(), until, *args)
        _, reply = pipe.execute()
    mirror.written(key, new, dense=bool(int(reply) & DENSE), exact=bool(int(reply) & EXACT))
    return bool(int(reply) & EXACT)


def test_densifying_from_the_consumers_registers_only_when_the_value_is_what_it_wrote(
    redis_conn: redis.Redis, redis_prefix: str
) -> None:
    rng = np.random.default_rng(11)
    until = int(time.time()) + 3600
    a, b = rng.integers(0, 2**64, (2, 9_000), dtype=np.uint64, endpoint=False)
    # Alone: the guess is right, the key goes dense from the consumer's registers.
    alone = f"{redis_prefix}rt:{{t}}:u:minute:0:alone"
    mirror = SketchMirror()
    _mirrored_merge(redis_conn, mirror, alone, a[:8_000], until)
    assert _mirrored_merge(redis_conn, mirror, alone, a[8_000:], until)
    value = redis_conn.get(alone)
    assert value is not None and Sketch.from_bytes(value) == Sketch.from_hashes(a)
    assert not Sketch.from_bytes(value).is_sparse
    # Another writer added hashes meanwhile: the guess is wrong, the script merges the value's hashes.
    shared = f"{redis_prefix}rt:{{t}}:u:minute:0:shared"
    first, other = SketchMirror(), SketchMirror()
    _mirrored_merge(redis_conn, first, shared, a[:8_000], until)
    _mirrored_merge(redis_conn, other, shared, b[:100], until)
    assert not _mirrored_merge(redis_conn, first, shared, a[8_000:], until)
    value = redis_conn.get(shared)
    assert value is not None and Sketch.from_bytes(value) == Sketch.from_hashes(np.concatenate([a, b[:100]]))


def test_a_dense_key_written_whole_only_while_it_holds_exactly_the_consumers_registers(
    redis_conn: redis.Redis, redis_prefix: str
) -> None:
    rng = np.random.default_rng(12)
    until = int(time.time()) + 3600
    pool = np.concatenate([edge_hashes(), rng.integers(0, 2**64, 40_000, dtype=np.uint64, endpoint=False)])
    key = f"{redis_prefix}rt:{{t}}:u:minute:0:exact"
    mirrors = [SketchMirror(), SketchMirror()]
    sent: list[np.ndarray] = []
    exact = []
    at = 0
    for step in range(40):
        # One writer for a while (its writes go whole), then both: each write checks the value is what it mirrors.
        writer = 0 if step < 20 else int(rng.integers(2))
        size = int(rng.choice([3, 200, 1_500, 4_000]))
        batch = np.concatenate([pool[at : at + size], rng.choice(pool[: at + 1], 20)])
        at += size
        exact.append(_mirrored_merge(redis_conn, mirrors[writer], key, batch, until))
        sent.append(batch)
        value = redis_conn.get(key)
        assert value is not None and Sketch.from_bytes(value) == Sketch.from_hashes(np.concatenate(sent)), step
    assert any(exact[:20]) and redis_conn.ttl(key) > 0
