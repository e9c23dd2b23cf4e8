"""Redis-compatible HLL registers in numpy, the register mirror, and bulk RESP packing, against plain Python."""

from __future__ import annotations

import random

import hiredis
import numpy as np
import pyarrow as pa

from realtime.hll import REGISTERS, RegisterMirror, dense_values, murmur64a, pick_raising, registers
from realtime.resp import Elements

MASK = (1 << 64) - 1


def murmur_reference(data: bytes, seed: int = 0xADC83B19) -> int:
    """MurmurHash64A as in Redis's hyperloglog.c, one byte at a time."""
    m, r = 0xC6A4A7935BD1E995, 47
    h = (seed ^ (len(data) * m)) & MASK
    whole = len(data) - len(data) % 8
    for i in range(0, whole, 8):
        k = int.from_bytes(data[i : i + 8], "little")
        k = (k * m) & MASK
        k ^= k >> r
        k = (k * m) & MASK
        h = ((h ^ k) * m) & MASK
    tail = data[whole:]
    if tail:
        h = ((h ^ int.from_bytes(tail, "little")) * m) & MASK
    h ^= h >> r
    h = (h * m) & MASK
    return h ^ (h >> r)


def register_reference(data: bytes) -> tuple[int, int]:
    """(register, rank) as Redis's hllPatLen: low 14 bits, then 1 + trailing zeros of the rest (at most 51)."""
    h = murmur_reference(data)
    rest = (h >> 14) | (1 << 50)
    return h & (REGISTERS - 1), (rest & -rest).bit_length()


STRINGS = ["", "a", "user-1", "anon-0000abcd-tenant_1", "\u00fc\u20ac\u65e5", "x" * 7, "y" * 8, "z" * 9, "w" * 71]


def test_hashes_and_registers_equal_the_byte_by_byte_reference() -> None:
    rng = random.Random(1)
    strings = STRINGS + ["".join(rng.choice("ab\u00e9") for _ in range(rng.randrange(40))) for _ in range(500)]
    arr = pa.array(strings).slice(3)  # an offset into the buffers, as Arrow slices have
    hashes = murmur64a(arr)
    assert hashes.tolist() == [murmur_reference(s.encode()) for s in strings[3:]]
    index, rank = registers(hashes)
    assert list(zip(index.tolist(), rank.tolist(), strict=True)) == [
        register_reference(s.encode()) for s in strings[3:]
    ]


def test_dense_values_pack_registers_as_redis_does() -> None:
    rng = random.Random(2)
    regs = [[rng.choice([0, 0, 1, 2, 5, 31, 63]) for _ in range(REGISTERS)] for _ in range(2)]
    rows = np.repeat([0, 1], REGISTERS)
    index = np.tile(np.arange(REGISTERS), 2)
    values = dense_values(rows, index, np.array(regs[0] + regs[1], dtype=np.uint8), 2)
    for value, expected in zip(values, regs, strict=True):
        assert len(value) == 16 + REGISTERS * 6 // 8 and value[:5] == b"HYLL\x00" and value[15] & 0x80
        bits = int.from_bytes(value[16:], "little")
        assert [(bits >> (6 * i)) & 63 for i in range(REGISTERS)] == expected


def test_sending_only_the_raising_elements_leaves_the_same_registers() -> None:
    rng = random.Random(3)
    users = pa.array([f"u{i}" for i in range(3_000)])
    index, rank = registers(murmur64a(users))
    mirror = RegisterMirror(capacity=4)
    rows, new = mirror.rows_for(["k0", "k1"])
    assert new.tolist() == [True, True]
    everything = np.zeros((2, REGISTERS), dtype=np.int64)
    for _ in range(4):  # batches: each adds some users to each key, some of them again
        key = np.array([rng.randrange(2) for _ in range(2_000)])
        user = np.array([rng.randrange(3_000) for _ in range(2_000)])
        np.maximum.at(everything, (key, index[user]), rank[user])
        picked = pick_raising(key, index[user], rank[user], rows, mirror)
        assert np.all(np.diff(key[picked]) >= 0)  # grouped by key
        assert np.all(rank[user][picked] > 0)
        mirror.raise_to(rows[key[picked]], index[user][picked], rank[user][picked])
        assert np.array_equal(mirror.regs[rows], everything)  # nothing that mattered was left out
    assert len(picked) < 2_000 / 2  # and most elements no longer matter
    assert mirror.rows_for(["k1", "k0"])[1].tolist() == [False, False]


def test_a_full_mirror_evicts_the_least_recently_used_key_and_never_the_batchs_own() -> None:
    mirror = RegisterMirror(capacity=2)
    rows, _ = mirror.rows_for(["a", "b"])
    mirror.raise_to(rows, np.array([1, 2]), np.array([3, 4], dtype=np.uint8))
    mirror.rows_for(["a"])  # b is now the least recently used
    rows_c, new_c = mirror.rows_for(["c"])
    assert new_c.tolist() == [True] and rows_c[0] == rows[1] and mirror.regs[rows_c[0]].max() == 0
    spare, _ = mirror.rows_for(["d", "e", "f"])  # more keys than rows: the extra ones share the zero spare
    assert (spare == mirror.capacity).sum() == 1 and mirror.regs[mirror.capacity].max() == 0


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
