"""What one batch writes to Redis for one tenant, and the MULTI/EXEC that writes it.

HLL keys are written in one of three ways (Redis adds to a sparse HLL ~35x slower than to a dense
one, and a sparse one is scanned for every element added): PFADD of the user keys that raise a
register; for a key new to this process that is about to get many, SET NX of a dense HLL of them
first (then the PFADD adds nothing new, unless the key existed after all); for a known sparse key
about to get many, PFMERGE of a dense HLL from a scratch key, which leaves it dense.
"""

from __future__ import annotations

import itertools
import json
import time
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa

from analytics_core.realtime_keys import RealtimeKeys, expire_at
from realtime.aggregate import UniquePairs
from realtime.hll import RegisterMirror, dense_values, murmur64a, pick_raising, registers
from realtime.resp import Commands, Elements

CLOSED_GRACE_S = 5  # a minute counts as closed (a change to it is a correction) this long after it ends
OFFSETS_TTL_EXTRA_S = 86_400  # offsets outlive the counters they protect by a day
SEEN_TTL_EXTRA_S = 3_600  # the seen set of an hour is still read during the next hour
# A key about to get this many elements is made dense first (PFMERGE costs Redis 7 ~250 us, about as
# much as adding 200 elements to a sparse HLL; SET NX of a new key costs ~5 us).
DENSE_FROM = 256
SPARSE_COST_FROM = 125_000  # elements x registers scanned (~2 ns each) above which a PFMERGE is cheaper
PFADD, SET_NX, MERGE = 0, 1, 2


@dataclass
class HllWrite:
    """One HLL key's part of a transaction."""

    key: str
    row: int  # its mirror row
    mode: int  # PFADD, SET_NX (then PFADD) or MERGE
    users: memoryview  # packed user keys that raise a register
    count: int
    dense: bytes  # SET_NX and MERGE: a dense HLL of those registers
    expire_at: int | None  # None: this process already set it (it is the same for every write of the key)


@dataclass
class TenantWrites:
    """What one tenant's transaction holds."""

    events: int
    offsets: dict[int, int]
    counters: dict[int, dict[str, int]] = field(default_factory=dict)
    hlls: list[HllWrite] = field(default_factory=list)
    seen: list[tuple[int, memoryview, int]] = field(default_factory=list)  # hour received, packed ids, count
    registers: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None  # mirror rows, indexes, ranks


class UserKeys:
    """The distinct user keys of a batch: their HLL register and rank, and their RESP bulk strings."""

    def __init__(self, users: pa.Array) -> None:
        self.index, self.rank = registers(murmur64a(users))
        self.packed = Elements.pack(users)


def plan_hlls(
    pairs: UniquePairs,
    users: UserKeys,
    writes: dict[str, TenantWrites],
    keys: RealtimeKeys,
    mirror: RegisterMirror,
    retention_s: int,
) -> None:
    """Per HLL key what to send and how (see the module docstring and realtime/hll.py); per tenant the
    registers to record in the mirror once its transaction is applied."""
    if not pairs.keys:
        return
    names = [keys.uniques(t, g, b, f) for t, g, b, f in pairs.keys]
    rows, new = mirror.rows_for(names)
    pair_index, pair_rank = users.index[pairs.user], users.rank[pairs.user]
    picked = pick_raising(pairs.key, pair_index, pair_rank, rows, mirror)
    if not picked.size:
        return
    key = pairs.key[picked]  # sorted
    sent = np.bincount(key, minlength=len(names))
    # Each element added to a sparse HLL scans it: ~2 ns per register it holds (z, about the mirror's).
    z = mirror.nonzero[rows]
    slow = (sent >= DENSE_FROM) | (sent * (2 * z + sent) >= SPARSE_COST_FROM)
    big = slow & ~mirror.known_dense(rows) & (rows != mirror.capacity)
    mode = np.where(big, np.where(new, SET_NX, MERGE), PFADD)
    dense_keys = np.flatnonzero(big)
    dense = dict.fromkeys(dense_keys.tolist(), b"")
    if dense_keys.size:
        slot = np.full(len(names), -1, dtype=np.int64)
        slot[dense_keys] = np.arange(dense_keys.size)
        in_dense = slot[key] >= 0
        values = dense_values(
            slot[key[in_dense]], pair_index[picked[in_dense]], pair_rank[picked[in_dense]], dense_keys.size
        )
        dense = dict(zip(dense_keys.tolist(), values, strict=True))
    sent_users = users.packed.take(pairs.user[picked])
    bounds = [0, *(np.flatnonzero(np.diff(key)) + 1).tolist(), len(key)]
    for s, e in itertools.pairwise(bounds):
        k = int(key[s])
        tenant, grain, bucket, _ = pairs.keys[k]
        until = None if mirror.expiring[rows[k]] else expire_at(bucket, grain, retention_s)
        hll = HllWrite(names[k], int(rows[k]), int(mode[k]), sent_users.slice(s, e), e - s, dense.get(k, b""), until)
        writes[tenant].hlls.append(hll)
    tenants = list(writes)
    code = {t: i for i, t in enumerate(tenants)}
    tenant_of_pick = np.array([code[k[0]] for k in pairs.keys], dtype=np.int64)[key]
    order = np.argsort(tenant_of_pick, kind="stable")
    cuts = np.searchsorted(tenant_of_pick[order], np.arange(len(tenants) + 1))
    for t, (s, e) in enumerate(itertools.pairwise(cuts.tolist())):
        if e > s:
            mine = order[s:e]
            writes[tenants[t]].registers = (rows[key[mine]], pair_index[picked[mine]], pair_rank[picked[mine]])


def transaction(keys: RealtimeKeys, retention: int, t: str, w: TenantWrites) -> tuple[Commands, list[tuple[int, int]]]:
    """A tenant's MULTI/EXEC, and the positions of its SET NX commands with their mirror rows."""
    # A command Redis refuses inside EXEC (a counter past 64 bits) leaves the others applied: kept, not raised.
    cmds = Commands(transaction=True, keep_errors=True)
    for minute, cell in w.counters.items():
        key = keys.counters(t, minute)
        for name, amount in cell.items():
            cmds.add("HINCRBY", key, name, amount)
        cmds.add("EXPIREAT", key, expire_at(minute, "minute", retention))
    set_nx: list[tuple[int, int]] = []
    for h in w.hlls:
        if h.mode == MERGE:
            cmds.add("SET", keys.scratch(t), h.dense)
            cmds.add("PFMERGE", h.key, keys.scratch(t))
        else:
            if h.mode == SET_NX:
                # When the key was new, the PFADD after it adds nothing; when it existed, it adds all.
                set_nx.append((cmds.add("SET", h.key, h.dense, "NX"), h.row))
            cmds.add_with_elements("PFADD", h.key, h.users, h.count)
        if h.expire_at is not None:
            cmds.add("EXPIREAT", h.key, h.expire_at)
    if any(h.mode == MERGE for h in w.hlls):
        cmds.add("DEL", keys.scratch(t))
    for hour, ids, count in w.seen:
        key = keys.seen(t, hour)
        cmds.add_with_elements("SADD", key, ids, count)
        cmds.add("EXPIREAT", key, expire_at(hour, "hour", retention) + SEEN_TTL_EXTRA_S)
    cmds.add("HSET", keys.offsets(t), *itertools.chain.from_iterable(w.offsets.items()))
    cmds.add("EXPIRE", keys.offsets(t), retention + OFFSETS_TTL_EXTRA_S)
    # Published inside the transaction: subscribers hear of the batch exactly when it is visible.
    cmds.add("PUBLISH", keys.updates(t), update_message(w, time.time()))
    return cmds, set_nx


def update_message(w: TenantWrites, applied_at: float) -> str:
    """The JSON published on the tenant's updates channel."""
    minutes = sorted(w.counters)
    corrections = [m for m in minutes if m + 60 <= applied_at - CLOSED_GRACE_S]
    message = {"applied_at": applied_at, "events": w.events, "minutes": minutes, "corrections": corrections}
    return json.dumps(message, separators=(",", ":"))
