"""Queries per read key: a token bucket in Redis, so every worker (and every API host) shares one count.

A key may ask `queries` queries in any `window_s` seconds, refilled evenly (GCRA, the "virtual
scheduling" form of a token bucket: one number a key, the time its bucket is full again). Redis's own
clock (TIME) is the only clock, so workers with skewed clocks agree. A Redis failure lets the query
through (and Redis is not asked again for a few seconds): the limit protects the warehouse, and the
warehouse still answers when Redis is down.
"""

from __future__ import annotations

import hashlib
import logging
import math
import time
from dataclasses import dataclass

import redis
import redis.asyncio

log = logging.getLogger("api.ratelimit")
RETRY_REDIS_AFTER_S = 5.0

# KEYS[1] the key's bucket (a string: its theoretical arrival time, ms); ARGV[1] ms a query costs,
# ARGV[2] the burst in ms (the window). Returns {1, 0} when allowed, {0, ms until it would be}.
_BUCKET = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local cost, burst = tonumber(ARGV[1]), tonumber(ARGV[2])
local tat = tonumber(redis.call('GET', KEYS[1]))
if tat == nil or tat < now then tat = now end
local new = tat + cost
if new - now > burst then return {0, math.ceil(new - now - burst)} end
redis.call('SET', KEYS[1], new, 'PX', math.ceil(new - now) + 1000)
return {1, 0}
"""


@dataclass(frozen=True)
class Verdict:
    allowed: bool
    retry_after_s: int = 0


class QueryRateLimiter:
    def __init__(self, client: redis.asyncio.Redis, prefix: str, queries: int, window_s: float) -> None:
        self._redis = client
        self._script = client.register_script(_BUCKET)
        self._prefix = prefix
        self._cost_ms = window_s * 1000 / queries if queries else 0.0
        self._burst_ms = window_s * 1000
        self._skip_until = 0.0  # monotonic; Redis is not asked before then after an error
        self.enabled = queries > 0

    def key(self, tenant_id: str, read_key: str) -> str:
        # The read key itself is never written to Redis, only a hash of it; the tenant in a hash tag.
        digest = hashlib.sha256(read_key.encode()).hexdigest()[:24]
        return f"{self._prefix}api:{{{tenant_id}}}:rl:{digest}"

    async def check(self, tenant_id: str, read_key: str) -> Verdict:
        """Whether this key may ask one more query now; allowed when Redis cannot tell."""
        if not self.enabled or time.monotonic() < self._skip_until:
            return Verdict(True)
        try:
            allowed, wait_ms = await self._script(
                keys=[self.key(tenant_id, read_key)], args=[self._cost_ms, self._burst_ms]
            )
        except (redis.RedisError, OSError) as exc:
            self._skip_until = time.monotonic() + RETRY_REDIS_AFTER_S
            log.warning("query rate limit not checked (Redis): %s", exc)
            return Verdict(True)
        if allowed:
            return Verdict(True)
        return Verdict(False, max(1, math.ceil(int(wait_ms) / 1000)))
