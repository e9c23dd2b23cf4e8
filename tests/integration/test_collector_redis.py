"""Dedupe window and token buckets against the real Redis."""

from __future__ import annotations

import uuid

import pytest
import redis

from collector.dedupe import Deduplicator
from collector.ratelimit import RateLimiter

pytestmark = pytest.mark.integration


def events(*ids: str) -> list[dict]:
    return [{"event_id": i} for i in ids]


def test_dedupe_drops_resends_within_the_window_and_inside_one_batch(redis_conn: redis.Redis) -> None:
    tenant = f"t-{uuid.uuid4().hex[:8]}"
    dedupe = Deduplicator(redis_conn, window_seconds=60)
    fresh, claims = dedupe.claim(tenant, events("a", "b", "a"))
    assert [e["event_id"] for e in fresh] == ["a", "b"]
    fresh2, _ = dedupe.claim(tenant, events("b", "c"))
    assert [e["event_id"] for e in fresh2] == ["c"]
    assert 0 < redis_conn.ttl(claims[0]) <= 60
    other_tenant, _ = dedupe.claim(tenant + "-other", events("a"))
    assert len(other_tenant) == 1, "the window is per tenant"
    redis_conn.delete(*claims)


def test_released_claims_are_accepted_again(redis_conn: redis.Redis) -> None:
    tenant = f"t-{uuid.uuid4().hex[:8]}"
    dedupe = Deduplicator(redis_conn, window_seconds=60)
    _, claims = dedupe.claim(tenant, events("x", "y"))
    dedupe.release(claims)
    fresh, claims = dedupe.claim(tenant, events("x", "y"))
    assert len(fresh) == 2
    redis_conn.delete(*claims)


def test_tenant_bucket_refuses_over_its_rate_and_refills(redis_conn: redis.Redis) -> None:
    limiter = RateLimiter(redis_conn)
    tenant = f"t-{uuid.uuid4().hex[:8]}"
    now = 1_000_000
    ok, _ = limiter.check(tenant, {"u1": 60}, now, tenant_rate=100, user_per_minute=1000)
    assert ok.allowed
    over, _ = limiter.check(tenant, {"u1": 60}, now + 10, tenant_rate=100, user_per_minute=1000)
    assert not over.allowed and over.retry_after_s >= 1
    refilled, _ = limiter.check(tenant, {"u1": 60}, now + 1000, tenant_rate=100, user_per_minute=1000)
    assert refilled.allowed


def test_a_user_above_the_human_rate_is_flagged_not_refused(redis_conn: redis.Redis) -> None:
    limiter = RateLimiter(redis_conn)
    tenant = f"t-{uuid.uuid4().hex[:8]}"
    flagged: set[str] = set()
    for second in range(10):
        verdict, bots = limiter.check(
            tenant, {"human": 1, "crawler": 50}, 5_000_000 + second * 1000, tenant_rate=10_000, user_per_minute=120
        )
        assert verdict.allowed
        flagged |= bots
    assert flagged == {"crawler"}
