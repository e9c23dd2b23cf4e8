"""Redis key builders of the collector; the tenant sits in a hash tag so keys are Redis Cluster-ready."""

from __future__ import annotations


def dedupe_key(tenant_id: str, event_id: str) -> str:
    return f"dd:{{{tenant_id}}}:{event_id}"


def tenant_bucket_key(tenant_id: str) -> str:
    return f"rl:{{{tenant_id}}}:tenant"


def user_bucket_key(tenant_id: str, user: str) -> str:
    return f"rl:{{{tenant_id}}}:user:{user}"
