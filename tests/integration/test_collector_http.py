"""The collector's HTTP answers, dedupe, metrics and the accepted + dead-lettered + rejected = sent rule."""

from __future__ import annotations

import gzip
import json
import uuid
from datetime import UTC, datetime

import httpx
import pytest

from tenants import TenantStore, create_tenant_with_keys
from tests.integration.conftest import RunningCollector
from tests.integration.helpers import read_dead_letters, read_events

pytestmark = pytest.mark.integration


def track(run: str, **extra: object) -> dict:
    return {"type": "track", "event": "page_view", "userId": "u-1", "messageId": uuid.uuid4().hex,
            "timestamp": datetime.now(UTC).isoformat(), "properties": {"run": run}, **extra}  # fmt: skip


def post(c: RunningCollector, body: object, key: str | None = "tenant_1", path: str = "/v1/batch", **kw: object):
    auth = (c.write_keys[key], "") if key else None
    return httpx.post(f"{c.url}{path}", json=body, auth=auth, timeout=30, **kw)  # type: ignore[arg-type]


def metric(c: RunningCollector, name: str) -> float:
    text = httpx.get(f"{c.url}/metrics").text
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(name))


def test_success_answer_is_exactly_what_the_sdks_expect(collector: RunningCollector) -> None:
    r = post(collector, {"batch": [track(uuid.uuid4().hex)]})
    assert r.status_code == 200
    assert r.json() == {"code": 200, "status": 1, "error": None, "results": {}}


def test_unknown_or_missing_key_is_401(collector: RunningCollector) -> None:
    body = {"batch": [track("x")]}
    assert httpx.post(f"{collector.url}/v1/batch", json=body, auth=("wk_nope_nope", "")).status_code == 401
    assert httpx.post(f"{collector.url}/v1/batch", json=body).status_code == 401
    assert post(collector, body | {"writeKey": collector.write_keys["tenant_2"]}, key=None).status_code == 200


def test_tenant_comes_from_the_key_never_from_the_body(collector: RunningCollector) -> None:
    run = uuid.uuid4().hex
    r = post(collector, {"batch": [track(run, tenant_id="tenant_2", context={"tenant_id": "tenant_2"})]})
    assert r.status_code == 200
    (event,) = read_events(collector.settings, lambda e: run in e["properties"], 1)
    assert event["tenant_id"] == "tenant_1"


@pytest.mark.parametrize(
    ("content", "headers", "status"),
    [
        (b"{not json", {}, 400),
        (b'{"batch": "nope"}', {}, 400),
        (b"\xff\xfe", {}, 400),
        (b"x" * (600 * 1024), {}, 413),
        (gzip.compress(b" " * (2 * 1024 * 1024)), {"Content-Encoding": "gzip"}, 413),
        (b"plain", {"Content-Encoding": "gzip"}, 400),
    ],
)
def test_bad_bodies(collector: RunningCollector, content: bytes, headers: dict, status: int) -> None:
    r = httpx.post(f"{collector.url}/v1/batch", content=content, auth=(collector.write_keys["tenant_1"], ""),
                   headers={"Content-Type": "application/json", **headers})  # fmt: skip
    assert r.status_code == status
    assert r.json()["error"]


def test_resent_message_ids_are_counted_once(collector: RunningCollector) -> None:
    run = uuid.uuid4().hex
    message = track(run)
    before = metric(collector, "collector_events_duplicate_total")
    for _ in range(3):  # an SDK retrying after a lost answer
        assert post(collector, {"batch": [message]}).status_code == 200
    assert post(collector, {"batch": [message, message]}).status_code == 200
    assert len(read_events(collector.settings, lambda e: run in e["properties"], 1)) == 1
    assert metric(collector, "collector_events_duplicate_total") - before == 4


def test_gzip_and_single_message_endpoints(collector: RunningCollector) -> None:
    run = uuid.uuid4().hex
    body = gzip.compress(json.dumps({"batch": [track(run)]}).encode())
    r = httpx.post(f"{collector.url}/v1/batch", content=body, auth=(collector.write_keys["tenant_1"], ""),
                   headers={"Content-Encoding": "gzip", "Content-Type": "application/json"})  # fmt: skip
    assert r.status_code == 200
    identify = {"userId": "u-9", "traits": {"plan": "pro", "run": run}, "messageId": uuid.uuid4().hex}
    assert post(collector, identify, path="/v1/identify").status_code == 200
    events = read_events(collector.settings, lambda e: run in e["properties"] or e["user_id"] == "u-9", 2)
    assert {e["message_type"] for e in events} >= {"track", "identify"}


def test_counts_add_up_accepted_dead_lettered_rejected(collector: RunningCollector) -> None:
    run = uuid.uuid4().hex
    good = [track(run) for _ in range(7)]
    bad = [
        {"type": "track", "userId": "u", "properties": {"run": run}, "messageId": uuid.uuid4().hex},  # no event
        track(run, event="purchase", properties={"run": run, "revenue": -3, "currency": "USD"}),
        track(run, timestamp="2999-01-01T00:00:00Z"),
        "not an object",
    ]
    assert post(collector, {"batch": good + bad}).status_code == 200
    rejected_request = {"batch": [track(run) for _ in range(5)]}
    assert post(collector, rejected_request, key=None).status_code == 401  # whole batch refused, SDK told
    sent = len(good) + len(bad) + len(rejected_request["batch"])
    accepted = read_events(collector.settings, lambda e: run in e["properties"], len(good))
    dead = read_dead_letters(collector.settings, lambda d: run in json.dumps(d.payload), len(bad) - 1)
    dead += read_dead_letters(collector.settings, lambda d: d.payload == "not an object", 1)
    assert {d.reason for d in dead} == {"schema_violation", "enrichment_failure", "format"}
    assert len(accepted) + len(dead) + len(rejected_request["batch"]) == sent


def test_tenant_over_its_rate_gets_429_with_retry_after(collector: RunningCollector) -> None:
    store = TenantStore(collector.settings.tenants_db)
    tenant = f"slow_{uuid.uuid4().hex[:6]}"
    create_tenant_with_keys(store, tenant, f"wk_{tenant}", f"rk_{tenant}", events_per_second_limit=5)
    import time

    time.sleep(5.5)  # the collector's key cache refreshes every 5 s
    body = {"batch": [track("r") for _ in range(5)]}
    first = httpx.post(f"{collector.url}/v1/batch", json=body, auth=(f"wk_{tenant}", ""))
    second = httpx.post(f"{collector.url}/v1/batch", json=body, auth=(f"wk_{tenant}", ""))
    assert first.status_code == 200
    assert second.status_code == 429
    assert int(second.headers["Retry-After"]) >= 1


def test_operational_endpoints(collector: RunningCollector) -> None:
    assert httpx.get(f"{collector.url}/healthz").json() == {"status": "ok"}
    assert httpx.get(f"{collector.url}/readyz").status_code == 200
    text = httpx.get(f"{collector.url}/metrics").text
    for name in ("collector_events_accepted_total", "collector_kafka_ack_seconds_bucket",
                 "collector_requests_rejected_total"):  # fmt: skip
        assert name in text
    assert "/v1/batch" in httpx.get(f"{collector.url}/openapi.json").text
