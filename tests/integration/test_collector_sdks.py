"""Unmodified SDKs (Segment, RudderStack with gzip, PostHog) → collector → tracking.events, read back decoded."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from posthog import Posthog
from rudderstack.analytics.client import Client as RudderClient
from segment.analytics.client import Client as SegmentClient

from analytics_core.events import to_micros
from tests.integration.conftest import RunningCollector
from tests.integration.helpers import read_events

pytestmark = pytest.mark.integration

GOOGLEBOT = "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)"
IPHONE = (
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X) AppleWebKit/605.1.15 "
    "(KHTML, like Gecko) Version/17.0 Mobile/15E148 Safari/604.1"
)
# From the generator's table of blocks that geolocate to a country (generator/geo.py).
DE_IP, JP_IP = "84.128.1.7", "126.0.3.9"


def marker() -> str:
    return uuid.uuid4().hex


def of_run(run: str) -> Any:
    return lambda e: f'"run":"{run}"' in e["properties"] or f'"run": "{run}"' in e["properties"]


@pytest.mark.parametrize("sdk", ["segment", "rudderstack"])
def test_segment_protocol_sdks(collector: RunningCollector, sdk: str) -> None:
    run = marker()
    cls = SegmentClient if sdk == "segment" else RudderClient
    # Rudder gzips by default; sync_mode sends each call at once and raises nothing on errors, so check below.
    client = cls(collector.write_keys["tenant_1"], host=collector.url, sync_mode=True, max_retries=1)
    skewed = datetime.now(UTC) - timedelta(minutes=3)
    client.track("user-7", "purchase", {"revenue": 19.5, "currency": "EUR", "run": run},
                 context={"ip": DE_IP, "userAgent": IPHONE}, timestamp=skewed)  # fmt: skip
    client.page("user-7", name="Home", properties={"path": "/home", "run": run}, context={"ip": JP_IP})
    client.track(anonymous_id="anon-bot", event="page_view", properties={"run": run},
                 context={"ip": DE_IP, "userAgent": GOOGLEBOT})  # fmt: skip
    client.flush()

    events = sorted(read_events(collector.settings, of_run(run), 3), key=lambda e: e["event_type"])
    assert [e["event_type"] for e in events] == ["page_view", "page_view", "purchase"]
    assert {e["tenant_id"] for e in events} == {"tenant_1"}
    page, bot, purchase = sorted(events, key=lambda e: (e["event_type"], e["is_bot"]))
    assert (purchase["country"], purchase["device"], purchase["revenue"], purchase["currency"]) == (
        "DE", "mobile", 19.5, "EUR",
    )  # fmt: skip
    assert purchase["user_id"] == "user-7" and not purchase["is_bot"]
    assert abs(purchase["timestamp"] - to_micros(skewed)) < 5_000_000
    assert page["country"] == "JP" and page["page"] == "/home"
    assert bot["is_bot"] and bot["anonymous_id"] == "anon-bot"
    assert purchase["library"] and purchase["library"].split("/")[0] in ("analytics-python", "analytics-python-rudder")


def test_clock_skew_is_corrected(collector: RunningCollector) -> None:
    """A device whose clock is 2 h fast: timestamp = receivedAt - (sentAt - timestamp)."""
    import httpx

    run = marker()
    device_now = datetime.now(UTC) + timedelta(hours=2)
    message = {"type": "track", "event": "checkout", "userId": "u-skew", "messageId": run,
               "timestamp": (device_now - timedelta(seconds=30)).isoformat(), "properties": {"run": run}}  # fmt: skip
    body = {"batch": [message], "sentAt": device_now.isoformat(), "writeKey": collector.write_keys["tenant_2"]}
    assert httpx.post(f"{collector.url}/v1/batch", json=body).status_code == 200
    (event,) = read_events(collector.settings, of_run(run), 1)
    assert event["tenant_id"] == "tenant_2"
    expected = to_micros(datetime.now(UTC) - timedelta(seconds=30))
    assert abs(event["timestamp"] - expected) < 5_000_000
    assert event["original_timestamp"] == to_micros(device_now - timedelta(seconds=30))


def test_posthog_sdk(collector: RunningCollector) -> None:
    run = marker()
    client = Posthog(collector.write_keys["tenant_2"], host=collector.url, sync_mode=True, max_retries=1)
    client.capture(
        "add_to_cart", distinct_id="ph-user", properties={"run": run, "$ip": DE_IP, "price": 5, "product_id": "sku-1"}
    )
    client.capture("$pageview", distinct_id="ph-user", properties={"run": run, "$ip": JP_IP})
    client.flush()
    events = sorted(read_events(collector.settings, of_run(run), 2), key=lambda e: e["event_type"])
    assert [(e["event_type"], e["country"], e["tenant_id"]) for e in events] == [
        ("add_to_cart", "DE", "tenant_2"),
        ("page_view", "JP", "tenant_2"),
    ]
    assert all(e["user_id"] == "ph-user" for e in events)
    assert all(e["library"] and e["library"].startswith("posthog-python") for e in events)
