"""Unmodified Mixpanel, Amplitude and Snowplow SDKs → collector → tracking.events, read back decoded.

Each SDK is pointed at a real collector (its own tenants: one with the default limits, one whose burst is 3
events) and must see its events arrive exactly once, with their type, user, time, properties and page; a resend
of the same events kept once; a wrong key make it give up as its documentation says; and the rate limit (413
for a batch above the burst, 429 over the rate) make it split, back off and send again, without a loss.
"""

from __future__ import annotations

import base64
import logging
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import orjson
import pytest
from amplitude import Amplitude, BaseEvent, Config, EventOptions, Identify
from mixpanel import BufferedConsumer, Consumer, Mixpanel, MixpanelException
from snowplow_tracker import Emitter, PageView, SelfDescribing, SelfDescribingJson, StructuredEvent, Subject, Tracker

from analytics_core.settings import Settings
from collector.app import create_app
from tenants import TenantStore, create_tenant_with_keys
from tests.integration.helpers import forget_redis_keys, read_events
from tests.servers import serve

pytestmark = pytest.mark.integration

TAG = uuid.uuid4().hex[:8]
BURST = 3
DE_IP = "84.128.1.7"


@dataclass(frozen=True)
class Collector:
    url: str
    settings: Settings
    key: str  # a tenant with the default limits
    tiny_key: str  # a tenant whose events_per_second_limit (its burst) is BURST

    @property
    def host(self) -> str:
        return self.url.removeprefix("http://")


@pytest.fixture(scope="module")
def collector(kafka_settings: Settings, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Collector]:
    settings = kafka_settings.model_copy(
        update={
            "tenants_db": tmp_path_factory.mktemp("protocols") / "tenants.sqlite",
            "redis_key_prefix": f"test:{TAG}:",
        }
    )
    store = TenantStore(settings.tenants_db)
    key, tiny_key = f"wk_proto_{TAG}", f"wk_ptiny_{TAG}"
    create_tenant_with_keys(store, f"proto_{TAG}", key, f"rk_proto_{TAG}")
    create_tenant_with_keys(store, f"ptiny_{TAG}", tiny_key, f"rk_ptiny_{TAG}", events_per_second_limit=BURST)
    try:
        with serve(create_app(settings)) as url:
            yield Collector(url, settings, key, tiny_key)
    finally:
        forget_redis_keys(settings, TAG)


def marker() -> str:
    return uuid.uuid4().hex


def of_run(run: str) -> Callable[[dict[str, Any]], bool]:
    return lambda e: run in e["properties"]


def rejected(c: Collector, status: int) -> float:
    text = httpx.get(f"{c.url}/metrics", timeout=10).text
    line = f'collector_requests_rejected_total{{status="{status}"}}'
    return sum(float(row.rsplit(" ", 1)[1]) for row in text.splitlines() if row.startswith(line))


def wait_for(condition: Callable[[], bool], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def near_now(micros: int) -> bool:
    return abs(micros - time.time_ns() // 1000) < 10_000_000


# --- Mixpanel -------------------------------------------------------------------------------------------------


def mixpanel_consumer(c: Collector, buffered: bool = False) -> Consumer | BufferedConsumer:
    urls = {"events_url": f"{c.url}/track", "people_url": f"{c.url}/engage", "import_url": f"{c.url}/import"}
    return BufferedConsumer(**urls, retry_limit=0) if buffered else Consumer(**urls, retry_limit=0)


class Recording(Consumer):
    """The SDK's Consumer, keeping what it sent, to send it again as a retry would."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.sent: list[tuple[str, str, Any]] = []

    def send(self, endpoint: str, json_message: str, api_key: Any = None, api_secret: Any = None) -> None:
        super().send(endpoint, json_message, api_key, api_secret)
        self.sent.append((endpoint, json_message, (api_key, api_secret)))


def test_mixpanel_sdk_track_import_engage_exactly_once(collector: Collector) -> None:
    run = marker()
    consumer = Recording(events_url=f"{collector.url}/track", people_url=f"{collector.url}/engage/",
                         import_url=f"{collector.url}/import", retry_limit=0)  # fmt: skip
    mp = Mixpanel(collector.key, consumer=consumer)
    mp.track("user-7", "Signed Up", {"run": run, "plan": "pro", "ip": DE_IP,
             "$current_url": "https://shop.example/signup?x=1"})  # fmt: skip
    mp.track("user-7", "$mp_web_page_view", {"run": run, "current_page_title": "Cart", "current_url_path": "/cart"})
    past = int(time.time()) - 3 * 86_400
    # /import authenticated with the write key as the project secret (Basic auth), as the SDK sends it.
    mp.import_data(None, "user-8", "Order Completed", past, {"run": run, "revenue": 30, "currency": "EUR"},
                   api_secret=collector.key)  # fmt: skip
    mp.people_set("user-7", {"plan": "pro", "run": run})
    for endpoint, message, keys in consumer.sent:  # the same requests again: a retry
        Consumer.send(consumer, endpoint, message, *keys)

    events = sorted(read_events(collector.settings, of_run(run), 4), key=lambda e: e["event_type"])
    assert [e["event_type"] for e in events] == ["Order Completed", "Signed Up", "identify", "page_view"]
    order, signed_up, identify, page = events
    assert (signed_up["user_id"], signed_up["country"], signed_up["page"]) == ("user-7", "DE", "/signup")
    assert near_now(signed_up["timestamp"]) and signed_up["library"].startswith("mixpanel-python/")
    assert '"plan":"pro"' in signed_up["properties"] and collector.key not in signed_up["properties"]
    assert (page["page"], page["user_id"]) == ("/cart", "user-7")
    assert (order["user_id"], order["timestamp"], order["revenue"]) == ("user-8", past * 1_000_000, 30.0)
    assert identify["user_id"] == "user-7" and '"traits":{' in identify["properties"]


def test_mixpanel_sdk_gives_up_on_a_wrong_key(collector: Collector) -> None:
    with pytest.raises(MixpanelException, match="unknown write key"):
        Mixpanel("wk_wrong", consumer=mixpanel_consumer(collector)).track("u", "e", {})
    with pytest.raises(MixpanelException, match="unknown write key"):
        Mixpanel("t", consumer=mixpanel_consumer(collector)).import_data(None, "u", "e", 1, api_secret="wk_wrong")


def test_mixpanel_sdk_keeps_a_throttled_batch_and_sends_it_again(collector: Collector) -> None:
    run = marker()
    consumer = mixpanel_consumer(collector, buffered=True)
    mp = Mixpanel(collector.tiny_key, consumer=consumer)
    for n in range(BURST):
        mp.track(f"u{n}", "e", {"run": run})
    consumer.flush()
    for n in range(BURST):
        mp.track(f"v{n}", "e", {"run": run})
    # Over the tenant's rate: a 429, which the SDK raises; BufferedConsumer keeps the batch for the next flush.
    with pytest.raises(MixpanelException, match="over its rate limit"):
        consumer.flush()
    time.sleep(1.1)  # Retry-After
    consumer.flush()
    assert len(read_events(collector.settings, of_run(run), 2 * BURST)) == 2 * BURST


# --- Amplitude ------------------------------------------------------------------------------------------------


class Outcomes:
    """The codes the SDK's callback reported, per insert_id."""

    def __init__(self) -> None:
        self.codes: dict[str, list[int]] = {}
        self.lock = threading.Lock()

    def __call__(self, event: BaseEvent, code: int, message: str | None = None) -> None:
        with self.lock:
            self.codes.setdefault(str(event.insert_id), []).append(code)

    def done(self, count: int) -> bool:
        with self.lock:
            return len(self.codes) >= count


def flush(client: Amplitude) -> None:
    """Send what the client holds and wait for the answers (flush gives a future per destination, or None)."""
    for future in client.flush():
        if future is not None:
            future.result()


def amplitude_client(c: Collector, key: str, path: str, outcomes: Outcomes, **config: Any) -> Amplitude:
    settings = {"flush_interval_millis": 100, "flush_queue_size": 50, **config}
    return Amplitude(key, Config(server_url=f"{c.url}{path}", callback=outcomes, **settings))


@pytest.mark.parametrize("path", ["/2/httpapi", "/batch"])
def test_amplitude_sdk_events_exactly_once(collector: Collector, path: str) -> None:
    run, outcomes = marker(), Outcomes()
    client = amplitude_client(collector, collector.key, path, outcomes)
    order = BaseEvent("Order Completed", user_id="user-7", device_id="dev-7", ip=DE_IP, price=12.5,
                      quantity=2, currency="EUR", insert_id=f"{run}-1",
                      event_properties={"run": run, "order_id": "o-1"})  # fmt: skip
    viewed = BaseEvent("[Amplitude] Page Viewed", device_id="dev-7", insert_id=f"{run}-2", platform="Web",
                       event_properties={"run": run, "[Amplitude] Page Path": "/cart"})  # fmt: skip
    client.track(order)
    client.track(viewed)
    client.identify(Identify().set("plan", "pro").set("run", run), EventOptions(user_id="user-7", insert_id=f"{run}-3"))
    flush(client)
    wait_for(lambda: outcomes.done(3))
    # The same events again (same insert_id), as the SDK resends after a timeout or a 5xx.
    for event in (order, viewed):
        client.track(BaseEvent(**{k: v for k, v in event.get_event_body().items() if k != "library"}))
    flush(client)
    client.shutdown()
    assert [outcomes.codes[f"{run}-{n}"] for n in (1, 2, 3)] == [[200, 200], [200, 200], [200]]
    events = sorted(read_events(collector.settings, of_run(run), 3), key=lambda e: e["event_type"])
    assert [e["event_type"] for e in events] == ["Order Completed", "identify", "page_view"]
    purchase, identify, page = events
    assert (purchase["user_id"], purchase["anonymous_id"], purchase["revenue"], purchase["currency"]) == (
        "user-7", "dev-7", 25.0, "EUR",
    )  # fmt: skip
    assert purchase["country"] == "DE" and near_now(purchase["timestamp"])
    assert purchase["library"] == "amplitude-python/1.3.0" and purchase["event_id"] == f"{run}-1"
    assert (page["anonymous_id"], page["page"]) == ("dev-7", "/cart")
    assert identify["user_id"] == "user-7" and '"plan":"pro"' in identify["properties"]


def test_amplitude_sdk_drops_events_of_a_wrong_key(collector: Collector, caplog: pytest.LogCaptureFixture) -> None:
    outcomes, before = Outcomes(), rejected(collector, 401)
    client = amplitude_client(collector, "wk_wrong", "/2/httpapi", outcomes)
    with caplog.at_level(logging.ERROR, logger="amplitude"):
        client.track(BaseEvent("e", user_id="user-1"))
        flush(client)
        time.sleep(0.5)  # a retry, if any, would come within this
    client.shutdown()
    # amplitude-analytics: a 400 whose error starts "Invalid API key:" raises InvalidAPIKeyError, logged, and the
    # events are dropped, not retried (ResponseProcessor.process_response).
    assert "Invalid API Key" in caplog.text
    assert rejected(collector, 401) == before + 1
    assert not outcomes.codes


def test_amplitude_sdk_splits_a_batch_over_the_burst_and_resends_when_throttled(collector: Collector) -> None:
    run, outcomes = marker(), Outcomes()
    client = amplitude_client(collector, collector.tiny_key, "/2/httpapi", outcomes, flush_queue_size=2 * BURST)
    too_large, throttled = rejected(collector, 413), rejected(collector, 429)
    for n in range(2 * BURST):
        client.track(BaseEvent("e", user_id=f"u{n}", event_properties={"run": run}))
    client.flush()
    # 413: the SDK halves its batch; the second half, right after the first, is over the rate: 429, resent later.
    wait_for(lambda: outcomes.done(2 * BURST))
    client.shutdown()
    assert all(codes == [200] for codes in outcomes.codes.values()), outcomes.codes
    assert rejected(collector, 413) > too_large and rejected(collector, 429) > throttled
    assert len(read_events(collector.settings, of_run(run), 2 * BURST)) == 2 * BURST


# --- Snowplow -------------------------------------------------------------------------------------------------


class Sent:
    """The emitter's callbacks: the events it delivered and those it failed to."""

    def __init__(self) -> None:
        self.ok: list[dict[str, Any]] = []
        self.failed: list[dict[str, Any]] = []

    def success(self, events: list[dict[str, Any]]) -> None:
        self.ok.extend(events)

    def failure(self, count: int, events: list[dict[str, Any]]) -> None:
        self.failed.extend(events)


def snowplow_tracker(c: Collector, key: str, method: str, sent: Sent, batch_size: int = 10) -> tuple[Tracker, Emitter]:
    emitter = Emitter(c.host, protocol="http", method=method, batch_size=batch_size,  # type: ignore[arg-type]
                      on_success=sent.success, on_failure=sent.failure)  # fmt: skip
    tracker = Tracker("sp", emitter, subject=Subject().set_user_id("user-7").set_ip_address(DE_IP), app_id=key)
    return tracker, emitter


@pytest.mark.parametrize("method", ["post", "get"])
def test_snowplow_tracker_events_exactly_once(collector: Collector, method: str) -> None:
    run, sent = marker(), Sent()
    tracker, emitter = snowplow_tracker(collector, collector.key, method, sent)
    tracker.track(PageView(page_url=f"https://shop.example/cart?run={run}", page_title="Cart"))
    tracker.track(StructuredEvent(category="shop", action="add-to-basket", label=run, value=2))
    checkout = SelfDescribingJson("iglu:com.acme/checkout/jsonschema/1-0-0", {"run": run, "step": 2})
    tracker.track(SelfDescribing(checkout, true_timestamp=time.time() * 1000 - 60_000))
    with pytest.warns(DeprecationWarning):  # the tracker's one way to send tr / ti events, deprecated for others
        tracker.track_ecommerce_transaction(f"order-{run}", 30.5, currency="EUR",
                                            items=[{"sku": "sku-1", "price": 10, "quantity": 3}])  # fmt: skip
    tracker.flush()
    assert len(sent.ok) == 5 and not sent.failed
    emitter.send_events([dict(e) for e in sent.ok])  # the same events again, as the emitter's retry sends them
    events = sorted(read_events(collector.settings, of_run(run), 5), key=lambda e: e["event_type"])
    assert [e["event_type"] for e in events] == [
        "Order Completed", "Order Item", "checkout", "page_view", "shop/add-to-basket",
    ]  # fmt: skip
    order, item, checkout_event, page, structured = events
    assert all(e["user_id"] == "user-7" and e["country"] == "DE" for e in events)
    assert all(e["library"] == "snowplow-py/1.1.0" for e in events)
    assert (page["page"], near_now(page["timestamp"])) == ("/cart", True)
    assert (order["revenue"], order["currency"]) == (30.5, "EUR")
    assert '"sku":"sku-1"' in item["properties"] and '"value":2' in structured["properties"]
    assert abs(checkout_event["timestamp"] - (time.time_ns() // 1000 - 60_000_000)) < 10_000_000  # ttm, as sent
    assert collector.key not in page["properties"]  # the app id was the write key


def test_snowplow_tracker_gives_up_on_a_wrong_key(collector: Collector) -> None:
    sent = Sent()
    tracker, emitter = snowplow_tracker(collector, "wk_wrong", "post", sent)
    tracker.track(PageView(page_url="https://shop.example/"))
    tracker.flush()
    # 401 is one of the codes the emitter does not retry: the events go to on_failure and leave its buffer.
    assert len(sent.failed) == 1 and not sent.ok
    assert emitter.event_store.size() == 0 and not emitter.retry_timer.is_active()


def test_snowplow_tracker_retries_when_throttled(collector: Collector) -> None:
    run, sent = marker(), Sent()
    tracker, _ = snowplow_tracker(collector, collector.tiny_key, "post", sent, batch_size=BURST)
    throttled = rejected(collector, 429)
    for n in range(2 * BURST):  # two batches of the burst's size, back to back: the second is over the rate
        tracker.track(StructuredEvent(category="c", action=f"a{n}", label=run))
    wait_for(lambda: len(sent.ok) == 2 * BURST)
    assert rejected(collector, 429) > throttled and sent.failed
    assert len(read_events(collector.settings, of_run(run), 2 * BURST)) == 2 * BURST


# --- the answers on the wire, for what the SDKs above do not send -----------------------------------------------


def test_wire_encodings_and_answers(collector: Collector) -> None:
    run, url, auth = marker(), collector.url, (collector.key, "")
    event = {"event": "e", "properties": {"token": collector.key, "distinct_id": "u", "run": run}}
    encoded = base64.b64encode(orjson.dumps([{**event, "properties": {**event["properties"], "n": 1}}])).decode()
    # mixpanel-js: base64 data, in the query string of a GET or in a form body; the short answer unless verbose=1.
    answer = httpx.get(f"{url}/track/", params={"data": encoded, "verbose": "1", "ip": "1"})
    assert (answer.status_code, answer.json()) == (200, {"status": 1, "error": None})
    form = {"data": base64.b64encode(orjson.dumps({**event, "properties": {**event["properties"], "n": 2}})).decode()}
    answer = httpx.post(f"{url}/track", data=form)
    assert (answer.status_code, answer.text) == (200, "1")
    # /import?strict=1 names the events it dead-lettered; the others are kept.
    bad = {"event": "e", "properties": {"$insert_id": f"{run}-bad", "run": run}}
    answer = httpx.post(f"{url}/import?strict=1", json=[{**event, "properties": {**event["properties"], "n": 3}}, bad],
                        auth=auth)  # fmt: skip
    assert answer.status_code == 400
    failed = {"index": 1, "insert_id": f"{run}-bad", "field": "properties.distinct_id",
              "message": "properties.distinct_id: one of them is required"}  # fmt: skip
    assert (answer.json()["num_records_imported"], answer.json()["failed_records"]) == (1, [failed])
    # Snowplow's pixel answers a GIF; an unknown app id is a 401 saying so.
    answer = httpx.get(f"{url}/i", params={"e": "pv", "aid": collector.key, "duid": "d", "url": f"https://s/?{run}"})
    assert (answer.status_code, answer.headers["content-type"], answer.content[:6]) == (200, "image/gif", b"GIF89a")
    body = {"schema": "iglu:com.snowplowanalytics.snowplow/payload_data/jsonschema/1-0-4", "data": [{"aid": "x"}]}
    answer = httpx.post(f"{url}/com.snowplowanalytics.snowplow/tp2", json=body)
    assert answer.status_code == 401 and "unknown write key" in answer.text
    # /batch with `batch` and without `events` is PostHog's, answered at /batch/ as before.
    posthog = {"api_key": collector.key, "batch": [{"event": "e", "distinct_id": "u", "properties": {"run": run}}]}
    answer = httpx.post(f"{url}/batch?x=1", json=posthog)
    assert (answer.status_code, answer.headers["location"]) == (307, "/batch/?x=1")
    assert httpx.post(f"{url}/batch", json=posthog, follow_redirects=True).json()["status"] == 1
    assert len(read_events(collector.settings, of_run(run), 5)) == 5
