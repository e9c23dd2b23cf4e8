"""Dedupe window and token buckets against the real Redis, through the redis.asyncio client the app uses."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable
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

    (fresh, claims), (fresh2, claims2), (other_tenant, claims3) = run(stack_settings, body)
    assert [e["event_id"] for e in fresh] == ["a", "b"]
    assert [e["event_id"] for e in fresh2] == ["c"]
    assert 0 < redis_conn.ttl(claims[0]) <= 60
    assert len(other_tenant) == 1, "the window is per tenant"
    redis_conn.delete(*claims, *claims2, *claims3)


def test_released_claims_are_accepted_again(stack_settings: Settings, redis_conn: redis.Redis) -> None:
    tenant = f"t-{uuid.uuid4().hex[:8]}"

    async def body(client: Any) -> tuple:
        dedupe = Deduplicator(client, window_seconds=60)
        _, claims = await dedupe.claim(tenant, events("x", "y"))
        await dedupe.release(claims)
        return await dedupe.claim(tenant, events("x", "y"))

    fresh, claims = run(stack_settings, body)
    assert len(fresh) == 2
    redis_conn.delete(*claims)


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
