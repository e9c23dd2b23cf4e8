"""Tenants and their keys: a public write key for the collector, a secret read key for the query API.

Keys are generated with `secrets`, shown once and stored only as SHA-256 hashes in SQLite
(settings.tenants_db). The collector and the API resolve keys through KeyCache, never a query per request.
"""

from __future__ import annotations

from tenants.cache import KeyCache
from tenants.models import (
    CreatedTenant,
    DuplicateTenantError,
    RotatedKeys,
    Tenant,
    TenantError,
    TenantSettings,
    UnknownTenantError,
    hash_key,
)
from tenants.store import TenantStore, create_tenant_with_keys

__all__ = [
    "CreatedTenant",
    "DuplicateTenantError",
    "KeyCache",
    "RotatedKeys",
    "Tenant",
    "TenantError",
    "TenantSettings",
    "TenantStore",
    "UnknownTenantError",
    "create_tenant_with_keys",
    "hash_key",
]
