"""What one batch writes to Redis for one tenant, and the MULTI/EXEC that writes it.

Unique users go to their minute keys as analytics_core/hll.py sketches, merged inside Redis by
realtime/hll.py's script: per key one EVALSHA with the batch's new hashes (those the process's
mirror cannot rule out) as one string of 8-byte little-endian hashes.
"""

from __future__ import annotations

import itertools
import json
import time
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa

from analytics_core import hll
from analytics_core.realtime_keys import RealtimeKeys, expire_at
from realtime.aggregate import UniquePairs
from realtime.hll import MERGE_SCRIPT, MERGE_SHA, SketchMirror, packed_registers
from realtime.resp import Commands

CLOSED_GRACE_S = 5  # a minute counts as closed (a change to it is a correction) this long after it ends
OFFSETS_TTL_EXTRA_S = 86_400  # offsets outlive the counters they protect by a day
SEEN_TTL_EXTRA_S = 3_600  # the seen set of an hour is still read during the next hour


@dataclass
class SketchWrite:
    """One uniques key's part of a transaction: the hashes to merge into it."""

    key: str
    hashes: np.ndarray  # distinct uint64, none of them known to the mirror
    expire_at: int  # set by the script when it creates the key
    registers: bytes = b""  # for a key known dense: realtime/hll.py's packed_registers of the hashes
    surely_dense: bool = False  # this process alone has now sent the key more than SPARSE_MAX distinct hashes
    dense_registers: bytes = b""  # with surely_dense, when the mirror knows the value's bytes: SketchMirror.densify
    digest: str = ""
    exact: tuple[bytes, bytes] | None = None  # for a key Redis holds exactly as mirrored: SketchMirror.exact_registers


@dataclass
class TenantWrites:
    """What one tenant's transaction holds."""

    events: int
    offsets: dict[int, int]
    counters: dict[int, dict[str, int]] = field(default_factory=dict)
    sketches: list[SketchWrite] = field(default_factory=list)
    seen: list[tuple[int, memoryview, int]] = field(default_factory=list)  # hour received, packed ids, count


class UserKeys:
    """The distinct user keys of a batch and their sketch hashes (DuckDB hash(), computed on the decoding thread)."""

    def __init__(self, users: pa.Array) -> None:
        self.hashes = hll.hash_keys(users)


def plan_sketches(
    pairs: UniquePairs,
    users: UserKeys,
    writes: dict[str, TenantWrites],
    keys: RealtimeKeys,
    mirror: SketchMirror,
    retention_s: int,
) -> None:
    """Per uniques key the distinct hashes of the batch that the mirror cannot rule out (see realtime/hll.py)."""
    if not pairs.keys:
        return
    # A stable sort of small integers is numpy's radix sort: linear, unlike a sort of wider codes.
    narrow = pairs.key.astype(np.uint16) if len(pairs.keys) <= 1 << 16 else pairs.key
    order = np.argsort(narrow, kind="stable")
    key = pairs.key[order]
    hashes = users.hashes[pairs.user[order]]
    bounds = [0, *(np.flatnonzero(np.diff(key)) + 1).tolist(), len(key)]
    for s, e in itertools.pairwise(bounds):
        tenant, minute, f = pairs.keys[int(key[s])]
        name = keys.uniques(tenant, "minute", minute, f)
        seg = hashes[s:e]
        if e - s > 1:
            seg = np.sort(seg)
            seg = seg[np.concatenate([[True], seg[1:] != seg[:-1]])]
        new = mirror.new_hashes(name, seg)
        if len(new):
            dense = mirror.known_dense(name)
            registers = packed_registers(new) if dense else b""
            surely = not dense and mirror.sent(name) + len(new) > hll.SPARSE_MAX
            until = expire_at(minute, "minute", retention_s)
            sk = SketchWrite(name, new, until, registers, surely)
            if dense:
                sk.exact = mirror.exact_registers(name, new)
            if surely and (guess := mirror.densify(name, new)) is not None:
                sk.dense_registers, sk.digest = guess
            writes[tenant].sketches.append(sk)


def transaction(keys: RealtimeKeys, retention: int, t: str, w: TenantWrites) -> tuple[Commands, int]:
    """A tenant's MULTI/EXEC, and the position of its first EVALSHA (the sketches' replies follow in order)."""
    # A command Redis refuses inside EXEC (a counter past 64 bits) leaves the others applied: kept, not raised.
    cmds = Commands(transaction=True, keep_errors=True)
    for minute, cell in w.counters.items():
        key = keys.counters(t, minute)
        for name, amount in cell.items():
            cmds.add("HINCRBY", key, name, amount)
        cmds.add("EXPIREAT", key, expire_at(minute, "minute", retention))
    first = len(cmds) + 1
    if w.sketches:
        # Loaded inside the transaction: the EVALSHAs after it cannot fail with NOSCRIPT (see realtime/hll.py).
        cmds.add("SCRIPT", "LOAD", MERGE_SCRIPT)
        for sk in w.sketches:
            blob = sk.hashes.astype("<u8", copy=False).tobytes()
            args: tuple[bytes | int | str, ...] = (sk.registers, int(sk.surely_dense))
            if sk.digest or sk.exact:
                args += (sk.dense_registers, sk.digest)
            if sk.exact:
                args += sk.exact
            cmds.add("EVALSHA", MERGE_SHA, 1, sk.key, blob, sk.expire_at, *args)
    for hour, ids, count in w.seen:
        key = keys.seen(t, hour)
        cmds.add_with_elements("SADD", key, ids, count)
        cmds.add("EXPIREAT", key, expire_at(hour, "hour", retention) + SEEN_TTL_EXTRA_S)
    cmds.add("HSET", keys.offsets(t), *itertools.chain.from_iterable(w.offsets.items()))
    cmds.add("EXPIRE", keys.offsets(t), retention + OFFSETS_TTL_EXTRA_S)
    # Published inside the transaction: subscribers hear of the batch exactly when it is visible.
    cmds.add("PUBLISH", keys.updates(t), update_message(w, time.time()))
    return cmds, first


def update_message(w: TenantWrites, applied_at: float) -> str:
    """The JSON published on the tenant's updates channel."""
    minutes = sorted(w.counters)
    corrections = [m for m in minutes if m + 60 <= applied_at - CLOSED_GRACE_S]
    message = {"applied_at": applied_at, "events": w.events, "minutes": minutes, "corrections": corrections}
    return json.dumps(message, separators=(",", ":"))
