"""Redis key builders of the collector; the tenant sits in a hash tag so keys are Redis Cluster-ready."""

from __future__ import annotations


def dedupe_bucket_key(tenant_id: str, bucket: str) -> str:
    """The set of a tenant's event ids claimed in one dedupe bucket (collector/dedupe.py)."""
    return f"dd:{{{tenant_id}}}:{bucket}"


def tenant_bucket_key(tenant_id: str) -> str:
    """The tenant's token bucket as a GCRA time (a string; the hash that `rl:{t}:tenant` was is not reused)."""
    return f"rl:{{{tenant_id}}}:tenant:tat"


def user_buckets_key(tenant_id: str, period: str) -> str:
    """The hash of the tenant's users' token buckets written in one period (collector/ratelimit.py)."""
    return f"rl:{{{tenant_id}}}:users:{period}"
