"""The real Redis of the stack: reachable, pipelines, TTLs and HyperLogLogs behave as the design needs."""

from __future__ import annotations

import pytest
import redis

pytestmark = pytest.mark.integration


def test_ping_and_server_version(redis_conn: redis.Redis) -> None:
    assert redis_conn.ping() is True
    major = int(str(redis_conn.info("server")["redis_version"]).split(".")[0])
    assert major >= 7


def test_pipeline_transaction_with_ttl(redis_conn: redis.Redis, redis_prefix: str) -> None:
    key = f"{redis_prefix}{{tenant_1}}:events:m:202401011400"
    with redis_conn.pipeline(transaction=True) as pipe:
        pipe.incrby(key, 3).incrby(key, 4).expire(key, 120)
        assert pipe.execute() == [3, 7, True]
    assert 0 < redis_conn.ttl(key) <= 120


def test_hyperloglog_counts_within_two_percent(redis_conn: redis.Redis, redis_prefix: str) -> None:
    a, b = f"{redis_prefix}hll:a", f"{redis_prefix}hll:b"
    redis_conn.pfadd(a, *[f"user-{i}" for i in range(0, 60_000)])
    redis_conn.pfadd(b, *[f"user-{i}" for i in range(40_000, 100_000)])
    merged = redis_conn.pfcount(a, b)
    assert abs(merged - 100_000) / 100_000 < 0.02
