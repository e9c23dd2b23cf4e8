"""Drops SDK retries: an event id seen within the window is a duplicate (SET NX with a TTL in Redis)."""

from __future__ import annotations

from typing import Any

import redis
import redis.asyncio

from collector.keys import dedupe_key

# SET NX EX for every key of a batch in one command: 100 separate SETs cost more in redis-py's
# command packing than the rest of the request. Keys share the tenant hash tag, so one slot.
_CLAIM = """
local claimed = {}
for i, key in ipairs(KEYS) do
  claimed[i] = redis.call('SET', key, 1, 'NX', 'EX', ARGV[1]) and 1 or 0
end
return claimed
"""


class Deduplicator:
    """Claims event ids in one script call; a claim is released if the batch does not reach Kafka."""

    def __init__(self, client: redis.asyncio.Redis, window_seconds: int) -> None:
        self._redis = client
        self._window = window_seconds
        self._claim = client.register_script(_CLAIM)

    async def claim(self, tenant_id: str, events: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], list[str]]:
        """(events seen for the first time, keys claimed for them). Raises redis.RedisError when Redis is down."""
        prefix = dedupe_key(tenant_id, "")  # the keys are prefix + event id: no call per event
        keys = [prefix + e["event_id"] for e in events]
        return _fresh(events, keys, await self._claim(keys=keys, args=[self._window]))

    async def release(self, keys: list[str]) -> None:
        """Forget claims whose events were not acknowledged by Kafka, so the SDK's retry is accepted."""
        if keys:
            await self._redis.delete(*keys)


def _fresh(events: list[dict[str, Any]], keys: list[str], claimed: Any) -> tuple[list[dict[str, Any]], list[str]]:
    fresh, fresh_keys, seen_in_batch = [], [], set()
    for event, key, ok in zip(events, keys, claimed, strict=True):
        # A batch can carry the same id twice; only the first is new.
        if ok and key not in seen_in_batch:
            fresh.append(event)
            fresh_keys.append(key)
            seen_in_batch.add(key)
    return fresh, fresh_keys
