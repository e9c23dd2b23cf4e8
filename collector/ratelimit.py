"""Token buckets in Redis: per tenant (over → 429) and per user (over → flagged as a bot, still kept)."""

from __future__ import annotations

from dataclasses import dataclass

import redis
import redis.asyncio

from collector.keys import tenant_bucket_key, user_buckets_key

# Token buckets kept as GCRA (the "virtual scheduling" form of a token bucket): one number a bucket,
# the time at which it would be full again (TAT, ms). A request of `cost` tokens is allowed when
# max(TAT, now) + cost * interval - now <= tolerance (interval = 1000 / rate, tolerance = burst *
# interval), exactly when a bucket of `burst` tokens refilled at `rate` has `cost` tokens; the wait of
# a refused one is the same too.
#
# KEYS[1] the tenant bucket (a string), KEYS[2] the prefix of the users' hashes. ARGV: now (ms), tenant
# rate/s, tenant cost (0: skip the tenant, for the later calls of a split batch), user rate/s, user
# burst, then the n user names, then their n costs. Returns {tenant allowed 0/1, ms until allowed,
# user 1 allowed 0/1, …}; users are not charged when the tenant is refused (the SDK sends it again).
#
# Users' TATs go into one hash per period of `tolerance` ms (a minute for per-minute limits): a TAT
# written two periods ago is in the past, so reading the current and the previous hash gives every
# TAT that still matters, in two variadic HMGETs and one HSET a batch. A key per user with HMGET,
# HSET and PEXPIRE each cost Redis ~6 µs a user (bench/bench_collector.py). All keys, the ones built
# from the KEYS[2] prefix too, carry the tenant's hash tag, so they live in one Redis Cluster slot.
_TOKEN_BUCKETS = """
local now = tonumber(ARGV[1])
local function take(tat, interval, tolerance, cost)
  if tat == nil or tat < now then tat = now end
  local new = tat + cost * interval
  if new - now > tolerance then return nil, math.ceil(new - now - tolerance) end
  return new, 0
end
local out = {1, 0}
local tenant_cost = tonumber(ARGV[3])
if tenant_cost > 0 then
  local interval = 1000 / tonumber(ARGV[2])
  local new, wait = take(tonumber(redis.call('GET', KEYS[1])), interval, 1000, tenant_cost)
  if new == nil then return {0, wait} end
  redis.call('SET', KEYS[1], new, 'PX', math.ceil(new - now) + 1000)
end
local n = (#ARGV - 5) / 2
if n == 0 then return out end
local interval = 1000 / tonumber(ARGV[4])
local tolerance = tonumber(ARGV[5]) * interval
local period = math.ceil(tolerance)
local number = math.floor(now / period)
local prefix = KEYS[2] .. period .. ':'
local names = {unpack(ARGV, 6, 5 + n)}
local before = redis.call('HMGET', prefix .. (number - 1), unpack(names))
local latest = redis.call('HMGET', prefix .. number, unpack(names))
local writes = {}
for i = 1, n do
  local tat = math.max(tonumber(before[i]) or 0, tonumber(latest[i]) or 0)
  local new = take(tat, interval, tolerance, tonumber(ARGV[5 + n + i]))
  if new == nil then
    out[i + 2] = 0
  else
    out[i + 2] = 1
    writes[#writes + 1] = names[i]
    writes[#writes + 1] = new
  end
end
if #writes > 0 then
  redis.call('HSET', prefix .. number, unpack(writes))
  redis.call('PEXPIRE', prefix .. number, (number + 2) * period - now + 1000)
end
return out
"""
# Users a script call at most: Lua's unpack stops at 8,000 values, and a call unpacks 2 per user.
_MAX_USERS_A_CALL = 2000


@dataclass(frozen=True)
class TenantVerdict:
    allowed: bool
    retry_after_s: int


class RateLimiter:
    """Both buckets for one batch in one script call (one per 2,000 users), through a redis.asyncio client."""

    def __init__(self, client: redis.asyncio.Redis) -> None:
        self._redis = client
        self._script = client.register_script(_TOKEN_BUCKETS)

    async def check(
        self,
        tenant_id: str,
        users: dict[str, int],
        now_ms: int,
        tenant_rate: float,
        user_per_minute: float,
    ) -> tuple[TenantVerdict, set[str]]:
        """(tenant verdict for len(batch) events, users over their human rate). Raises redis.RedisError."""
        keys = [tenant_bucket_key(tenant_id), user_buckets_key(tenant_id, "")]
        names = list(users)
        tenant_cost = sum(users.values())
        bots: set[str] = set()
        for start in range(0, max(len(names), 1), _MAX_USERS_A_CALL):
            chunk = names[start : start + _MAX_USERS_A_CALL]
            # A burst of one second of traffic for the tenant, one minute for a user.
            args = [now_ms, tenant_rate, tenant_cost if start == 0 else 0, user_per_minute / 60.0, user_per_minute]
            result = await self._script(keys=keys, args=[*args, *chunk, *(users[u] for u in chunk)])
            if not result[0]:
                return TenantVerdict(False, max(1, -(-int(result[1]) // 1000))), set()
            bots.update(user for user, ok in zip(chunk, result[2:], strict=True) if not ok)
        return TenantVerdict(True, 0), bots
