"""A real collector on a loopback port, with its own tenants database, over the session's Kafka topics."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import uvicorn

from analytics_core.settings import Settings
from collector.app import create_app
from tenants import TenantStore, create_tenant_with_keys


@dataclass(frozen=True)
class RunningCollector:
    url: str
    settings: Settings
    write_keys: dict[str, str]  # tenant id → write key


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="session")
def collector(kafka_settings: Settings, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningCollector]:
    """Collector app served by uvicorn in a thread; tenants tenant_1 and tenant_2 exist."""
    db: Path = tmp_path_factory.mktemp("collector") / "tenants.sqlite"
    settings = kafka_settings.model_copy(update={"tenants_db": db})
    store = TenantStore(db)
    keys = {"tenant_1": "wk_test_tenant_one", "tenant_2": "wk_test_tenant_two"}
    for tenant, key in keys.items():
        create_tenant_with_keys(store, tenant, key, f"rk_{key}")
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(create_app(settings), host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("collector did not start within 30 s")
        time.sleep(0.05)
    assert httpx.get(f"{url}/healthz").status_code == 200
    yield RunningCollector(url, settings, keys)
    server.should_exit = True
    thread.join(timeout=10)
