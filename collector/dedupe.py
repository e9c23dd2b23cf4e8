"""Drops SDK retries: an event id seen within the window is a duplicate.

Ids live in one Redis set per tenant and window-long bucket of Redis' own clock (`dd:{tenant}:<n>`,
n = seconds since the epoch // window). An id is a duplicate when it is in the current or the previous
bucket, so a resend is caught for at least one window after the first send and at most two (a resend
does not extend it); a bucket expires once it can no longer be the previous one. A batch is one script
call: two SMISMEMBER and one SADD of the new ids, each with all the ids at once, and an EXPIREAT.
The script reads TIME itself, so every collector process agrees on the bucket whatever its clock.

A key per id (SET NX EX from the script, ~3.7 µs an id in Redis) made Redis the second largest user
of CPU in the collector bench; the measurements are in docs/BENCHMARKS.md ("Collector"). With one
bucket of a busy tenant holding a day of ids, the stack's Redis frees expired keys in the background
(`lazyfree-lazy-expire yes`, stack/redis_server.py); a production Redis should too.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import redis.asyncio

from collector.keys import dedupe_bucket_key

# KEYS[1] the bucket key prefix; ARGV[1] the window in seconds, ARGV[2..] the event ids. The keys the
# script builds from the prefix share its tenant hash tag, so they are in the slot the call goes to.
# Returns {bucket number, 1 for each id not in the current or previous bucket, else 0}.
_CLAIM = """
local window = tonumber(ARGV[1])
local bucket = math.floor(tonumber(redis.call('TIME')[1]) / window)
local ids = {unpack(ARGV, 2)}
local current = KEYS[1] .. bucket
local in_previous = redis.call('SMISMEMBER', KEYS[1] .. (bucket - 1), unpack(ids))
local in_current = redis.call('SMISMEMBER', current, unpack(ids))
local out, new = {bucket}, {}
for i = 1, #ids do
  if in_previous[i] == 0 and in_current[i] == 0 then
    out[i + 1] = 1
    new[#new + 1] = ids[i]
  else
    out[i + 1] = 0
  end
end
if #new > 0 then
  redis.call('SADD', current, unpack(new))
  redis.call('EXPIREAT', current, (bucket + 2) * window + 60)
end
return out
"""
# Lua's unpack takes at most LUAI_MAXCSTACK (8,000) values; a batch is at most ~500 KB of messages,
# but a claim is split anyway so no batch size can trip it.
_MAX_IDS_A_CALL = 4000


@dataclass
class Claims:
    """Ids a claim added, by bucket key: what `release` takes out again if Kafka does not take the batch."""

    by_key: dict[str, list[str]] = field(default_factory=dict)


class Deduplicator:
    """Claims event ids in one script call; a claim is released if the batch does not reach Kafka."""

    def __init__(self, client: redis.asyncio.Redis, window_seconds: int) -> None:
        self._redis = client
        self._window = window_seconds
        self._claim = client.register_script(_CLAIM)

    async def claim(self, tenant_id: str, events: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], Claims]:
        """(events seen for the first time, the claims made for them). Raises redis.RedisError when Redis is down."""
        prefix = dedupe_bucket_key(tenant_id, "")
        ids = [e["event_id"] for e in events]
        fresh: list[dict[str, Any]] = []
        claims = Claims()
        seen_in_batch: set[str] = set()
        for start in range(0, len(ids), _MAX_IDS_A_CALL):
            chunk = ids[start : start + _MAX_IDS_A_CALL]
            bucket, *new = await self._claim(keys=[prefix], args=[self._window, *chunk])
            claimed = claims.by_key.setdefault(prefix + str(bucket), [])
            for event, event_id, ok in zip(events[start : start + len(chunk)], chunk, new, strict=True):
                # A batch can carry the same id twice; only the first is new.
                if ok and event_id not in seen_in_batch:
                    fresh.append(event)
                    claimed.append(event_id)
                    seen_in_batch.add(event_id)
        return fresh, claims

    async def release(self, claims: Claims) -> None:
        """Forget claims whose events were not acknowledged by Kafka, so the SDK's retry is accepted."""
        for key, ids in claims.by_key.items():
            if ids:
                await self._redis.execute_command("SREM", key, *ids)
