"""A real collector on a loopback port, with its own tenants database, over the session's Kafka topics."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from analytics_core.settings import Settings
from collector.app import create_app
from tenants import TenantStore, create_tenant_with_keys
from tests.servers import serve


@dataclass(frozen=True)
class RunningCollector:
    url: str
    settings: Settings
    write_keys: dict[str, str]  # tenant id → write key


@pytest.fixture(scope="session")
def collector(kafka_settings: Settings, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningCollector]:
    """Collector app served by uvicorn in a thread; tenants tenant_1 and tenant_2 exist."""
    db: Path = tmp_path_factory.mktemp("collector") / "tenants.sqlite"
    settings = kafka_settings.model_copy(update={"tenants_db": db})
    store = TenantStore(db)
    keys = {"tenant_1": "wk_test_tenant_one", "tenant_2": "wk_test_tenant_two"}
    for tenant, key in keys.items():
        create_tenant_with_keys(store, tenant, key, f"rk_{key}")
    with serve(create_app(settings)) as url:
        assert httpx.get(f"{url}/healthz").status_code == 200
        yield RunningCollector(url, settings, keys)
