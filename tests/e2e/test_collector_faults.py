"""Faults on a stack of its own: Kafka stopped mid-traffic (503, nothing lost), Redis stopped (ingest goes on)."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest

from analytics_core.settings import Settings, get_settings
from analytics_core.topics import ensure_topics
from collector.app import create_app
from stack import kafka, manager, procs, redis_server
from tenants import TenantStore, create_tenant_with_keys
from tests.integration.helpers import read_events
from tests.servers import free_port, serve

pytestmark = [pytest.mark.integration, pytest.mark.slow]
KEY = "wk_fault_tenant"


@pytest.fixture(scope="module")
def own_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Settings, str]]:
    """A separate Kafka and Redis this module may stop, and a collector in front of them."""
    root: Path = tmp_path_factory.mktemp("faults")
    settings = get_settings().model_copy(update={
        "kafka_bootstrap": f"127.0.0.1:{free_port()}", "kafka_controller_port": free_port(),
        "redis_url": f"redis://127.0.0.1:{free_port()}/0", "state_dir": root / "state",
        "tenants_db": root / "tenants.sqlite", "collector_kafka_timeout_s": 2.0, "collector_retry_after_s": 1,
        "stack_kafka": True, "stack_redis": True, "topic_prefix": "",
    })  # fmt: skip
    manager.up(settings)
    create_tenant_with_keys(TenantStore(settings.tenants_db), "fault_tenant", KEY, "rk_fault_tenant")
    try:
        with serve(create_app(settings)) as url:
            yield settings, url
    finally:
        manager.down(settings)


def batch(run: str, n: int = 10) -> dict:
    now = datetime.now(UTC).isoformat()
    return {"batch": [{"type": "track", "event": "page_view", "userId": f"u{i}", "messageId": uuid.uuid4().hex,
                       "timestamp": now, "properties": {"run": run}} for i in range(n)]}  # fmt: skip


def send(url: str, body: dict) -> httpx.Response:
    return httpx.post(f"{url}/v1/batch", json=body, auth=(KEY, ""), timeout=30)


def stop(pid_path: Path) -> None:
    pid = procs.running_pid(pid_path)
    assert pid is not None
    procs.stop(pid, grace=30)


def test_kafka_stopped_answers_503_and_loses_nothing_accepted(own_stack: tuple[Settings, str]) -> None:
    settings, url = own_stack
    run = uuid.uuid4().hex
    accepted, refused = [], []
    for _ in range(5):
        body = batch(run)
        assert send(url, body).status_code == 200
        accepted.append(body)
    stop(kafka.pid_path(settings))
    for _ in range(3):
        body = batch(run)
        r = send(url, body)
        assert r.status_code == 503
        assert int(r.headers["Retry-After"]) >= 1
        refused.append(body)
    assert httpx.get(f"{url}/readyz", timeout=30).status_code == 503
    manager.up(settings)  # Kafka back (Redis was never down)
    ensure_topics(settings)
    for body in refused:  # what an SDK does with a 503: send the same batch again
        deadline = time.monotonic() + 60
        while (status := send(url, body).status_code) != 200 and time.monotonic() < deadline:
            time.sleep(1)
        assert status == 200
    sent_ids = {m["messageId"] for body in accepted + refused for m in body["batch"]}
    events = read_events(settings, lambda e: run in e["properties"], len(sent_ids), timeout=60)
    assert {e["event_id"] for e in events} == sent_ids
    assert len(events) == len(sent_ids), "a retried batch must not be counted twice"


def test_redis_stopped_ingestion_continues(own_stack: tuple[Settings, str]) -> None:
    settings, url = own_stack
    run = uuid.uuid4().hex
    stop(redis_server.pid_path(settings))
    try:
        bodies = [batch(run) for _ in range(3)]
        for body in bodies:
            assert send(url, body).status_code == 200
        events = read_events(settings, lambda e: run in e["properties"], 30, timeout=30)
        assert len(events) == 30
        metrics = httpx.get(f"{url}/metrics").text
        assert any(line.startswith("collector_redis_unavailable_total") and not line.endswith(" 0.0")
                   for line in metrics.splitlines())  # fmt: skip
    finally:
        manager.up(settings)
