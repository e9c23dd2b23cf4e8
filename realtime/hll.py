"""Redis HyperLogLog registers computed in numpy, so a batch sends PFADD only the user keys that change one.

Redis hashes a PFADD element with MurmurHash64A (seed 0xadc83b19); the low 14 bits pick one of
16384 registers, and the register keeps the largest "rank" (position of the lowest set bit of the
remaining 50 bits, plus one) of any element. An HLL is fully determined by its registers, so PFADD
of one element with the largest rank per register gives the same key as PFADD of all of them, and
an element whose rank is not above what the register already holds changes nothing.

`RegisterMirror` remembers, per key, the registers this process has set (a lower bound of Redis's:
only Redis can raise them further). Elements at or below the mirror are not sent. At 100k events/s
the hour and day HLLs see the same users again and again; without the mirror Redis spent more time
hashing those than on everything else in a batch.
"""

from __future__ import annotations

from collections import OrderedDict

import numpy as np
import pyarrow as pa

P = 14
REGISTERS = 1 << P  # Redis HLL_REGISTERS
_M = np.uint64(0xC6A4A7935BD1E995)
_R = np.uint64(47)
_SEED = 0xADC83B19
_Q_BIT = np.uint64(1 << (64 - P))  # Redis ORs this in so the rank is at most 51
_WORD_PAD = 8
# Above this many non-zero registers (scattered by the hash) a sparse HLL takes about 2 bytes each,
# past Redis's default hll-sparse-max-bytes (3000), so Redis has made it dense. Only a speed hint.
SPARSE_MAX_REGISTERS = 2_000
_DENSE_HEADER = b"HYLL" + bytes(3 + 1) + bytes(7) + b"\x80"


def murmur64a(strings: pa.Array) -> np.ndarray:
    """MurmurHash64A (Redis's seed) of each string's UTF-8 bytes, as uint64; nulls hash as empty strings."""
    arr = strings.cast(pa.large_string()) if strings.type != pa.large_string() else strings
    n = len(arr)
    if n == 0:
        return np.zeros(0, dtype=np.uint64)
    _, offsets_buf, data_buf = arr.buffers()
    offsets = np.frombuffer(offsets_buf, dtype=np.int64)[arr.offset : arr.offset + n + 1]
    starts, lengths = offsets[:-1], np.diff(offsets)
    data = np.frombuffer(data_buf, dtype=np.uint8) if data_buf is not None else np.zeros(0, np.uint8)
    buf = np.zeros(len(data) + _WORD_PAD, dtype=np.uint8)
    buf[: len(data)] = data
    # words[i]: the 8 bytes at buf[i] as a little-endian integer (an unaligned view, no copy).
    words = np.ndarray((len(buf) - 7,), dtype="<u8", buffer=buf, strides=(1,))
    h = np.uint64(_SEED) ^ (lengths.astype(np.uint64) * _M)
    blocks = lengths >> 3
    rows = np.flatnonzero(blocks)
    pos = starts[rows]
    j = 0
    while rows.size:
        k = words[pos + 8 * j]
        k *= _M
        k ^= k >> _R
        k *= _M
        h[rows] = (h[rows] ^ k) * _M
        j += 1
        more = blocks[rows] > j
        rows, pos = rows[more], pos[more]
    tail = lengths & 7
    rows = np.flatnonzero(tail)
    if rows.size:
        word = words[starts[rows] + 8 * blocks[rows]]
        mask = (np.uint64(1) << (np.uint64(8) * tail[rows].astype(np.uint64))) - np.uint64(1)
        h[rows] = (h[rows] ^ (word & mask)) * _M
    h ^= h >> _R
    h *= _M
    h ^= h >> _R
    return h


def registers(hashes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(register index as int64, rank as uint8) of each hash, as Redis's hllPatLen computes them."""
    index = (hashes & np.uint64(REGISTERS - 1)).astype(np.int64)
    rest = (hashes >> np.uint64(P)) | _Q_BIT
    lowest = rest & (~rest + np.uint64(1))
    return index, (np.bitwise_count(lowest - np.uint64(1)) + 1).astype(np.uint8)


class RegisterMirror:
    """Lower bounds of the registers of recently written HLL keys, least recently used evicted.

    Per row also: how many registers are non-zero, and whether the key is known to be dense in Redis.
    Row `capacity` is a spare that stays zero: keys without a row of their own use it (all sent).
    """

    def __init__(self, capacity: int = 2048) -> None:
        self.capacity = capacity
        self.regs = np.zeros((capacity + 1, REGISTERS), dtype=np.uint8)
        self.nonzero = np.zeros(capacity + 1, dtype=np.int64)  # about how many registers are not zero
        self.dense = np.zeros(capacity + 1, dtype=bool)
        self.expiring = np.zeros(capacity + 1, dtype=bool)  # its EXPIREAT is set (the spare row: never)
        self._rows: OrderedDict[str, int] = OrderedDict()
        self._free = list(range(capacity - 1, -1, -1))

    def __len__(self) -> int:
        return len(self._rows)

    def rows_for(self, keys: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """The mirror row of each key (the zero spare when all rows hold keys of this call), and which rows are new."""
        out = np.full(len(keys), self.capacity, dtype=np.int64)
        new = np.zeros(len(keys), dtype=bool)
        wanted = set(keys)
        for i, key in enumerate(keys):
            row = self._rows.get(key)
            if row is None:
                row = self._take_row(wanted)
                if row is None:
                    continue
                self._rows[key] = row
                new[i] = True
            else:
                self._rows.move_to_end(key)
            out[i] = row
        return out, new

    def _take_row(self, wanted: set[str]) -> int | None:
        if self._free:
            return self._free.pop()
        for key in self._rows:  # oldest first
            if key not in wanted:
                row = self._rows.pop(key)
                self._reset(row)
                return row
            break  # the oldest is in use by this call: so are all newer ones
        return None

    def _reset(self, row: int) -> None:
        self.regs[row] = 0
        self.nonzero[row] = 0
        self.dense[row] = self.expiring[row] = False

    def raise_to(self, rows: np.ndarray, index: np.ndarray, rank: np.ndarray) -> None:
        """Record registers Redis now holds at least."""
        keep = rows != self.capacity
        flat, rows = rows[keep] * REGISTERS + index[keep], rows[keep]
        regs = self.regs.reshape(-1)
        # Registers leaving zero (one raised twice in a batch counts twice: the figure is a rough guide).
        self.nonzero += np.bincount(rows[regs[flat] == 0], minlength=self.capacity + 1)
        np.maximum.at(regs, flat, rank[keep])

    def mark_dense(self, rows: np.ndarray) -> None:
        self.dense[rows[rows != self.capacity]] = True

    def mark_expiring(self, rows: np.ndarray) -> None:
        self.expiring[rows[rows != self.capacity]] = True

    def known_dense(self, rows: np.ndarray) -> np.ndarray:
        """Keys Redis surely holds dense: made so by us, or with more non-zero registers than sparse can hold."""
        return self.dense[rows] | (self.nonzero[rows] >= SPARSE_MAX_REGISTERS)

    def clear(self) -> None:
        """Forget everything (Redis lost its data, or this process cannot vouch for the rows any more)."""
        self.regs[:] = 0
        self.nonzero[:] = 0
        self.dense[:] = self.expiring[:] = False
        self._rows.clear()
        self._free = list(range(self.capacity - 1, -1, -1))


def dense_values(rows: np.ndarray, index: np.ndarray, rank: np.ndarray, n: int) -> list[bytes]:
    """Redis dense HLL strings of n keys, key rows[i] holding register index[i] at least rank[i].

    The layout is Redis's: "HYLL", encoding 0 (dense), 3 unused bytes, an 8-byte cached cardinality
    (its top bit set: not valid), then the 16384 6-bit registers packed little-endian.
    """
    regs = np.zeros((n, REGISTERS), dtype=np.uint8)
    np.maximum.at(regs.reshape(-1), rows * REGISTERS + index, rank)
    # Four 6-bit registers r0..r3 fill three bytes, low bits first.
    r0, r1, r2, r3 = (regs[:, i::4] for i in range(4))
    body = np.empty((n, REGISTERS // 4, 3), dtype=np.uint8)
    body[..., 0] = r0 | (r1 << 6)
    body[..., 1] = (r1 >> 2) | (r2 << 4)
    body[..., 2] = (r2 >> 4) | (r3 << 2)
    return [_DENSE_HEADER + row.tobytes() for row in body.reshape(n, REGISTERS * 6 // 8)]


def pick_raising(
    key: np.ndarray, index: np.ndarray, rank: np.ndarray, mirror_rows: np.ndarray, mirror: RegisterMirror
) -> np.ndarray:
    """Positions of the (key, element) pairs worth a PFADD (rank above the mirror's register), sorted by key.

    `key` is each pair's key number, `mirror_rows[key]` that key's mirror row. Pairs that raise the
    same register twice are both kept: a second sort to drop them cost more than Redis spends on them.
    """
    above = np.flatnonzero(rank > mirror.regs[mirror_rows[key], index])
    keys = key[above]
    # A stable sort of small integers is numpy's radix sort: linear, unlike a sort of wider codes.
    narrow = keys.astype(np.uint16) if len(mirror_rows) <= 1 << 16 else keys
    return above[np.argsort(narrow, kind="stable")]
