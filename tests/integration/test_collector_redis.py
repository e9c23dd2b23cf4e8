"""Dedupe window and token buckets against the real Redis, through the redis.asyncio client the app uses."""

from __future__ import annotations

import asyncio
import random
import uuid
from collections.abc import Awaitable, Callable
from fractions import Fraction
from typing import Any, TypeVar

import pytest
import redis

from analytics_core.clients import redis_async_client
from analytics_core.settings import Settings
from collector.dedupe import Deduplicator
from collector.ratelimit import RateLimiter
from collector.redisconn import HiredisPackedConnection, connection_class

pytestmark = pytest.mark.integration
T = TypeVar("T")


def run(settings: Settings, body: Callable[[Any], Awaitable[T]]) -> T:
    """Run `body(client)` on a fresh event loop with its own redis.asyncio client, built as the app's is."""

    async def main() -> T:
        client = redis_async_client(settings, connection_class=connection_class())
        try:
            return await body(client)
        finally:
            await client.aclose()

    return asyncio.run(main())


def events(*ids: str) -> list[dict]:
    return [{"event_id": i} for i in ids]


def test_dedupe_drops_resends_within_the_window_and_inside_one_batch(
    stack_settings: Settings, redis_conn: redis.Redis
) -> None:
    tenant = f"t-{uuid.uuid4().hex[:8]}"

    async def body(client: Any) -> tuple:
        dedupe = Deduplicator(client, window_seconds=60)
        first = await dedupe.claim(tenant, events("a", "b", "a"))
        second = await dedupe.claim(tenant, events("b", "c"))
        other = await dedupe.claim(tenant + "-other", events("a"))
        return first, second, other

    (fresh, claims), (fresh2, _), (other_tenant, claims3) = run(stack_settings, body)
    assert [e["event_id"] for e in fresh] == ["a", "b"]
    assert [e["event_id"] for e in fresh2] == ["c"]
    assert len(other_tenant) == 1, "the window is per tenant"
    [(key, ids)] = claims.by_key.items()
    assert ids == ["a", "b"] and redis_conn.smembers(key) >= {b"a", b"b"}
    # The bucket of a 60 s window is read until two windows after it began (+60 s of slack).
    assert 120 < redis_conn.ttl(key) <= 180
    redis_conn.delete(*claims.by_key, *claims3.by_key)


def _redis_seconds(redis_conn: redis.Redis) -> float:
    seconds, micros = redis_conn.time()
    return seconds + micros / 1e6


def test_a_resend_is_caught_for_at_least_one_window_and_forgotten_after_two(
    stack_settings: Settings, redis_conn: redis.Redis
) -> None:
    tenant = f"t-{uuid.uuid4().hex[:8]}"
    window = 2

    async def body(client: Any) -> list[int]:
        dedupe = Deduplicator(client, window_seconds=window)
        # Claim late in a bucket (the worst case for "at least one window"), by Redis' clock.
        now = _redis_seconds(redis_conn)
        await asyncio.sleep((window - now % window) + window - 0.3)
        claimed_at = _redis_seconds(redis_conn)
        fresh, claims = await dedupe.claim(tenant, events("x"))
        results = [len(fresh)]
        await asyncio.sleep(claimed_at + window - 0.2 - _redis_seconds(redis_conn))  # just under a window later
        results.append(len((await dedupe.claim(tenant, events("x")))[0]))
        # Two windows after the bucket of the claim began, the id is no longer known.
        [key] = claims.by_key
        bucket_start = int(key.rsplit(":", 1)[1]) * window
        await asyncio.sleep(bucket_start + 2 * window + 0.1 - _redis_seconds(redis_conn))
        results.append(len((await dedupe.claim(tenant, events("x")))[0]))
        return results

    assert run(stack_settings, body) == [1, 0, 1]
    redis_conn.delete(*redis_conn.keys(f"dd:{{{tenant}}}:*"))


def test_released_claims_are_accepted_again(stack_settings: Settings, redis_conn: redis.Redis) -> None:
    tenant = f"t-{uuid.uuid4().hex[:8]}"

    async def body(client: Any) -> tuple:
        dedupe = Deduplicator(client, window_seconds=60)
        _, claims = await dedupe.claim(tenant, events("x", "y"))
        _, kept = await dedupe.claim(tenant, events("z"))
        await dedupe.release(claims)
        return await dedupe.claim(tenant, events("x", "y", "z")), kept

    (fresh, claims), kept = run(stack_settings, body)
    assert [e["event_id"] for e in fresh] == ["x", "y"], "z's claim was not released"
    redis_conn.delete(*claims.by_key, *kept.by_key)


def test_a_batch_larger_than_one_script_call_is_claimed_whole(
    stack_settings: Settings, redis_conn: redis.Redis
) -> None:
    tenant = f"t-{uuid.uuid4().hex[:8]}"
    ids = [f"id-{i}" for i in range(9_000)]

    async def body(client: Any) -> tuple:
        dedupe = Deduplicator(client, window_seconds=60)
        first = await dedupe.claim(tenant, events(*ids, "id-1"))  # the repeat lands in a later call
        return first, await dedupe.claim(tenant, events("id-8999", "new"))

    (fresh, claims), (fresh2, claims2) = run(stack_settings, body)
    assert [e["event_id"] for e in fresh] == ids
    assert [e["event_id"] for e in fresh2] == ["new"]
    redis_conn.delete(*claims.by_key, *claims2.by_key)


def test_tenant_bucket_refuses_over_its_rate_and_refills(stack_settings: Settings) -> None:
    tenant = f"t-{uuid.uuid4().hex[:8]}"

    async def body(client: Any) -> list:
        limiter = RateLimiter(client)
        return [
            (await limiter.check(tenant, {"u1": 60}, now, tenant_rate=100, user_per_minute=1000))[0]
            for now in (1_000_000, 1_000_010, 1_001_000)
        ]

    ok, over, refilled = run(stack_settings, body)
    assert ok.allowed
    assert not over.allowed and over.retry_after_s >= 1
    assert refilled.allowed


def test_a_user_above_the_human_rate_is_flagged_not_refused(stack_settings: Settings) -> None:
    tenant = f"t-{uuid.uuid4().hex[:8]}"

    async def body(client: Any) -> list:
        limiter = RateLimiter(client)
        users = {"human": 1, "crawler": 50}
        return [
            await limiter.check(tenant, users, 5_000_000 + second * 1000, tenant_rate=10_000, user_per_minute=120)
            for second in range(10)
        ]

    results = run(stack_settings, body)
    assert all(verdict.allowed for verdict, _ in results)
    assert set().union(*(bots for _, bots in results)) == {"crawler"}


def test_hiredis_packing_matches_redis_py(stack_settings: Settings) -> None:
    import redis.asyncio

    args = ("EVALSHA", "abc", 2, "dd:{t}:é", b"raw", 1_000_000, 16.666666666666668, 0.1, "SCRIPT LOAD")
    python = redis.asyncio.Connection().pack_command(*args)
    assert b"".join(HiredisPackedConnection().pack_command(*args)) == b"".join(python)
    assert b"".join(HiredisPackedConnection().pack_command("CONFIG GET", "x")) == b"".join(
        redis.asyncio.Connection().pack_command("CONFIG GET", "x")
    )


class ReferenceBucket:
    """A textbook token bucket in exact fractions: `burst` tokens, refilled at `rate` a second."""

    def __init__(self, rate: int, burst: int) -> None:
        self.rate, self.burst = Fraction(rate), Fraction(burst)
        self.tokens, self.last = Fraction(burst), None

    def take(self, now_ms: int, cost: int) -> bool:
        if self.last is not None:
            self.tokens = min(self.burst, self.tokens + (now_ms - self.last) * self.rate / 1000)
        self.last = now_ms
        if self.tokens >= cost:
            self.tokens -= cost
            return True
        return False


def test_user_buckets_agree_with_a_reference_token_bucket_across_periods(stack_settings: Settings) -> None:
    """Random traffic of a few users over several of the minute-long hashes; verdicts equal a token bucket's."""
    tenant = f"t-{uuid.uuid4().hex[:8]}"
    per_minute = 120  # 2 a second, a burst of 120: integer milliseconds keep both sides exact
    rng = random.Random(7)
    start = 60_000 * 30_000_000 - 5_000  # five seconds before a period boundary
    calls, now = [], start
    for _ in range(400):
        now += rng.choice([0, 1, 250, 499, 500, 1_000, 7_000])
        calls.append((now, {u: rng.randint(1, 12) for u in rng.sample(["a", "b", "c", "d"], rng.randint(1, 4))}))
    assert now - start > 3 * 60_000, "the calls span several periods"

    async def body(client: Any) -> list[set[str]]:
        limiter = RateLimiter(client)
        return [
            (await limiter.check(tenant, users, at, tenant_rate=1_000_000, user_per_minute=per_minute))[1]
            for at, users in calls
        ]

    flagged = run(stack_settings, body)
    buckets = {u: ReferenceBucket(per_minute // 60, per_minute) for u in "abcd"}
    expected = [{u for u, cost in users.items() if not buckets[u].take(at, cost)} for at, users in calls]
    assert flagged == expected
    assert 20 < sum(map(len, expected)) < 400, "some calls, not all, are over the rate"


def test_a_refused_tenant_does_not_charge_its_users(stack_settings: Settings) -> None:
    tenant = f"t-{uuid.uuid4().hex[:8]}"

    async def body(client: Any) -> list:
        limiter = RateLimiter(client)
        # 100 events/s for the tenant; the user may send 10 a minute.
        first = await limiter.check(tenant, {"u": 10}, 1_000_000, tenant_rate=100, user_per_minute=10)
        over = await limiter.check(tenant, {"u": 95}, 1_000_001, tenant_rate=100, user_per_minute=10)
        again = await limiter.check(tenant, {"u": 1}, 1_007_000, tenant_rate=100, user_per_minute=10)
        return [first, over, again]

    (ok, bots), (refused, _), (_, bots_after) = run(stack_settings, body)
    assert ok.allowed and not bots
    assert not refused.allowed
    # The refused batch took none of u's tokens: 6 s after the first call u has refilled one.
    assert bots_after == set()


def test_a_batch_of_more_users_than_one_script_call_is_limited_whole(stack_settings: Settings) -> None:
    tenant = f"t-{uuid.uuid4().hex[:8]}"
    users = {f"user-{i}": 1 for i in range(4_500)}
    users["user-4321"] = 50  # over a 30-a-minute burst

    async def body(client: Any) -> list:
        limiter = RateLimiter(client)
        first = await limiter.check(tenant, users, 2_000_000, tenant_rate=5_000, user_per_minute=30)
        # The tenant was charged once (4,549 of its 5,000): 452 more are refused at the same instant.
        second = await limiter.check(tenant, {"x": 452}, 2_000_000, tenant_rate=5_000, user_per_minute=1_000)
        return [first, second]

    (verdict, bots), (second, _) = run(stack_settings, body)
    assert verdict.allowed and bots == {"user-4321"}
    assert not second.allowed
