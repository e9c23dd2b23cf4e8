"""Token buckets in Redis: per tenant (over → 429) and per user (over → flagged as a bot, still kept)."""

from __future__ import annotations

from dataclasses import dataclass

import redis

from collector.keys import tenant_bucket_key, user_bucket_key

# KEYS[1] bucket; ARGV rate/s, burst, now (ms), cost. Returns {allowed 0/1, ms until `cost` tokens}.
# Runs in Redis so concurrent collector workers share one bucket without races.
_TOKEN_BUCKET = """
local rate, burst, now, cost = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
local state = redis.call('HMGET', KEYS[1], 't', 'ts')
local tokens, ts = tonumber(state[1]) or burst, tonumber(state[2]) or now
tokens = math.min(burst, tokens + math.max(0, now - ts) * rate / 1000)
local allowed, wait = 0, 0
if tokens >= cost then
  tokens = tokens - cost
  allowed = 1
else
  wait = math.ceil((cost - tokens) * 1000 / rate)
end
redis.call('HSET', KEYS[1], 't', tokens, 'ts', now)
redis.call('PEXPIRE', KEYS[1], math.ceil(burst * 1000 / rate) + 1000)
return {allowed, wait}
"""


@dataclass(frozen=True)
class TenantVerdict:
    allowed: bool
    retry_after_s: int


class RateLimiter:
    """Both buckets for one batch in a single round trip."""

    def __init__(self, client: redis.Redis) -> None:
        self._redis = client
        self._script = client.register_script(_TOKEN_BUCKET)

    def check(
        self,
        tenant_id: str,
        users: dict[str, int],
        now_ms: int,
        tenant_rate: float,
        user_per_minute: float,
    ) -> tuple[TenantVerdict, set[str]]:
        """(tenant verdict for len(batch) events, users over their human rate). Raises redis.RedisError."""
        total = sum(users.values())
        with self._redis.pipeline(transaction=False) as pipe:
            # A burst of one second of traffic for the tenant, one minute for a user.
            self._script(keys=[tenant_bucket_key(tenant_id)], args=[tenant_rate, tenant_rate, now_ms, total],
                         client=pipe)  # fmt: skip
            user_rate = user_per_minute / 60.0
            for user, count in users.items():
                self._script(keys=[user_bucket_key(tenant_id, user)],
                             args=[user_rate, user_per_minute, now_ms, count], client=pipe)  # fmt: skip
            results = pipe.execute()
        allowed, wait_ms = results[0]
        verdict = TenantVerdict(bool(allowed), max(1, -(-int(wait_ms) // 1000)))
        bots = {user for user, (ok, _) in zip(users, results[1:], strict=True) if not ok}
        return verdict, bots
