"""Token buckets in Redis: per tenant (over → 429) and per user (over → flagged as a bot, still kept)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import redis
import redis.asyncio

from collector.keys import tenant_bucket_key, user_bucket_key

# One call for the whole batch: KEYS[1] the tenant bucket, KEYS[2..] the users' buckets.
# ARGV: now (ms), tenant rate/s, tenant cost, user rate/s, user burst, then each user's cost.
# Returns {tenant allowed 0/1, ms until the tenant has the tokens, user 1 allowed 0/1, …}.
# Runs in Redis so concurrent collector workers share the buckets without races; all keys carry
# the tenant's hash tag, so they live in one Redis Cluster slot.
_TOKEN_BUCKETS = """
local now = tonumber(ARGV[1])
local function take(key, rate, burst, cost)
  local state = redis.call('HMGET', key, 't', 'ts')
  local tokens, ts = tonumber(state[1]) or burst, tonumber(state[2]) or now
  tokens = math.min(burst, tokens + math.max(0, now - ts) * rate / 1000)
  local allowed, wait = 0, 0
  if tokens >= cost then
    tokens = tokens - cost
    allowed = 1
  else
    wait = math.ceil((cost - tokens) * 1000 / rate)
  end
  redis.call('HSET', key, 't', tokens, 'ts', now)
  redis.call('PEXPIRE', key, math.ceil(burst * 1000 / rate) + 1000)
  return allowed, wait
end
local tenant_rate, tenant_cost = tonumber(ARGV[2]), tonumber(ARGV[3])
local allowed, wait = take(KEYS[1], tenant_rate, tenant_rate, tenant_cost)
local out = {allowed, wait}
local user_rate, user_burst = tonumber(ARGV[4]), tonumber(ARGV[5])
for i = 2, #KEYS do
  local ok = take(KEYS[i], user_rate, user_burst, tonumber(ARGV[4 + i]))
  out[#out + 1] = ok
end
return out
"""


@dataclass(frozen=True)
class TenantVerdict:
    allowed: bool
    retry_after_s: int


class RateLimiter:
    """Both buckets for one batch in a single round trip, through a redis.asyncio client."""

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
        names, keys, args = _call(tenant_id, users, now_ms, tenant_rate, user_per_minute)
        return _verdict(names, await self._script(keys=keys, args=args))


def _call(
    tenant_id: str, users: dict[str, int], now_ms: int, tenant_rate: float, user_per_minute: float
) -> tuple[list[str], list[str], list[Any]]:
    names = list(users)
    keys = [tenant_bucket_key(tenant_id)] + [user_bucket_key(tenant_id, u) for u in names]
    # A burst of one second of traffic for the tenant, one minute for a user.
    args = [now_ms, tenant_rate, sum(users.values()), user_per_minute / 60.0, user_per_minute]
    return names, keys, args + [users[u] for u in names]


def _verdict(names: list[str], result: Any) -> tuple[TenantVerdict, set[str]]:
    verdict = TenantVerdict(bool(result[0]), max(1, -(-int(result[1]) // 1000)))
    return verdict, {user for user, ok in zip(names, result[2:], strict=True) if not ok}
